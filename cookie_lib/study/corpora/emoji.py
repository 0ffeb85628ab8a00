"""Build the emoji image-text corpus (Karpathy format) from npm packages, offline-reproducibly.

The corpus is the same emoji concept (e.g. "beer mug") drawn by independent designers (Noto,
Twemoji, OpenMoji, Fluent), described by human-written Unicode CLDR text. Usage::

    python -m cookie_lib.study.corpora.emoji build --out data/emoji [--designs noto,twemoji,openmoji,fluent]
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
The family and sibling rules are in :mod:`.families`, the split in :mod:`.splits`; this module fetches
the packages, normalises the keys, writes the captions and renders the images.
"""
from __future__ import annotations

import argparse
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
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .common import DEFAULT_CACHE, tokenize
from .families import families_with_siblings, fixed_splits, sibling_group
from .splits import assign_splits

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
DEFAULT_DESIGNS = ("noto", "twemoji", "openmoji", "fluent")
TEXT_NOTICE = (
    "Captions: Unicode CLDR annotations (Unicode License v3, https://www.unicode.org/license.txt) via "
    "emojibase-data 17.0.0 (MIT, Miles Johnson); short names from emoji-datasource 16.0.0 (MIT, Cal Henderson).")
OPENMOJI_TEXT_NOTICE = "OpenMoji annotations and tags (openmoji 17.0.0, CC-BY-SA 4.0) are used as extra captions."
SIZE = 64
TEMPLATES = ("an emoji of {label}", "a drawing of the {label} emoji", "an icon showing {label}",
             "a picture of {label}", "{label}, drawn as an emoji")


def norm_key(hexcode: str) -> str:
    """Normalise a code-point sequence ("1f44d-fe0f" or "1F44D") to the corpus KEY ("1F44D")."""
    return "-".join(p for p in hexcode.upper().replace("_", "-").split("-") if p and p != "FE0F")


def slug(label: str) -> str:
    """Fluent file-name slug of a CLDR label: "A button (blood type)" -> "a-button-blood-type"."""
    s = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower().replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


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
    splits = assign_splits({c["key"]: c["subgroup"] for c in concepts}, test_frac, val_frac, families=families,
                           fixed=fixed_splits(families))

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
        notice = ["Generated by `python -m cookie_lib.study.corpora.emoji build` (cookie). Sources and licences:", ""]
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
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora.emoji",
                                 description=__doc__.split("\n")[0])
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
    from ...runtime import cli  # error: <message>, exit 2 for user errors
    cli(main)
