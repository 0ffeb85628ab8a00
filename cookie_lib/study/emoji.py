"""Build the emoji image-text corpus (Karpathy format) from npm packages, offline-reproducibly.

The corpus is the same emoji concept (e.g. "beer mug") drawn by independent designers (Noto,
Twemoji, OpenMoji, Fluent), described by human-written Unicode CLDR text. Usage::

    python -m cookie_lib.study.emoji build --out data/emoji [--designs noto,twemoji,openmoji,fluent]
                                     [--cache-dir data/.cache] [--max-concepts N]

Output (exactly the Karpathy layout plus extra fields, see data/README.md)::

    <out>/dataset_emoji.json   {"dataset": "emoji", "images": [...]}
    <out>/images/<design>/<KEY>.png   64x64 RGB, transparent pixels composited on white
    <out>/NOTICE               attributions of the sources used

KEY is the upper-case hex code points joined by "-", with FE0F removed. Only base emoji (no
skin-tone variants) are used and the CLDR "component" group is excluded. Splits are by concept,
stratified by subgroup and grouped by family (variants of one base emoji, flags, keycaps, clock faces and
sibling groups - one design recoloured, resized, mirrored or numbered - never span two splits; flags and
other families of > 10 concepts are always train), from a seeded SHA-256 hash, so rebuilding gives byte-identical files.

Why one long module: fetching, key normalisation, family splits, captions and rendering are one builder, each step small.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image
from tqdm import tqdm

PACKAGES = {  # npm name -> pinned version
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "openmoji": "17.0.0",
    "fluentui-emoji": "1.3.0",
    "emojibase-data": "17.0.0",
}
# design -> (npm package, licence, attribution line)
DESIGNS = {
    "noto": ("emoji-datasource-google", "Apache-2.0",
             "Noto Emoji images by Google (https://github.com/googlefonts/noto-emoji), Apache License 2.0; "
             "64 px PNGs as packaged in emoji-datasource-google 16.0.0 (MIT), composited on white."),
    "twemoji": ("emoji-datasource-twitter", "CC-BY-4.0",
                "Twemoji graphics by Twitter, Inc. and other contributors (https://github.com/twitter/twemoji), "
                "licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/); 64 px PNGs as packaged in "
                "emoji-datasource-twitter 16.0.0, composited on white."),
    "openmoji": ("openmoji", "CC-BY-SA-4.0",
                 "OpenMoji graphics and annotations by the OpenMoji project (https://openmoji.org), licensed under "
                 "CC-BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); rasterised to 64 px PNG and "
                 "composited on white. Derived images are shared under CC-BY-SA 4.0."),
    "fluent": ("fluentui-emoji", "MIT",
               "Fluent Emoji (flat) by Microsoft Corporation (https://github.com/microsoft/fluentui-emoji), "
               "MIT License; rasterised to 64 px PNG, composited on white (fluentui-emoji 1.3.0)."),
}
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "data" / ".cache"  # npm tarballs, whatever the cwd
DEFAULT_DESIGNS = ("noto", "twemoji", "openmoji", "fluent")
TEXT_NOTICE = (
    "Captions: Unicode CLDR annotations (Unicode License v3, https://www.unicode.org/license.txt) via "
    "emojibase-data 17.0.0 (MIT, Miles Johnson); short names from emoji-datasource 16.0.0 (MIT, Cal Henderson).")
OPENMOJI_TEXT_NOTICE = "OpenMoji annotations and tags (openmoji 17.0.0, CC-BY-SA 4.0) are used as extra captions."
SIZE = 64
TEMPLATES = ("an emoji of {label}", "a drawing of the {label} emoji", "an icon showing {label}",
             "a picture of {label}", "{label}, drawn as an emoji")
SEED = "cookie-emoji-v1"


def norm_key(hexcode: str) -> str:
    """Normalise a code-point sequence ("1f44d-fe0f" or "1F44D") to the corpus KEY ("1F44D")."""
    return "-".join(p for p in hexcode.upper().replace("_", "-").split("-") if p and p != "FE0F")


def slug(label: str) -> str:
    """Fluent file-name slug of a CLDR label: "A button (blood type)" -> "a-button-blood-type"."""
    s = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower().replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def tokenize(text: str) -> list[str]:
    """Karpathy-style tokens: lower-cased words, punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def stable_unit(*parts: str) -> float:
    """Deterministic number in [0, 1) from a seeded SHA-256 (unlike Python's salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join((SEED,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --------------------------------------------------------------------------- families
# Code points removed before comparing two emoji: variation selector, ZWJ, skin tones, gender signs,
# hair-style components and the "facing right" arrow. What is left names the base emoji.
_STRIP = {"FE0F", "200D", "2640", "2642", "27A1"} | {f"1F3F{c}" for c in "BCDEF"} | {f"1F9B{c}" for c in "0123"}
# man/woman -> person, boy/girl -> child, old man/old woman -> older person (gendered forms of one emoji)
_PERSON = {"1F468": "1F9D1", "1F469": "1F9D1", "1F466": "1F9D2", "1F467": "1F9D2", "1F474": "1F9D3", "1F475": "1F9D3"}
_PERSON_BASES = {"1F9D1", "1F9D2", "1F9D3"}
# single code points that are gendered or composed forms of another emoji (no shared code point to strip)
_ALIASES = {"1F934": "1FAC5", "1F478": "1FAC5",  # prince, princess -> person with crown
            "1F57A": "1F483",  # man dancing -> woman dancing
            "1F930": "1FAC4", "1FAC3": "1FAC4",  # pregnant woman/man -> pregnant person
            "1F46B": "1F9D1-1F91D-1F9D1", "1F46C": "1F9D1-1F91D-1F9D1", "1F46D": "1F9D1-1F91D-1F9D1",  # holding hands
            "1F48F": "1F9D1-2764-1F48B-1F9D1", "1F491": "1F9D1-2764-1F9D1",  # kiss, couple with heart
            "1F385": "1F9D1-1F384", "1F936": "1F9D1-1F384",  # Santa, Mrs. Claus -> mx claus
            "1F46A": "family"}
FLAG_FAMILY, FLAG_SPLIT = "flags", "train"  # all country/subdivision flags: one family, always in train
# Families of more than BIG_FAMILY concepts (flags 262, family 30, clock faces 24, person 15, keycaps 12 in
# the full build) always go to train: in val/test one such block of near-identical concepts would fill
# up to 10 % of the split and turn its retrieval into a fine-grained "which clock face" task.
BIG_FAMILY = 10


def emoji_family(key: str) -> str:
    """Family id of a corpus KEY: variants of one base emoji share it (no family may span two splits).

    - "flags": every flag made of regional indicators (country flags) or tag sequences (England,
      Scotland, Wales); ``FLAG_SPLIT`` places this big family in train, so the test split stays
      balanced (as every family of more than ``BIG_FAMILY`` concepts, see ``build``).
    - "keycaps": every sequence with U+20E3 (#, *, 0-9); "clock-faces": U+1F550..U+1F567.
    - otherwise the code points after removing ``_STRIP`` (ZWJ, skin tones, gender signs, hair
      components) with man/woman -> person (and boy/girl -> child, old man/woman -> older person);
      a person sequence keeps its role ("man farmer" and "woman farmer" -> "1F9D1-1F33E"), any other
      sequence is named by its first code point ("black cat" -> cat "1F408", "heart on fire" -> "2764");
      families of only persons with a child -> "family"; ``_ALIASES`` joins single code points that are
      gendered forms (prince/princess -> person with crown). An unrelated emoji's family is its own key.
    """
    cps = key.split("-")
    if any("1F1E6" <= c <= "1F1FF" or "E0020" <= c <= "E007F" for c in cps if len(c) == 5):
        return FLAG_FAMILY
    if "20E3" in cps:
        return "keycaps"
    if len(cps) == 1 and len(cps[0]) == 5 and "1F550" <= cps[0] <= "1F567":
        return "clock-faces"
    canon = [_PERSON.get(c, c) for c in cps if c not in _STRIP] or cps
    if len(canon) == 1:
        return _ALIASES.get(canon[0], canon[0])
    if canon[0] in _PERSON_BASES:
        if all(c in _PERSON_BASES for c in canon) and "1F9D2" in canon:
            return "family"
        return "-".join(canon)
    return canon[0]


# --------------------------------------------------------------------------- sibling groups
# Emoji that are one design recoloured, resized, mirrored or numbered ("orange heart" / "green heart",
# "red circle" / "black circle", "up arrow" / "left arrow", the moon phases) are near-copies of each other:
# one in train and another in test would make test retrieval partly a colour-matching task. Rule
# (``sibling_group``): within a CLDR subgroup, two emoji are siblings if their CLDR labels are equal after
# removing the words below ("light blue" counts as a colour); whole sets that no word rule catches are
# listed by code point or subgroup.
SIBLING_WORDS = frozenset({
    "red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "grey", "gray", "pink",  # colour
    "large", "small", "medium",  # size
    "up", "down", "left", "right", "upwards", "downwards", "leftwards", "rightwards",  # direction (mirrored copies)
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"})  # index
# (first, last) code point of ranges that form one sibling set: the moon phases, crescent and moon faces
SIBLING_RANGES = {"moon": ("1F311", "1F31D")}
# CLDR subgroups that are one sibling set as a whole: the same face or sign drawn with a different expression
SIBLING_SUBGROUPS = frozenset({"cat-face", "monkey-face", "zodiac"})


def sibling_group(key: str, label: str, subgroup: str) -> str:
    """Sibling-group id of an emoji: concepts with equal ids are recoloured/resized/mirrored/numbered
    copies of one design and must share a split.

    ``"siblings:<name>"`` for a range of ``SIBLING_RANGES`` or a subgroup in ``SIBLING_SUBGROUPS``, else
    ``"<subgroup>:<label words minus SIBLING_WORDS>"`` (lower case, "light blue" read as one colour):
    "orange heart" and "light blue heart" -> "heart:heart". Only ids shared by two or more concepts
    join anything (see ``families_with_siblings``).
    """
    if "-" not in key:
        for name, (lo, hi) in SIBLING_RANGES.items():
            if len(key) == len(lo) and lo <= key <= hi:
                return f"siblings:{name}"
    if subgroup in SIBLING_SUBGROUPS:
        return f"siblings:{subgroup}"
    words = tokenize(label.lower().replace("light blue", "blue"))
    return f"{subgroup}:{' '.join(w for w in words if w not in SIBLING_WORDS)}"


def families_with_siblings(concepts: list[dict]) -> dict[str, str]:
    """{key: family id}: ``emoji_family`` with every sibling group (``sibling_group`` id shared by >= 2
    concepts) merged into one family, transitively (union-find over families).

    ``concepts`` are dicts with "key", "label", "subgroup". A merged family is named by the smallest
    of its members' family ids and sibling ids, so the name (and the split hash) depends only on content.
    """
    fam = {c["key"]: emoji_family(c["key"]) for c in concepts}
    sib = {c["key"]: sibling_group(c["key"], c["label"], c["subgroup"]) for c in concepts}
    sizes = Counter(sib.values())
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smallest name is the root

    for key in fam:
        find(fam[key])
        if sizes[sib[key]] > 1:
            union(fam[key], sib[key])
    return {key: find(f) for key, f in fam.items()}


def assign_splits(concepts: dict[str, str], test_frac: float = 0.15, val_frac: float = 0.10,
                  families: dict[str, str] | None = None, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Split concepts {key: subgroup} into train/val/test, stratified by subgroup, whole families at a time.

    ``families`` maps key -> family id (default: each key its own family); all keys of one family
    get the same split, and ``fixed`` = {family: split} pins some families (e.g. flags -> train).
    Each family belongs to the stratum of its most common subgroup. Within a stratum of n concepts
    the families are ordered by a seeded hash of the family id; family i, whose concepts start at
    cumulative count c_i, sits at u_i = (c_i + offset) / n, with a per-stratum hashed offset
    (systematic sampling with a random start, weighted by family size): u < test_frac -> test,
    u < test_frac + val_frac -> val, else train. With singleton families every subgroup gets its
    share to within one concept. The result depends only on the keys, subgroups and families, not
    on their order.
    """
    families = families or {}
    fixed = fixed or {}
    members: dict[str, list[str]] = defaultdict(list)
    for key in concepts:
        members[families.get(key, key)].append(key)
    by_sub: dict[str, list[str]] = defaultdict(list)
    for fam, keys in members.items():
        if fam not in fixed:
            subs = Counter(concepts[k] for k in keys)
            by_sub[min(subs, key=lambda s: (-subs[s], s))].append(fam)
    fam_split = dict(fixed)
    for sub, fams in by_sub.items():
        fams.sort(key=lambda f: (stable_unit("concept", f), f))
        n = sum(len(members[f]) for f in fams)
        offset, start = stable_unit("subgroup", sub), 0
        for fam in fams:
            u = (start + offset) / n
            fam_split[fam] = "test" if u < test_frac else "val" if u < test_frac + val_frac else "train"
            start += len(members[fam])
    return {key: fam_split[fam] for fam, keys in members.items() for key in keys}


def make_captions(label: str, keywords: list[str], om_annotation: str = "", om_tags: str = "",
                  short_names: list[str] = (), min_captions: int = 5) -> list[tuple[str, str, bool]]:
    """Captions of one concept as (raw, kind, templated), human-written first, de-duplicated.

    Order: CLDR label, CLDR keywords joined by ", ", OpenMoji annotation, OpenMoji tags, each
    emoji-datasource short name (underscores -> spaces). Texts equal up to case/spacing are kept
    once. If fewer than ``min_captions`` remain, templated captions of the label pad the list.
    """
    cands = [(label, "cldr_label"), (", ".join(keywords), "cldr_keywords"),
             (om_annotation, "openmoji_annotation"), (om_tags, "openmoji_tags")]
    cands += [(s.replace("_", " "), "short_name") for s in short_names]
    seen, out = set(), []
    for raw, kind in cands:
        raw = " ".join(raw.split())
        if raw and raw.lower() not in seen:
            seen.add(raw.lower())
            out.append((raw, kind, False))
    for tpl in TEMPLATES:
        if len(out) >= min_captions:
            break
        out.append((tpl.format(label=label), "template", True))
    return out


def to_png(data: bytes, is_svg: bool) -> bytes:
    """Rasterise/resize one source image to a 64x64 RGB PNG, alpha composited on white."""
    if is_svg:
        import resvg_py
        data = bytes(resvg_py.svg_to_bytes(svg_string=data.decode("utf-8"), width=SIZE, height=SIZE,
                                           skip_system_fonts=True))
    img = Image.open(io.BytesIO(data)).convert("RGBA")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    buf = io.BytesIO()
    Image.alpha_composite(white, img).convert("RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def fetch(cache_dir: Path, names, versions: dict[str, str] | None = None) -> dict[str, Path]:
    """Return {package: tarball path}, running `npm pack NAME@VERSION` for tarballs not yet cached.

    ``versions`` maps each name to its pinned version (default: the emoji packages, ``PACKAGES``)."""
    versions = PACKAGES if versions is None else versions
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        path = cache_dir / f"{name}-{versions[name]}.tgz"
        if not path.exists():
            if shutil.which("npm") is None:
                raise RuntimeError(f"npm is not installed; it is needed to fetch {name}@{versions[name]} "
                                   f"(or put {path.name} into {cache_dir})")
            res = subprocess.run(["npm", "pack", f"{name}@{versions[name]}", "--silent"], cwd=cache_dir,
                                 capture_output=True, text=True)
            if res.returncode != 0 or not path.exists():
                raise RuntimeError(f"fetching {name}@{versions[name]} with npm pack failed: "
                                   f"{(res.stderr or res.stdout).strip()[-500:]}")
        paths[name] = path
    return paths


def read_members(tgz: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read only the named members of a .tgz in one sequential pass."""
    out = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar:
            if m.name in wanted and m.isfile():
                out[m.name] = tar.extractfile(m).read()
    return out


def load_metadata(tars: dict[str, Path], openmoji_text: bool) -> tuple[list[dict], dict]:
    """Concepts (base emoji, no component group) with captions, and per-design source members."""
    eb = {k: json.loads(v) for k, v in read_members(
        tars["emojibase-data"], {"package/en/data.json", "package/meta/groups.json"}).items()}
    meta = eb["package/meta/groups.json"]
    ds_json = tars.get("emoji-datasource-google") or tars.get("emoji-datasource-twitter")
    datasource = json.loads(read_members(ds_json, {"package/emoji.json"})["package/emoji.json"]) if ds_json else []
    ds = {norm_key(e["unified"]): e for e in datasource}
    om = {}
    if "openmoji" in tars:
        om_list = json.loads(read_members(tars["openmoji"], {"package/data/openmoji.json"})["package/data/openmoji.json"])
        om = {norm_key(e["hexcode"]): e for e in om_list if not e.get("skintone")}
    concepts = []
    for e in eb["package/en/data.json"]:
        if "group" not in e or meta["groups"][str(e["group"])] == "component":
            continue
        key = norm_key(e["hexcode"])
        o = om.get(key, {}) if openmoji_text else {}
        concepts.append({
            "key": key, "label": e["label"], "order": e.get("order", 0),
            "group": meta["groups"][str(e["group"])], "subgroup": meta["subgroups"][str(e["subgroup"])],
            "captions": make_captions(e["label"], e.get("tags", []), o.get("annotation", ""),
                                      o.get("openmoji_tags", ""), ds.get(key, {}).get("short_names", [])),
        })
    sources = {"noto": {}, "twemoji": {}, "openmoji": {}, "fluent": {}}
    for key, e in ds.items():
        for design, vendor in (("noto", "google"), ("twemoji", "twitter")):
            if e.get(f"has_img_{vendor}"):
                sources[design][key] = f"package/img/{vendor}/64/{e['image']}"
    for key, e in om.items():
        sources["openmoji"][key] = f"package/color/svg/{e['hexcode']}.svg"
    if "fluentui-emoji" in tars:
        with tarfile.open(tars["fluentui-emoji"], "r:gz") as tar:
            names = {m.name for m in tar}
        for c in concepts:
            for cand in (slug(c["label"]), slug(c["label"]) + "-default"):
                if f"package/icons/flat/{cand}.svg" in names:
                    sources["fluent"][c["key"]] = f"package/icons/flat/{cand}.svg"
    return concepts, sources


def select_concepts(concepts: list[dict], max_concepts: int | None) -> list[dict]:
    """The first ``max_concepts`` of an evenly spaced walk over CLDR order (covers all groups)."""
    if not max_concepts or max_concepts >= len(concepts):
        return concepts
    step = len(concepts) / max_concepts
    return [concepts[int(i * step)] for i in range(max_concepts)]


def build(out: Path, designs=DEFAULT_DESIGNS, cache_dir: Path = DEFAULT_CACHE, max_concepts=None,
          test_frac=0.15, val_frac=0.10, openmoji_text=None, progress=True) -> dict:
    """Build the corpus into ``out`` atomically (a temp folder renamed at the end); return counts."""
    designs = tuple(designs)
    unknown = set(designs) - set(DESIGNS)
    if unknown:
        raise ValueError(f"unknown designs {sorted(unknown)}; choose from {sorted(DESIGNS)}")
    openmoji_text = "openmoji" in designs if openmoji_text is None else openmoji_text
    needed = {"emojibase-data", "emoji-datasource-google"} | {DESIGNS[d][0] for d in designs}
    if openmoji_text:
        needed.add("openmoji")
    tars = fetch(Path(cache_dir), sorted(needed))
    concepts, sources = load_metadata(tars, openmoji_text)
    concepts = [c for c in concepts if any(c["key"] in sources[d] for d in designs)]
    concepts = select_concepts(concepts, max_concepts)
    families = families_with_siblings(concepts)
    sizes = Counter(families.values())
    fixed = {fam: "train" for fam, n in sizes.items() if n > BIG_FAMILY} | {FLAG_FAMILY: FLAG_SPLIT}
    splits = assign_splits({c["key"]: c["subgroup"] for c in concepts}, test_frac, val_frac, families=families,
                           fixed=fixed)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        pngs = {}
        bar = tqdm(total=sum(c["key"] in sources[d] for c in concepts for d in designs), unit="img",
                   desc="emoji", disable=not progress)
        for design in designs:
            (tmp / "images" / design).mkdir(parents=True)
            wanted = {sources[design][c["key"]]: c["key"] for c in concepts if c["key"] in sources[design]}
            for member, data in read_members(tars[DESIGNS[design][0]], set(wanted)).items():
                (tmp / "images" / design / f"{wanted[member]}.png").write_bytes(to_png(data, member.endswith(".svg")))
                pngs[design, wanted[member]] = True
                bar.update()
        bar.close()
        images, sentid = [], 0
        for c in concepts:
            for design in designs:
                if (design, c["key"]) not in pngs:
                    continue
                imgid = len(images)
                sents = [{"raw": raw, "tokens": tokenize(raw), "sentid": sentid + i, "imgid": imgid,
                          "kind": kind, "templated": templ} for i, (raw, kind, templ) in enumerate(c["captions"])]
                sentid += len(sents)
                images.append({"split": splits[c["key"]], "filepath": design, "filename": f"{c['key']}.png",
                               "imgid": imgid, "sentids": [s["sentid"] for s in sents], "sentences": sents,
                               "concept": c["key"], "family": families[c["key"]],
                               "sibling_group": sibling_group(c["key"], c["label"], c["subgroup"]), "design": design,
                               "group": c["group"], "subgroup": c["subgroup"]})
        (tmp / "dataset_emoji.json").write_text(
            json.dumps({"dataset": "emoji", "images": images}, ensure_ascii=False, indent=None) + "\n",
            encoding="utf-8")
        notice = ["Generated by `python -m cookie_lib.study.emoji build` (cookie). Sources and licences:", ""]
        notice += [f"- {d} ({DESIGNS[d][1]}): {DESIGNS[d][2]}" for d in designs]
        notice += [f"- {TEXT_NOTICE}"] + ([f"- {OPENMOJI_TEXT_NOTICE}"] if openmoji_text else [])
        (tmp / "NOTICE").write_text("\n".join(notice) + "\n", encoding="utf-8")
        if out.exists():
            old = out.with_name(out.name + ".old-" + tmp.name.rsplit("-", 1)[-1])
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summarize(images)


def summarize(images: list[dict]) -> dict:
    """Counts per split: images, concepts, captions, and images per design."""
    res = {}
    for split in ("train", "val", "test"):
        imgs = [i for i in images if i["split"] == split]
        res[split] = {"images": len(imgs), "concepts": len({i["concept"] for i in imgs}),
                      "captions": sum(len(i["sentences"]) for i in imgs),
                      **{f"images_{d}": n for d, n in sorted(Counter(i["design"] for i in imgs).items())}}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.emoji", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch the npm packages (cached) and build the corpus")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--designs", default=",".join(DEFAULT_DESIGNS),
                   help=f"comma-separated subset of {','.join(DESIGNS)}")
    b.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    b.add_argument("--max-concepts", type=int, default=None, help="evenly spaced subset (for fixtures)")
    b.add_argument("--test-frac", type=float, default=0.15)
    b.add_argument("--val-frac", type=float, default=0.10)
    b.add_argument("--openmoji-text", action=argparse.BooleanOptionalAction, default=None,
                   help="use OpenMoji annotations/tags as captions (default: only if openmoji is a design)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        counts = build(args.out, [d.strip() for d in args.designs.split(",") if d.strip()], args.cache_dir,
                       args.max_concepts, args.test_frac, args.val_frac, args.openmoji_text)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {args.out} in {time.perf_counter() - t0:.1f} s")
    for split, c in counts.items():
        print(f"{split:5s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    total = {k: sum(c.get(k, 0) for c in counts.values()) for k in ("images", "concepts", "captions")}
    print("total " + "  ".join(f"{k}={v}" for k, v in total.items()))
    return 0


if __name__ == "__main__":
    from ..runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
