"""Emoji corpus builder (cookie_lib.study.corpora.emoji, its families and splits): unit functions and an offline build from fake npm tarballs."""
import io
import json
import random
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from cookie_lib.study.corpora import emoji as E
from cookie_lib.study.corpora import families as F
from cookie_lib.study.corpora.common import tokenize
from cookie_lib.study.corpora.splits import assign_splits
from cookie_lib.data import validate_karpathy

ROOT = Path(__file__).resolve().parents[1]


def test_norm_key_and_slug():
    assert E.norm_key("1f44d-fe0f") == "1F44D"
    assert E.norm_key("0023-FE0F-20E3") == "0023-20E3"
    assert E.norm_key("1F3F4-E0067-E007F") == "1F3F4-E0067-E007F"
    assert E.slug("A button (blood type)") == "a-button-blood-type"
    assert E.slug("piñata") == "pinata"
    assert E.slug("man’s shoe") == "mans-shoe"
    assert tokenize("Flag: Wales, dragon") == ["flag", "wales", "dragon"]


def test_make_captions_dedup_order_and_padding():
    caps = E.make_captions("grinning face", ["face", "grin"], "Grinning  face", "smile, happy", ["grinning"])
    assert [k for _, k, _ in caps] == ["cldr_label", "cldr_keywords", "openmoji_tags", "short_name", "template"]
    assert caps[1][0] == "face, grin" and [t for *_, t in caps] == [False] * 4 + [True]
    few = E.make_captions("x ray", [], "", "", ["x_ray"])  # short name equals label after "_" -> " "
    assert [k for _, k, _ in few] == ["cldr_label"] + ["template"] * 4
    assert len({r for r, _, _ in few}) == 5 and all("x ray" in r for r, _, _ in few)
    many = E.make_captions("a", ["b"], "c", "d", ["e", "f"])
    assert len(many) == 6 and not any(t for *_, t in many)  # no template once 5 human texts exist


def test_assign_splits_stratified_deterministic_order_free():
    rng = random.Random(0)
    concepts = {f"K{i:04X}": f"sub{rng.randrange(60)}" for i in range(2000)}
    a = assign_splits(concepts)
    items = list(concepts.items())
    rng.shuffle(items)
    assert assign_splits(dict(items)) == a  # independent of order
    assert set(a) == set(concepts) and set(a.values()) == {"train", "val", "test"}
    share = Counter(a.values())
    assert abs(share["test"] / 2000 - 0.15) < 0.02 and abs(share["val"] / 2000 - 0.10) < 0.02
    per_sub = defaultdict(Counter)
    for k, s in a.items():
        per_sub[concepts[k]][s] += 1
    for c in per_sub.values():  # systematic sampling: each subgroup within one concept of its share
        n = sum(c.values())
        assert abs(c["test"] - 0.15 * n) <= 1 and abs(c["val"] - 0.10 * n) <= 1
    assert assign_splits(concepts, test_frac=0.3)["K0000"] in {"train", "val", "test"}


def _png_bytes(color, size=64, alpha=255):
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), color + (alpha,)).save(buf, format="PNG")
    return buf.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="8" fill="#ff0000"/></svg>'


def test_to_png_composites_on_white_and_resizes():
    out = Image.open(io.BytesIO(E.to_png(_png_bytes((0, 0, 255), alpha=0), False)))
    assert out.mode == "RGB" and out.size == (64, 64) and out.getpixel((5, 5)) == (255, 255, 255)
    out = Image.open(io.BytesIO(E.to_png(_png_bytes((0, 0, 255), size=72), False)))
    assert out.size == (64, 64) and out.getpixel((30, 30)) == (0, 0, 255)
    svg = Image.open(io.BytesIO(E.to_png(SVG, True)))
    assert svg.size == (64, 64) and svg.getpixel((32, 32)) == (255, 0, 0) and svg.getpixel((1, 1)) == (255, 255, 255)
    assert E.to_png(SVG, True) == E.to_png(SVG, True)


