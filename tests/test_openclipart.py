"""Open Clip Art builder (cookie_lib.study.corpora.openclipart, .debian, .drawings): .deb unpacking, metadata, rendering, de-duplication,
and an offline build of the committed fixture data/fixture_openclipart/openclipart-svg-fixture.deb."""
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cookie_lib.data import validate_karpathy
from cookie_lib.study.corpora import debian, drawings as D
from cookie_lib.study.corpora import openclipart as O

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "fixture_openclipart" / "openclipart-svg-fixture.deb"
_spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE.with_name("make_fixture.py"))
make_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixture)

RDF = """<metadata><rdf:RDF xmlns:cc="http://web.resource.org/cc/" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><cc:Work rdf:about="">
 <dc:title>{title}</dc:title><dc:description>{desc}</dc:description>
 <dc:subject><rdf:Bag>{kws}</rdf:Bag></dc:subject>
 <dc:creator><cc:Agent><dc:title>Jane Artist</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata>"""


def svg(body='<circle cx="50" cy="50" r="20" fill="#c00"/>', title="Red Ball", desc="", kws=("ball", "red"),
        root='viewBox="0 0 100 100"'):
    meta = RDF.format(title=title, desc=desc, kws="".join(f"<rdf:li>{k}</rdf:li>" for k in kws))
    return f'<svg xmlns="http://www.w3.org/2000/svg" {root}>{meta}{body}</svg>'.encode()


def test_deb_members_and_iter_svgs_skip_symlinks(tmp_path):
    deb = tmp_path / "x.deb"
    deb.write_bytes(make_fixture.make_deb({"food/a.svg": svg(), "food/b.svg": b"odd-length"},  # odd size: ar pads
                                          {"food/link.svg": "a.svg"}))
    members = debian.deb_members(deb)
    assert list(members) == ["debian-binary", "control.tar.xz", "data.tar.xz"] and members["debian-binary"] == b"2.0\n"
    assert [rel for rel, _ in O.iter_svgs(deb)] == ["food/a.svg", "food/b.svg"]
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 not ar")
    with pytest.raises(ValueError, match="not an ar archive"):
        debian.deb_members(bad)


def test_parse_metadata_reads_the_work_not_the_creator():
    m = O.parse_metadata(svg(title="An Apple", desc="a red apple", kws=("hash", "", "food", "apple")))
    assert m == {"title": "An Apple", "keywords": ["hash", "", "food", "apple"], "description": "a red apple",
                 "creator": "Jane Artist"}
    assert O.parse_metadata(b'<svg xmlns="http://www.w3.org/2000/svg"/>')["title"] == ""
    with pytest.raises(ValueError, match="does not parse"):
        O.parse_metadata(b"<svg><g></svg>")


def test_make_captions_filters_boilerplate():
    meta = {"title": "Part of the Flat Icon Collection", "description": "jane@example.org",
            "keywords": ["hash", "", "Jane Artist", "signs_and_symbols", "apple", "Apple", "clip art"],
            "creator": "Jane Artist"}
    assert O.make_captions(meta, {"Part of the Flat Icon Collection"}) == [("signs and symbols, apple", "keywords")]
    meta = {"title": "Clipart by Nicu Buculei - jigsaw_red_10", "description": "A red jigsaw piece.",
            "keywords": ["jigsaw"], "creator": ""}
    assert O.make_captions(meta, set()) == [("jigsaw red", "title"), ("jigsaw", "keywords"),
                                            ("A red jigsaw piece.", "description")]
    same = {"title": "apple", "description": "Apple", "keywords": ["apple"], "creator": ""}
    assert O.make_captions(same, set()) == [("apple", "title")]  # case-insensitive de-duplication
    assert O.make_captions({"title": "", "description": "", "keywords": ["hash"], "creator": ""}, set()) == []


def _pixels(img):
    return np.asarray(img, dtype=np.int64)


