"""Leakage between pre-training and the downstream test sets: emoji sibling groups, Open Clip Art titles on
one side of the split, pre-training captions equal to a test text removed, the build failing on a leak, and
the table in data/README.md matching the code."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cookie_lib.study.corpora import drawings as D
from cookie_lib.study.corpora import families as F
from cookie_lib.study.corpora import leakage as L
from cookie_lib.study.corpora import openclipart as O
from cookie_lib.study.corpora import pretrain as P
from cookie_lib.study.views import datareadme as R
from cookie_lib.study.corpora.common import norm_text
from cookie_lib.study.corpora.splits import assign_splits

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ emoji siblings
def test_sibling_group_rule():
    sib = F.sibling_group
    hearts = [("2764", "red heart"), ("1F9E1", "orange heart"), ("1F49B", "yellow heart"), ("1F49A", "green heart"),
              ("1FA75", "light blue heart"), ("1F5A4", "black heart")]
    assert len({sib(k, lab, "heart") for k, lab in hearts}) == 1
    assert sib("1F7E0", "orange circle", "geometric") == sib("26AB", "black circle", "geometric")
    assert sib("1F7E5", "red square", "geometric") == sib("25AA", "black small square", "geometric") \
        == sib("25FE", "black medium-small square", "geometric")
    assert sib("1F7E5", "red square", "geometric") != sib("1F7E0", "orange circle", "geometric")
    assert sib("2B06", "up arrow", "arrow") == sib("2B05", "left arrow", "arrow")
    assert sib("1F311", "new moon", "sky-weather") == sib("1F31D", "full moon face", "sky-weather") == "siblings:moon"
    assert sib("1F31E", "sun with face", "sky-weather") != "siblings:moon"  # just past the range
    assert sib("2648", "Aries", "zodiac") == sib("26CE", "Ophiuchus", "zodiac")
    assert sib("1F63A", "grinning cat", "cat-face") == sib("1F640", "weary cat", "cat-face")
    # the same stem in another subgroup, or another word left, is not a sibling
    assert sib("1F34E", "red apple", "food-fruit") != sib("1F9E7", "red envelope", "event")
    assert sib("1F6A8", "police car light", "transport-ground") != sib("1F693", "police car", "transport-ground")


def test_families_with_siblings_merge_transitively_and_deterministically():
    concepts = [{"key": "2764", "label": "red heart", "subgroup": "heart"},
                {"key": "2764-200D-1F525", "label": "heart on fire", "subgroup": "heart"},  # family 2764
                {"key": "1F9E1", "label": "orange heart", "subgroup": "heart"},
                {"key": "1F600", "label": "grinning face", "subgroup": "face-smiling"},
                {"key": "1F7E0", "label": "orange circle", "subgroup": "geometric"},
                {"key": "1F534", "label": "red circle", "subgroup": "geometric"}]
    fam = F.families_with_siblings(concepts)
    assert fam["2764"] == fam["2764-200D-1F525"] == fam["1F9E1"] == "1F9E1"  # smallest name of the merged set
    assert fam["1F7E0"] == fam["1F534"] != fam["2764"] and fam["1F600"] == "1F600"
    assert F.families_with_siblings(concepts[::-1]) == fam


def test_assign_splits_keeps_sibling_groups_together():
    concepts = [{"key": f"1F{i:03X}", "label": f"{c} thing{i % 7}", "subgroup": f"sub{i % 5}"}
                for i, c in enumerate(["red", "green", "blue"] * 60)]
    fam = F.families_with_siblings(concepts)
    splits = assign_splits({c["key"]: c["subgroup"] for c in concepts}, families=fam)
    by_sib = {}
    for c in concepts:
        by_sib.setdefault(F.sibling_group(c["key"], c["label"], c["subgroup"]), set()).add(splits[c["key"]])
    assert len(by_sib) == 35 and all(len(s) == 1 for s in by_sib.values())
    assert set(splits.values()) == {"train", "val", "test"}


# ------------------------------------------------------------------ Open Clip Art titles
def test_split_units_join_equal_titles():
    hashes = np.array([0, 2**40 - 1, 2**63 - 1, 2**62 + 2**61 + 2**60 + 2**59 + 2**58], dtype=np.uint64)
    keys = ["a", "b", "c", "d"]
    without = D.split_units(hashes, keys, max_distance=4)
    assert len(set(without)) == 4
    units = D.split_units(hashes, keys, max_distance=4, titles=["Red Apple!", "", "red  apple", "pear"])
    assert units[0] == units[2] and len(set(units)) == 3  # equal after norm_text; "" joins nothing


# ------------------------------------------------------------------ captions removed, checks that fail
def _img(split, *caps, concept="x", **extra):
    return {"split": split, "concept": concept, "filepath": "f", "filename": f"{concept}.png",
            "sentences": [{"raw": c, "kind": k} for c, k in caps], **extra}


def test_scrub_captions_removes_test_texts_and_drops_empty_images():
    images = [_img("train", ("Apple", "title"), ("fruit, food", "keywords"), concept="a"),
              _img("train", ("apple!", "title"), concept="b"),
              _img("val", ("pear", "title"), concept="c")]
    banned = {"emoji test caption": {"apple"}, "WordNet query (lemma)": {"apple", "pear tree"}}
    kept, rep = L.scrub_captions(images, banned)
    assert [i["concept"] for i in kept] == ["a", "c"] and [s["raw"] for s in kept[0]["sentences"]] == ["fruit, food"]
    assert rep["captions_removed"] == {"emoji test caption": 2, "WordNet query (lemma)": 2}
    assert rep["captions_removed_total"] == 2 and rep["images_dropped"] == 1 and images[0]["sentences"][0]["raw"] == "Apple"


def _docs():
    emoji = {"images": [_img("train", ("red heart", "cldr_label"), concept="2764", family="2764", subgroup="heart"),
                        _img("test", ("grinning face", "cldr_label"), concept="1F600", family="1F600",
                             subgroup="face-smiling")]}
    oca = {"images": [_img("train", ("An Apple", "title"), concept="oca-1"),
                      _img("test", ("a pear", "title"), concept="oca-2")]}
    wordnet = {"queries": [{"text": "sea anemone", "key": "n1"}],
               "candidates": [{"text": "marine polyps that resemble flowers", "key": "n1"}]}
    pre = {"images": [dict(_img("train", ("An Apple", "title"), ("sea anemone, ocean", "keywords"), concept="oca:oca-1"),
                           corpus="openclipart"),
                      dict(_img("train", ("red heart", "cldr_label"), concept="emoji:2764"), corpus="emoji")]}
    return pre, emoji, oca, wordnet


def test_leakage_counts_clean_and_reported():
    counts = L.leakage_counts(*_docs())
    L.check_leakage(counts)  # nothing that must be 0 is non-zero
    zero = [k for k, v in counts.items() if v["rule"] == "must be 0"]
    assert len(zero) == 10 and all(counts[k]["count"] == 0 for k in zero)
    lemma = counts["pre-training captions containing a WordNet lemma (whole words)"]
    assert lemma["rule"] == "reported" and lemma["count"] == 1 and lemma["examples"] == ["sea anemone ocean"]


@pytest.mark.parametrize("plant, check", [
    (lambda pre, e, o, w: pre["images"][0]["sentences"].append({"raw": "A pear", "kind": "keywords"}),
     "pre-training captions equal to an Open Clip Art test caption"),
    (lambda pre, e, o, w: pre["images"][1]["sentences"].append({"raw": "Grinning face", "kind": "x"}),
     "pre-training captions equal to an emoji test caption"),
    (lambda pre, e, o, w: pre["images"][0]["sentences"].append({"raw": "Sea anemone", "kind": "title"}),
     "pre-training captions equal to a WordNet query (lemma)"),
    (lambda pre, e, o, w: pre["images"][0]["sentences"].append(
        {"raw": "they are marine polyps that resemble flowers, really", "kind": "description"}),
     "pre-training captions containing a WordNet gloss"),
    (lambda pre, e, o, w: o["images"].append(_img("val", ("A  PEAR", "title"), concept="oca-3")),
     "Open Clip Art titles on both sides of the test split"),
    (lambda pre, e, o, w: e["images"].append(_img("test", ("orange heart", "cldr_label"), concept="1F9E1",
                                                   family="1F9E1", subgroup="heart")),
     "emoji sibling groups spanning two splits"),
    (lambda pre, e, o, w: e["images"].append(_img("test", ("heart on fire", "cldr_label"), concept="2764-1F525",
                                                   family="2764", subgroup="heart")),
     "emoji families spanning two splits"),
    (lambda pre, e, o, w: pre["images"].append(dict(_img("train", ("smile", "x"), concept="emoji:1F600"),
                                                    corpus="emoji")),
     "emoji test concepts in pre-training"),
])
def test_each_planted_leak_fails_the_check(plant, check):
    docs = _docs()
    plant(*docs)
    counts = L.leakage_counts(*docs)
    assert counts[check]["count"] >= 1
    with pytest.raises(ValueError, match=re.escape(check)):
        L.check_leakage(counts)


# ------------------------------------------------------------------ the build on the committed fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    shutil.copytree(ROOT / "data" / "fixture_emoji", d / "emoji")
    shutil.copytree(ROOT / "data" / "fixture_wordnet", d / "wordnet")
    O.build(d / "openclipart", deb=ROOT / "data" / "fixture_openclipart" / "openclipart-svg-fixture.deb",
            emoji_images=d / "emoji" / "images", test_frac=0.3, val_frac=0.2, progress=False)
    return d


def _load(p):
    return json.loads(Path(p).read_text(encoding="utf-8"))


def test_fixture_build_removes_planted_overlap_and_passes(data_dir, tmp_path):
    emoji = _load(data_dir / "emoji" / "dataset_emoji.json")
    oca = _load(data_dir / "openclipart" / "dataset_openclipart.json")
    test_title = next(s["raw"] for i in oca["images"] if i["split"] == "test" for s in i["sentences"]
                      if s["kind"] == "title")
    # plant an Open Clip Art test title as an extra caption of an emoji train image
    emoji2 = json.loads(json.dumps(emoji))
    train = next(i for i in emoji2["images"] if i["split"] == "train")
    train["sentences"].append(dict(train["sentences"][0], raw=test_title.upper(), sentid=10**6))
    shutil.copytree(data_dir / "emoji", tmp_path / "emoji")
    (tmp_path / "emoji" / "dataset_emoji.json").write_text(json.dumps(emoji2), encoding="utf-8")
    shutil.copytree(data_dir / "openclipart", tmp_path / "openclipart")
    res = P.build_pretrain(tmp_path / "pretrain", tmp_path / "emoji", tmp_path / "openclipart", tmp_path,
                           wordnet=data_dir / "wordnet")
    assert res["removed"]["captions_removed"]["Open Clip Art test caption"] >= 1
    doc = _load(tmp_path / "pretrain" / "dataset_pretrain.json")
    assert norm_text(test_title) not in {norm_text(s["raw"]) for i in doc["images"] for s in i["sentences"]}
    counts = L.leakage_counts(doc, emoji2, oca, _load(data_dir / "wordnet" / "wordnet_task.json"))
    assert all(v["count"] == 0 for v in counts.values() if v["rule"] == "must be 0")
    assert counts["pre-training captions removed: equal to an Open Clip Art test caption"]["count"] >= 1


def test_fixture_build_fails_on_a_family_leak(data_dir, tmp_path):
    emoji = _load(data_dir / "emoji" / "dataset_emoji.json")
    tr = next(i for i in emoji["images"] if i["split"] == "train")
    te = next(i for i in emoji["images"] if i["split"] == "test")
    for i in emoji["images"]:  # an emoji corpus whose split broke a family: every image of the test concept
        if i["concept"] == te["concept"]:
            i["family"] = tr["family"]
    shutil.copytree(data_dir / "emoji", tmp_path / "emoji")
    (tmp_path / "emoji" / "dataset_emoji.json").write_text(json.dumps(emoji), encoding="utf-8")
    shutil.copytree(data_dir / "openclipart", tmp_path / "openclipart")
    with pytest.raises(ValueError, match=r"emoji families spanning two splits: 1 .*--force"):
        P.build_pretrain(tmp_path / "pretrain", tmp_path / "emoji", tmp_path / "openclipart", tmp_path)
    assert not (tmp_path / "pretrain" / "dataset_pretrain.json").exists()


# ------------------------------------------------------------------ the table in data/README.md
def _readme_block():
    text = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    assert R.README_BEGIN in text and R.README_END in text, "data/README.md lacks the leakage table markers"
    return text.split(R.README_BEGIN, 1)[1].split(R.README_END, 1)[0].strip("\n") + "\n"


def test_readme_leakage_table_zero_where_required():
    rows = [r.split("|")[1:4] for r in _readme_block().splitlines()[2:]]
    assert len(rows) >= 12
    zero = [(c.strip(), n.strip()) for c, n, rule in rows if rule.strip() == "must be 0"]
    assert len(zero) == 10 and all(n == "0" for _, n in zero), zero


def test_readme_leakage_table_matches_the_built_corpora():
    try:
        counts = L.built_leakage(ROOT / "data")
    except FileNotFoundError as e:
        pytest.skip(f"corpora not built: {e}")
    assert _readme_block() == R.leakage_table(counts), \
        "data/README.md is stale: run python -m cookie_lib.study.corpora leakage --write-readme"