# ------------------------------------------------------------ offline build from fake packages
CONCEPTS = [  # hexcode (emojibase style), label, group id, subgroup id
    ("1F600", "grinning face", 0, 0), ("1F603", "grinning face with big eyes", 0, 0),
    ("1F604", "grinning face with smiling eyes", 0, 0), ("1F601", "beaming face", 0, 0),
    ("2764", "red heart", 0, 1), ("1F494", "broken heart", 0, 1), ("1F48C", "love letter", 0, 1),
    ("1F44B", "waving hand", 1, 2), ("1F44D", "thumbs up", 1, 2), ("270C", "victory hand", 1, 2),
    ("1F34E", "red apple", 3, 4), ("1F34C", "banana", 3, 4),
]


def _tgz(path, members: dict):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    groups = {"groups": {"0": "smileys-emotion", "1": "people-body", "2": "component", "3": "food-drink"},
              "subgroups": {"0": "face-smiling", "1": "heart", "2": "hand", "3": "hair-style", "4": "food-fruit"}}
    data = [{"label": "regional indicator A", "hexcode": "1F1E6"},  # no group: skipped
            {"label": "red hair", "hexcode": "1F9B0", "group": 2, "subgroup": 3, "tags": ["hair"]}]  # component
    data += [{"label": lab, "hexcode": h, "group": g, "subgroup": s, "tags": [lab.split()[-1], "emoji"],
              "order": i} for i, (h, lab, g, s) in enumerate(CONCEPTS)]
    data[-3]["skins"] = [{"label": "thumbs up: light skin tone", "hexcode": "1F44D-1F3FB"}]
    _tgz(cache / "emojibase-data-17.0.0.tgz", {"package/en/data.json": json.dumps(data).encode(),
                                               "package/meta/groups.json": json.dumps(groups).encode()})
    ds = [{"unified": (h + "-FE0F" if h == "2764" else h), "image": (h + "-fe0f" if h == "2764" else h).lower() + ".png",
           "short_names": [lab.replace(" ", "_")[:6]], "has_img_google": True, "has_img_twitter": i != 0}
          for i, (h, lab, _, _) in enumerate(CONCEPTS + [("1F9B0", "red hair", 2, 3)])]
    imgs = {e["image"]: _png_bytes((i * 20, 100, 200 - i * 10)) for i, e in enumerate(ds)}
    _tgz(cache / "emoji-datasource-google-16.0.0.tgz",
         {"package/emoji.json": json.dumps(ds).encode(), **{f"package/img/google/64/{k}": v for k, v in imgs.items()}})
    _tgz(cache / "emoji-datasource-twitter-16.0.0.tgz",
         {"package/emoji.json": json.dumps(ds).encode(), **{f"package/img/twitter/64/{k}": v for k, v in imgs.items()}})
    fl = {f"package/icons/flat/{E.slug(lab)}{'-default' if h == '1F44D' else ''}.svg": SVG
          for h, lab, _, _ in CONCEPTS[:-1]}  # banana missing in Fluent
    _tgz(cache / "fluentui-emoji-1.3.0.tgz", fl)
    om = [{"hexcode": h, "annotation": lab, "openmoji_tags": "om tag " + lab, "skintone": ""} for h, lab, _, _ in CONCEPTS]
    _tgz(cache / "openmoji-17.0.0.tgz", {"package/data/openmoji.json": json.dumps(om).encode(),
                                         **{f"package/color/svg/{h}.svg": SVG for h, *_ in CONCEPTS}})
    return cache


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_offline_format_and_determinism(fake_cache, tmp_path):
    counts = E.build(tmp_path / "a", ("noto", "twemoji", "fluent"), fake_cache, test_frac=0.25, val_frac=0.25,
                     progress=False)
    E.build(tmp_path / "b", ("noto", "twemoji", "fluent"), fake_cache, test_frac=0.25, val_frac=0.25, progress=False)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b, "rebuild is not byte-identical"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp folders left
    corpus = validate_karpathy(tmp_path / "a" / "dataset_emoji.json")
    raw = json.loads(a["dataset_emoji.json"])
    assert raw["dataset"] == "emoji"
    imgs = raw["images"]
    keys = {i["concept"] for i in imgs}
    assert keys == {E.norm_key(h) for h, *_ in CONCEPTS}  # component/no-group/skins excluded
    assert "images/noto/2764.png" in a and "images/fluent/1F44D.png" in a and "images/fluent/1F34C.png" not in a
    assert "images/twemoji/1F600.png" not in a  # has_img_twitter false
    assert len(imgs) == 3 * 12 - 2 == sum(c["images"] for c in counts.values())
    assert [i["imgid"] for i in imgs] == list(range(len(imgs)))
    assert all(i["filepath"] == i["design"] and i["filename"] == i["concept"] + ".png" for i in imgs)
    by_concept = defaultdict(list)
    for i in imgs:
        by_concept[i["concept"]].append(i)
        assert i["sentids"] == [s["sentid"] for s in i["sentences"]] and all(s["imgid"] == i["imgid"] for s in i["sentences"])
        assert len(i["sentences"]) >= 5
    for group in by_concept.values():
        assert len({g["split"] for g in group}) == 1
        assert len({tuple(s["raw"] for s in g["sentences"]) for g in group}) == 1
    kinds = {s["kind"] for i in imgs for s in i["sentences"]}
    assert "openmoji_tags" not in kinds and {"cldr_label", "cldr_keywords", "short_name", "template"} <= kinds
    assert "openmoji" not in a["NOTICE"].decode() and "Twemoji" in a["NOTICE"].decode()
    assert {r.split for r in corpus.records} == {"train", "val", "test"}


