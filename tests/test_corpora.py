"""The pre-training corpus (cookie_lib.study.corpora.pretrain): no test concept or image leaks, keys cannot collide,
paths resolve from the image root, and the build-everything CLI's order and skipping."""
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cookie_lib.data import load_karpathy
from cookie_lib.study.corpora import build as B
from cookie_lib.study.corpora import openclipart as O
from cookie_lib.study.corpora import pretrain as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data/ folder with the committed emoji fixture and the Open Clip Art fixture built next to it."""
    d = tmp_path_factory.mktemp("data")
    shutil.copytree(ROOT / "data" / "fixture_emoji", d / "emoji")
    O.build(d / "openclipart", deb=ROOT / "data" / "fixture_openclipart" / "openclipart-svg-fixture.deb",
            emoji_images=d / "emoji" / "images", test_frac=0.3, val_frac=0.2, progress=False)
    return d


def _load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_pretrain_has_no_test_image_and_prefixed_keys(data_dir):
    res = P.build_pretrain(data_dir / "pretrain", data_dir / "emoji", data_dir / "openclipart")
    doc = _load(data_dir / "pretrain" / "dataset_pretrain.json")
    emoji = _load(data_dir / "emoji" / "dataset_emoji.json")["images"]
    oca = _load(data_dir / "openclipart" / "dataset_openclipart.json")["images"]
    imgs = doc["images"]
    assert doc["image_root"] == ".." and {i["split"] for i in imgs} == {"train", "val"}
    # exactly the train/val images of each corpus, nothing else
    want = Counter((("emoji", i["split"]) for i in emoji if i["split"] != "test"))
    want += Counter((("openclipart", i["split"]) for i in oca if i["split"] != "test"))
    assert Counter((i["corpus"], i["split"]) for i in imgs) == want
    assert res["images"] == len(imgs) == sum(want.values())
    # no test concept, and no test image file, of either corpus
    test_concepts = {"emoji:" + i["concept"] for i in emoji if i["split"] == "test"}
    test_concepts |= {"oca:" + i["concept"] for i in oca if i["split"] == "test"}
    assert test_concepts and not test_concepts & {i["concept"] for i in imgs}
    test_files = {f"emoji/images/{i['filepath']}/{i['filename']}" for i in emoji if i["split"] == "test"}
    test_files |= {f"openclipart/images/{i['filepath']}/{i['filename']}" for i in oca if i["split"] == "test"}
    assert test_files and not test_files & {f"{i['filepath']}/{i['filename']}" for i in imgs}
    assert all(i["concept"].startswith({"emoji": "emoji:", "openclipart": "oca:"}[i["corpus"]]) for i in imgs)
    assert [i["imgid"] for i in imgs] == list(range(len(imgs)))
    sids = [s["sentid"] for i in imgs for s in i["sentences"]]
    assert sids == list(range(len(sids))) and all(i["sentids"] == [s["sentid"] for s in i["sentences"]] for i in imgs)
    corpus = load_karpathy(data_dir / "pretrain" / "dataset_pretrain.json", image_root=data_dir)
    assert all(r.path.is_file() for r in corpus.records)
    designs = Counter(r.key for r in corpus.records if r.key.startswith("emoji:"))
    assert max(designs.values()) > 1  # the designs of one emoji share a key (cross-modal positives)
    assert sorted(p.name for p in (data_dir / "pretrain").iterdir()) == ["dataset_pretrain.json"]


def test_check_pretrain_rejects_leaks_and_bad_keys(data_dir):
    P.build_pretrain(data_dir / "pretrain", data_dir / "emoji", data_dir / "openclipart")
    doc = _load(data_dir / "pretrain" / "dataset_pretrain.json")
    P.check_pretrain(doc, data_dir)
    leaked = json.loads(json.dumps(doc))
    leaked["images"][0]["split"] = "test"
    with pytest.raises(ValueError, match="splits other than"):
        P.check_pretrain(leaked)
    bad = json.loads(json.dumps(doc))
    bad["images"][-1]["concept"] = "1F600"
    with pytest.raises(ValueError, match="lacks the prefix"):
        P.check_pretrain(bad)
    with pytest.raises(ValueError, match="missing image"):
        P.check_pretrain(doc, data_dir / "elsewhere")


def test_pretrain_needs_both_corpora(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match="build the openclipart corpus first"):
        P.build_pretrain(tmp_path / "pretrain", data_dir / "emoji", tmp_path / "none")
    with pytest.raises(ValueError, match="not under the image root"):
        P.build_pretrain(tmp_path / "pretrain", data_dir / "emoji", data_dir / "openclipart", image_root=tmp_path)
    assert not (tmp_path / "pretrain" / "dataset_pretrain.json").exists()


def test_build_all_order_skip_and_rebuild_dependents(tmp_path, monkeypatch, capsys):
    from cookie_lib.study.corpora import emoji, wordnet

    calls = []

    def fake(name, marker):
        def run(out, *a, **k):
            calls.append(name)
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / marker).write_text("{}")
            return {}
        return run

    monkeypatch.setattr(emoji, "build", fake("emoji", "dataset_emoji.json"))
    monkeypatch.setattr(O, "build", fake("openclipart", "dataset_openclipart.json"))
    monkeypatch.setattr(wordnet, "build", fake("wordnet", "wordnet_task.json"))
    monkeypatch.setattr(P, "build_pretrain", fake("pretrain", "dataset_pretrain.json"))
    B.build_all(tmp_path, progress=False)
    assert calls == ["emoji", "openclipart", "wordnet", "pretrain"]
    calls.clear()
    B.build_all(tmp_path, progress=False)
    assert calls == [] and "skipped" in capsys.readouterr().out
    (tmp_path / "emoji" / "dataset_emoji.json").unlink()
    B.build_all(tmp_path, progress=False)
    assert calls == ["emoji", "openclipart", "pretrain"]  # de-duplication and pretrain depend on emoji
    calls.clear()
    B.build_all(tmp_path, force=True, progress=False)
    assert calls == ["emoji", "openclipart", "wordnet", "pretrain"]