def test_render_crops_to_content_and_fixes_roots():
    img = D.render(svg())  # a red disc in a 100x100 page: cropped, it fills the 64 px square
    a = _pixels(img)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert tuple(a[32, 32]) == (204, 0, 0) and a[32, 1, 0] > 150 and a[32, 1, 1] < 60  # red reaches the edge
    assert tuple(a[0, 0]) == (255, 255, 255)  # corner of the disc's bounding box: white
    pt = svg(root='width="75pt" height="75pt"')  # resvg: "invalid size" without the viewBox fix
    assert D.render(pt).size == (64, 64)
    assert 'viewBox="0 0 100 100"' in D.fix_root(pt.decode())
    off_page = svg('<rect x="150" y="20" width="30" height="60" fill="#00f"/>')  # drawn right of its page
    b = _pixels(D.render(off_page))
    assert tuple(b[32, 32]) == (0, 0, 255)
    with pytest.raises(ValueError, match="blank"):
        D.render(svg('<g/>'))
    assert D.render(svg()).tobytes() == D.render(svg()).tobytes()


def test_emoji_matches_rule():
    hashes = np.array([0, 0b11111, 0b11111111, 2**9 - 1], dtype=np.uint64)  # distances to 0: 0, 5, 8, 9
    thumbs = np.zeros((4, 16, 16, 3), np.float32) + np.array([100, 10, 20, 0], np.float32)[:, None, None, None]
    ehash, ethumb = np.array([0], dtype=np.uint64), np.zeros((1, 16, 16, 3), np.float32)
    # 0: same pHash but other colours (MAE 100) -> kept; 1, 2: close in both -> matched; 3: 9 bits -> kept
    assert D.emoji_matches(hashes, thumbs, ehash, ethumb) == [(1, 0, 5, 10.0), (2, 0, 8, 20.0)]
    assert D.hamming(hashes[:3], hashes[:3]).tolist() == [[0, 5, 8], [5, 0, 3], [8, 3, 0]]


def test_split_units_join_near_duplicates_and_equal_keys():
    five_high_bits = 2**63 + 2**62 + 2**61 + 2**60 + 2**59  # 5 bits from 0: not a near-duplicate
    hashes = np.array([0, 1, 2**40 - 1, five_high_bits, 2**20 - 1], dtype=np.uint64)
    units = D.split_units(hashes, ["a", "b", "c", "d", "c"], max_distance=4)
    assert units[0] == units[1]  # 1 bit apart
    assert units[2] == units[4]  # same key "c"
    assert len({units[0], units[2], units[3]}) == 3


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory):
    """An emoji images/ folder holding a render of the fixture's French flag (so it must be dropped)."""
    folder = tmp_path_factory.mktemp("emoji") / "images"
    (folder / "noto").mkdir(parents=True)
    france = dict(O.iter_svgs(FIXTURE))["signs_and_symbols/flags/europe/france/france.svg"]
    D.render(france).save(folder / "noto" / "1F1EB-1F1F7.png")
    Image.new("RGB", (64, 64), (120, 80, 200)).save(folder / "noto" / "1F7EA.png")  # purple square
    return folder


