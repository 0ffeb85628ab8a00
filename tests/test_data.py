"""Karpathy-format loading and validation (cookie_lib.data) on the committed tiny fixtures."""
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from cookie_lib import data as D

from conftest import COCO, EMOJI, FLICKR


# ---------------------------------------------------------------- format quirks
def test_coco_filepath_filename_and_restval():
    c = D.load_karpathy(COCO)
    assert c.name == "coco" and c.image_root == COCO.parent
    r0 = c.records[0]
    assert r0.path == COCO.parent / "train2014" / "COCO_train2014_000000000100.png" and r0.path.is_file()
    assert all(r.path.is_file() and r.path.is_absolute() for r in c.records)
    assert {r.split for r in c.split("train")} == {"train", "restval"}
    assert len(c.split("train")) == 4 and len(c.split("restval")) == 2 and len(c.split("test")) == 3
    assert all(r.key == str(r.imgid) and r.group is None and r.subgroup is None for r in c.records)
    assert all(set(r.caption_kinds) == {"caption"} for r in c.records)


def test_coco_more_than_five_captions_truncated():
    raw = json.loads(COCO.read_text())
    long = [img for img in raw["images"] if len(img["sentences"]) > 5]
    assert len(long) == 1 and len(long[0]["sentences"]) == 7
    rec = {r.imgid: r for r in D.load_karpathy(COCO).records}[long[0]["imgid"]]
    assert rec.captions == tuple(s["raw"] for s in long[0]["sentences"][:5])
    assert len({r.imgid: r for r in D.load_karpathy(COCO, max_captions=10).records}[rec.imgid].captions) == 7
    assert D.load_karpathy(COCO).counts()["test"] == {"images": 3, "captions": 15, "keys": 3}


def test_flickr_without_filepath_uses_images_folder(tmp_path):
    c = D.load_karpathy(FLICKR)
    assert c.image_root == FLICKR.parent / "images"
    assert all(r.path == FLICKR.parent / "images" / f"{1000 + r.imgid}.png" and r.path.is_file() for r in c.records)
    # explicit image_root wins
    shutil.copytree(FLICKR.parent / "images", tmp_path / "elsewhere")
    c2 = D.load_karpathy(FLICKR, image_root=tmp_path / "elsewhere")
    assert c2.records[0].path == (tmp_path / "elsewhere" / "1000.png").resolve()


def test_unknown_split_lists_available():
    with pytest.raises(ValueError, match=r"available: \['restval', 'test', 'train', 'val'\]"):
        D.load_karpathy(COCO).split("dev")