def test_build_with_openmoji_and_max_concepts(fake_cache, tmp_path):
    E.build(tmp_path / "o", ("openmoji",), fake_cache, max_concepts=6, progress=False)
    imgs = json.loads((tmp_path / "o" / "dataset_emoji.json").read_text())["images"]
    assert len(imgs) == 6 and len({i["subgroup"] for i in imgs}) >= 3  # evenly spaced subset
    assert any(s["kind"] == "openmoji_tags" for i in imgs for s in i["sentences"])
    assert "CC-BY-SA" in (tmp_path / "o" / "NOTICE").read_text()


def test_interrupted_build_leaves_previous_output(fake_cache, tmp_path, monkeypatch):
    out = tmp_path / "out"
    E.build(out, ("noto",), fake_cache, progress=False)
    before = _tree(out)
    calls = []

    def boom(data, is_svg):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return b""

    monkeypatch.setattr(E, "to_png", boom)
    with pytest.raises(KeyboardInterrupt):
        E.build(out, ("noto", "twemoji"), fake_cache, progress=False)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_fetch_errors_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(E.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match=r"npm is not installed.*openmoji@17.0.0"):
        E.fetch(tmp_path, ["openmoji"])
    monkeypatch.setattr(E.shutil, "which", lambda _: "/usr/bin/npm")

    class Res:
        returncode, stdout, stderr = 1, "", "npm ERR! network unreachable"

    monkeypatch.setattr(E.subprocess, "run", lambda *a, **k: Res())
    with pytest.raises(RuntimeError, match=r"fluentui-emoji@1.3.0 .*network unreachable"):
        E.fetch(tmp_path, ["fluentui-emoji"])
    with pytest.raises(ValueError, match="unknown designs"):
        E.build(tmp_path / "x", ("apple",), tmp_path)


def test_cli_prints_counts(fake_cache, tmp_path, capsys):
    assert E.main(["build", "--out", str(tmp_path / "c"), "--designs", "noto,twemoji", "--cache-dir",
                   str(fake_cache)]) == 0
    out = capsys.readouterr().out
    assert "train images=" in out and "test  images=" in out and "total images=23" in out


def test_committed_fixture_matches_builder(tmp_path):
    """data/fixture_emoji is exactly the builder's output (needs the cached npm tarballs; skipped offline)."""
    cache = ROOT / "data" / ".cache"
    needed = ["emojibase-data-17.0.0.tgz", "emoji-datasource-google-16.0.0.tgz",
              "emoji-datasource-twitter-16.0.0.tgz", "fluentui-emoji-1.3.0.tgz"]
    if not all((cache / n).exists() for n in needed):
        pytest.skip("npm tarballs not cached in data/.cache")
    E.build(tmp_path / "fx", ("noto", "twemoji", "fluent"), cache, max_concepts=40, test_frac=0.25, val_frac=0.15,
            progress=False)
    assert _tree(tmp_path / "fx") == _tree(ROOT / "data" / "fixture_emoji")