def test_build_fixture(tmp_path, emoji_dir):
    rep = O.build(tmp_path / "a", deb=FIXTURE, emoji_images=emoji_dir, progress=False)
    O.build(tmp_path / "b", deb=FIXTURE, emoji_images=emoji_dir, progress=False)
    a = _tree(tmp_path / "a")
    assert a == _tree(tmp_path / "b"), "rebuild is not byte-identical"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp folder left
    assert rep["svg_files"] == 15 and rep["images"] == 11
    assert rep["dropped"] == {"blank render": 1, "byte-identical copy of another file": 1,
                              "decorative folder (stars, gradients, patterns)": 1,
                              "near-duplicate of an emoji image": 1}
    assert [m[:2] for m in rep["near_emoji"]] == [["signs_and_symbols/flags/europe/france/france.svg",
                                                   "noto/1F1EB-1F1F7.png"]]
    corpus = validate_karpathy(tmp_path / "a" / "dataset_openclipart.json")
    doc = json.loads(a["dataset_openclipart.json"])
    imgs = doc["images"]
    assert doc["dataset"] == "openclipart" and doc["build"]["images"] == 11
    sources = {i["source"] for i in imgs}
    assert "shapes/arrows/arrow03_1.svg" in sources
    assert len(sources & {"food/apple_copy.svg", "food/fruit/an_apple_01.svg"}) == 1  # first in sorted order kept
    assert not any("stars" in s or "france" in s or "link" in s for s in sources)
    assert all(f"images/{i['filepath']}/{i['filename']}" in a for i in imgs)
    assert all(i["corpus"] == "openclipart" and i["concept"].startswith("oca-") for i in imgs)
    kinds = Counter(s["kind"] for i in imgs for s in i["sentences"])
    assert set(kinds) == {"title", "keywords", "description"} and kinds["title"] == 11
    madrid = next(i for i in imgs if i["source"] == "geography/madrid_01.svg")
    assert [s["kind"] for s in madrid["sentences"]] == ["title", "keywords", "description"]
    nicu = next(i for i in imgs if i["source"] == "shapes/arrows/arrow03_1.svg")
    assert nicu["sentences"][0]["raw"] == "arrow"  # "Clipart by Nicu Buculei - arrow08_4"
    assert {r.split for r in corpus.records} <= {"train", "val", "test"} and "test" in {r.split for r in corpus.records}
    assert "public domain" in a["NOTICE"].decode()
    for i in imgs:
        assert Image.open(tmp_path / "a" / "images" / i["filepath"] / i["filename"]).size == (64, 64)


def test_build_without_emoji_keeps_the_flag_and_max_drawings(tmp_path):
    rep = O.build(tmp_path / "c", deb=FIXTURE, emoji_images=tmp_path / "missing", progress=False)
    assert rep["images"] == 12 and rep["emoji_images_compared"] == 0
    rep = O.build(tmp_path / "d", deb=FIXTURE, max_drawings=6, test_frac=0.4, val_frac=0.4, progress=False)
    assert rep["eligible"] == 6 and rep["splits"]["test"]["images"] >= 1
    from cookie_lib.data import DataValidationError
    with pytest.raises(DataValidationError, match="split 'val' is empty"):  # validated before the rename
        O.build(tmp_path / "e", deb=FIXTURE, max_drawings=6, test_frac=0.5, val_frac=0.0, progress=False)
    assert not (tmp_path / "e").exists()


def test_interrupted_build_leaves_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    O.build(out, deb=FIXTURE, progress=False)
    before = _tree(out)
    calls = []

    def boom(img):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return b""

    monkeypatch.setattr(O, "png_bytes", boom)
    with pytest.raises(KeyboardInterrupt):
        O.build(out, deb=FIXTURE, progress=False)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_fetch_deb_uses_cache_and_names_the_problem(tmp_path, monkeypatch):
    cached = tmp_path / "openclipart-svg_1%3a0.18+dfsg-19_all.deb"
    cached.write_bytes(b"!<arch>\n")
    assert O.fetch_deb(tmp_path) == cached
    monkeypatch.setattr(O.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match="apt-get is not available.*--deb"):
        O.fetch_deb(tmp_path / "empty")


def test_fixture_deb_is_reproducible(tmp_path):
    """data/fixture_openclipart is exactly make_fixture.py's output (needs the cached real .deb)."""
    debs = sorted((ROOT / "data" / ".cache").glob("openclipart-svg_*.deb"))
    if not debs:
        pytest.skip("openclipart-svg .deb not cached in data/.cache")
    svgs = {rel: data for rel, data in O.iter_svgs(debs[-1]) if rel in set(make_fixture.FILES)}
    svgs["food/apple_copy.svg"] = svgs["food/fruit/an_apple_01.svg"]
    assert make_fixture.make_deb(svgs, {"food/fruit/apple_link.svg": "an_apple_01.svg"}) == FIXTURE.read_bytes()