# ---------------------------------------------------------------- emoji fixture
def test_emoji_fixture_is_valid_and_splits_are_by_concept():
    c = D.validate_karpathy(EMOJI)
    splits_of = defaultdict(set)
    captions_of = defaultdict(set)
    for r in c.records:
        splits_of[r.key].add(r.split)
        captions_of[r.key].add(r.captions)
        assert r.group and r.subgroup and len(r.captions) == 5
        with Image.open(r.path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert all(len(s) == 1 for s in splits_of.values()), "a concept straddles splits"
    assert all(len(s) == 1 for s in captions_of.values()), "images of one concept differ in captions"
    counts = c.counts()
    assert set(counts) == {"train", "val", "test"} and counts["test"]["images"] >= 20
    assert 90 <= sum(v["images"] for v in counts.values()) <= 150
    raw = json.loads(EMOJI.read_text())["images"]
    sentids = [s["sentid"] for img in raw for s in img["sentences"]]
    assert len(sentids) == len(set(sentids))
    assert all(s["templated"] == (s["kind"] == "template") for img in raw for s in img["sentences"])
    assert {img["design"] for img in raw} <= {"noto", "twemoji", "fluent"}  # no CC-BY-SA in the repo


def test_text_matching_set():
    recs = D.load_karpathy(EMOJI).records
    qt, qk, ct, ck = D.text_matching_set(recs, "cldr_label", "cldr_keywords")
    assert len(qk) == len(set(qk)) == len({r.key for r in recs}) and len(ck) == len(set(ck))
    first = {}
    for r in recs:
        first.setdefault(r.key, r)
    assert qt == [first[k].captions[first[k].caption_kinds.index("cldr_label")] for k in qk]
    assert "," in ct[0] or len(ct[0].split()) >= 1
    with pytest.raises(ValueError, match="cldr_label"):
        D.text_matching_set(D.load_karpathy(COCO).records, "cldr_label", "cldr_keywords")


def test_coco_1k_folds():
    recs = [D.ImageRecord(i, Path(f"/x/{i}.jpg"), "test", str(i), ("c",), ("caption",), None, None)
            for i in range(5000)]
    folds = D.coco_1k_folds(recs)
    assert [len(f) for f in folds] == [1000] * 5
    assert [f[0].imgid for f in folds] == [0, 1000, 2000, 3000, 4000] and folds[4][-1].imgid == 4999
    with pytest.raises(ValueError, match="4999"):
        D.coco_1k_folds(recs[:-1])


# ---------------------------------------------------------------- validation errors
@pytest.fixture
def coco_copy(tmp_path):
    dst = tmp_path / "coco"
    shutil.copytree(COCO.parent, dst)
    path = dst / "dataset_coco.json"
    return path, json.loads(path.read_text())


def write(path, data):
    path.write_text(json.dumps(data, indent=1))


def problems(path, **kw):
    with pytest.raises(D.DataValidationError) as e:
        D.validate_karpathy(path, **kw)
    return str(e.value)


def test_valid_fixtures_pass():
    for p in (COCO, FLICKR, EMOJI):
        assert D.validate_karpathy(p).records


def test_missing_image_file(coco_copy):
    path, _ = coco_copy
    (path.parent / "val2014" / "COCO_val2014_000000000104.png").unlink()
    msg = problems(path)
    assert "images[4] (imgid=4)" in msg and "missing" in msg and "COCO_val2014_000000000104.png" in msg
    assert str(path) in msg
    D.validate_karpathy(path, check_images=False)  # the check can be skipped


def test_corrupt_image(coco_copy):
    path, _ = coco_copy
    img = path.parent / "train2014" / "COCO_train2014_000000000101.png"
    img.write_bytes(img.read_bytes()[:30])  # truncated PNG
    msg = problems(path)
    assert "images[1] (imgid=1)" in msg and "does not decode" in msg


def test_malformed_json_names_line_and_column(coco_copy):
    path, _ = coco_copy
    path.write_text('{"images": [\n  {"imgid": 1,,}\n]}')
    msg = problems(path)
    assert str(path) in msg and "line 2 column" in msg


def test_empty_caption(coco_copy):
    path, data = coco_copy
    data["images"][2]["sentences"][3]["raw"] = "   "
    write(path, data)
    assert "images[2] (imgid=2): sentences[3] 'raw' must be a non-empty string" in problems(path)


def test_missing_key_and_wrong_type(coco_copy):
    path, data = coco_copy
    del data["images"][3]["filename"]
    data["images"][6]["imgid"] = "6"
    write(path, data)
    msg = problems(path)
    assert "images[3] (imgid=3): missing required key 'filename'" in msg
    assert "images[6] (imgid=6): 'imgid' must be int, got str" in msg


def test_duplicate_imgid(coco_copy):
    path, data = coco_copy
    data["images"][7]["imgid"] = 0
    write(path, data)
    assert "images[7] (imgid=0): duplicate imgid (first at images[0])" in problems(path)


def test_empty_split(coco_copy):
    path, data = coco_copy
    for img in data["images"]:
        if img["split"] == "val":
            img["split"] = "test"
    write(path, data)
    assert "split 'val' is empty" in problems(path)
    # restval alone counts as train
    for img in data["images"]:
        img["split"] = "restval" if img["split"] == "train" else img["split"]
    write(path, data)
    assert "split 'train'" not in problems(path)


def test_unknown_split_is_reported_with_the_other_problems(coco_copy, capsys):
    path, data = coco_copy
    vals = [i for i, img in enumerate(data["images"]) if img["split"] == "val"]
    for i in vals:
        data["images"][i]["split"] = "validation"  # would silently take part in nothing
    data["images"][0]["sentences"][0]["raw"] = ""
    write(path, data)
    msg = problems(path)
    # three problems: the empty caption, the unknown split, and (so) an empty 'val' split
    assert msg.startswith("3 problem(s)") and "images[0] (imgid=0): sentences[0]" in msg and "split 'val' is empty" in msg
    assert (f"unknown split 'validation' in {len(vals)} record(s) (first: images[{vals[0]}]); known splits: "
            "['train', 'val', 'test', 'restval']") in msg
    assert D.main(["validate", str(path)]) != 0  # the CLI reports it too
    assert "unknown split 'validation'" in capsys.readouterr().err


def test_all_problems_reported_at_once(coco_copy):
    path, data = coco_copy
    data["images"][0]["sentences"][0]["raw"] = ""
    data["images"][1]["imgid"] = 0
    del data["images"][2]["sentences"]
    write(path, data)
    (path.parent / "val2014" / "COCO_val2014_000000000107.png").write_bytes(b"not a png")
    msg = problems(path)
    assert msg.startswith("4 problem(s)")
    for part in ("images[0] (imgid=0): sentences[0]", "images[1] (imgid=0): duplicate",
                 "images[2] (imgid=2): missing required key 'sentences'", "images[7] (imgid=7): image does not decode"):
        assert part in msg


def test_max_errors_truncates_with_count(coco_copy):
    path, data = coco_copy
    for img in data["images"]:
        img["sentences"][0]["raw"] = ""
    write(path, data)
    msg = problems(path, max_errors=3, check_images=False)
    assert msg.startswith("8 problem(s)") and msg.count("sentences[0]") == 3 and "and 5 more problems" in msg


def test_cli(coco_copy, capsys):
    path, data = coco_copy
    assert D.main(["validate", str(path)]) == 0
    assert "restval  images=2" in capsys.readouterr().out
    data["images"][0]["sentences"][0]["raw"] = ""
    write(path, data)
    assert D.main(["validate", str(path)]) == 1
    assert "images[0] (imgid=0)" in capsys.readouterr().err