# ------------------------------------------------------------ families (issue 10)
def test_emoji_family_groups_variants():
    fam = F.emoji_family
    assert fam("1F600") == "1F600"  # an unrelated emoji is its own family
    assert fam("1F468") == fam("1F469") == fam("1F9D1") == fam("1F469-200D-1F9B0") == fam("1F9D1-200D-1F9B2")
    assert fam("1F926-200D-2642") == fam("1F926-200D-2640") == fam("1F926") == "1F926"  # facepalming
    assert fam("1F468-200D-1F33E") == fam("1F469-200D-1F33E") == fam("1F9D1-200D-1F33E") == "1F9D1-1F33E"
    assert fam("1F9D1-200D-1F33E") != fam("1F9D1-200D-1F373")  # farmer and cook stay apart
    assert fam("1F6B6-200D-2640-200D-27A1") == fam("1F6B6")  # "woman walking: facing right"
    assert fam("1F46B") == fam("1F46C") == fam("1F9D1-200D-1F91D-200D-1F9D1")  # holding hands
    assert fam("1F468-200D-1F469-200D-1F467") == fam("1F46A") == fam("1F469-200D-1F466") == "family"
    assert fam("1F408-200D-2B1B") == "1F408" and fam("1F3F3-200D-1F308") == "1F3F3"  # black cat, rainbow flag
    assert fam("1F1EB-1F1F7") == fam("1F3F4-E0067-E0062-E0073-E0063-E0074-E007F") == F.FLAG_FAMILY
    assert fam("0023-20E3") == fam("0031-20E3") == "keycaps"
    assert fam("1F550") == fam("1F567") == "clock-faces" and fam("23F0") == "23F0"  # alarm clock is not a face


def test_assign_splits_keeps_families_together_and_flags_in_train():
    rng = random.Random(1)
    concepts, families = {}, {}
    for f in range(300):
        for m in range(rng.choice([1, 1, 1, 2, 3, 6])):
            key = f"F{f:03d}-{m}"
            concepts[key], families[key] = f"sub{f % 12}", f"fam{f}"
    for i in range(40):
        concepts[f"FLAG{i}"], families[f"FLAG{i}"] = "country-flag", "flags"
    a = assign_splits(concepts, families=families, fixed={"flags": "train"})
    by_family = defaultdict(set)
    for k, s in a.items():
        by_family[families[k]].add(s)
    assert all(len(s) == 1 for s in by_family.values()), "a family spans two splits"
    assert by_family["flags"] == {"train"}
    share = Counter(a.values())
    assert 0.09 < share["test"] / len(a) < 0.19 and 0.05 < share["val"] / len(a) < 0.15
    assert assign_splits(concepts) != a  # families change the assignment here
    singletons = assign_splits(concepts, families={k: k for k in concepts})
    assert singletons == assign_splits(concepts)  # default: every key its own family


def test_built_corpus_families_never_span_splits(fake_cache, tmp_path):
    E.build(tmp_path / "f", ("noto", "twemoji"), fake_cache, progress=False)
    imgs = json.loads((tmp_path / "f" / "dataset_emoji.json").read_text())["images"]
    concepts = {i["concept"]: {"key": i["concept"], "label": i["sentences"][0]["raw"], "subgroup": i["subgroup"]}
                for i in imgs}
    fam = F.families_with_siblings(list(concepts.values()))
    assert all(i["family"] == fam[i["concept"]] for i in imgs)
    assert all(i["sibling_group"] == F.sibling_group(i["concept"], i["sentences"][0]["raw"], i["subgroup"])
               for i in imgs)
    splits, sib_splits = defaultdict(set), defaultdict(set)
    for i in imgs:
        splits[i["family"]].add(i["split"])
        sib_splits[i["sibling_group"]].add(i["split"])
    assert all(len(s) == 1 for s in splits.values()) and all(len(s) == 1 for s in sib_splits.values())


def test_big_families_go_to_train(fake_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "BIG_FAMILY", 2)
    monkeypatch.setattr(F, "emoji_family", lambda key: "big" if key in {"1F600", "1F603", "1F604"} else key)
    E.build(tmp_path / "g", ("noto",), fake_cache, test_frac=0.5, val_frac=0.3, progress=False)
    imgs = json.loads((tmp_path / "g" / "dataset_emoji.json").read_text())["images"]
    assert {i["split"] for i in imgs if i["family"] == "big"} == {"train"}
    assert {i["split"] for i in imgs} == {"train", "val", "test"}
