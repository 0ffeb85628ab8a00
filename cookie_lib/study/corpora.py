"""The combined pre-training corpus (Open Clip Art + emoji train concepts) and a build-everything CLI.

Usage::

    python -m cookie_lib.study.corpora build [--data-dir data] [--force]

builds, in order and only what is missing (``--force``: all of them again): ``data/emoji``
(emoji corpus), ``data/openclipart`` (de-duplicated against the emoji images), ``data/wordnet``
(WordNet lemma -> gloss task) and ``data/pretrain/dataset_pretrain.json``.

The pre-training JSON references the images of the two corpora instead of copying them: every
``filepath`` is relative to the image root ``data/`` (the folder holding both corpora), e.g.
``emoji/images/noto`` or ``openclipart/images/food/fruit``. Load it with
``load_karpathy("data/pretrain/dataset_pretrain.json", image_root="data")`` (``image_root`` is also
stored in the JSON, relative to the JSON's folder: ``".."``). Splits: train = Open Clip Art train +
emoji train concepts, val = Open Clip Art val + emoji val concepts; no test image of either corpus
ever appears. Keys (``concept``) are prefixed by corpus (``emoji:1F600``, ``oca:oca-1a2b...``) so
they cannot collide, and every record keeps ``corpus`` ("emoji" or "openclipart").

Leakage: before writing, every pre-training caption whose text (``norm_text``) equals a downstream test
text (an emoji test caption, an Open Clip Art test caption, a WordNet query lemma or gloss) is removed
(an image left without captions is dropped), and ``leakage_counts`` is checked: the build raises
ValueError naming the counts and examples if any check that must be 0 is not. ::

    python -m cookie_lib.study.corpora leakage [--data-dir data] [--write-readme]

prints the leakage table of the built corpora (``--write-readme``: also into data/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .emoji import DEFAULT_CACHE
from .openclipart import norm_text

DATA_DIR = DEFAULT_CACHE.parent  # the repository's data/
PRETRAIN_SPLITS = ("train", "val")  # the test splits are downstream evaluation data only
PREFIX = {"emoji": "emoji:", "openclipart": "oca:"}


def _records(json_path: Path, corpus: str, image_root: Path) -> list[dict]:
    """Train/val records of one corpus with filepath re-rooted at ``image_root`` and prefixed keys."""
    folder = json_path.parent
    images = json.loads(json_path.read_text(encoding="utf-8"))["images"]
    out = []
    for img in images:
        if img["split"] not in PRETRAIN_SPLITS:
            continue
        rel = os.path.relpath(folder / "images" / img.get("filepath", ""), image_root)
        if rel.startswith(".."):
            raise ValueError(f"{json_path}: images are not under the image root {image_root}")
        rec = {k: v for k, v in img.items() if k not in ("imgid", "sentids", "sentences", "filepath", "concept")}
        rec.update({"filepath": Path(rel).as_posix(), "corpus": corpus,
                    "concept": PREFIX[corpus] + str(img.get("concept", img["imgid"])),
                    "source_imgid": img["imgid"], "sentences": img["sentences"]})
        out.append(rec)
    return out


def build_pretrain(out: Path = DATA_DIR / "pretrain", emoji: Path = DATA_DIR / "emoji",
                   openclipart: Path = DATA_DIR / "openclipart", image_root: Path | None = None,
                   wordnet: Path | None = None) -> dict:
    """Write ``<out>/dataset_pretrain.json`` atomically and validate it; return counts per split and corpus.

    ``emoji`` and ``openclipart`` are the built corpus folders; ``image_root`` (default: ``out``'s
    parent, i.e. data/) must contain both; ``wordnet`` (optional) the built WordNet task folder, whose
    lemmas and glosses are then also removed from and checked against the pre-training captions.
    Captions equal to a downstream test text are removed (``scrub_captions``) and the leakage checks
    must pass (``check_leakage``, ValueError otherwise). imgids and sentids are renumbered 0..N-1 in
    the order Open Clip Art then emoji; ``source_imgid`` keeps the imgid in the source corpus. The
    JSON's ``"build"`` holds the removal counts.
    """
    t0 = time.perf_counter()
    out = Path(out)
    image_root = Path(image_root) if image_root is not None else out.parent
    sources = [(Path(openclipart) / "dataset_openclipart.json", "openclipart"),
               (Path(emoji) / "dataset_emoji.json", "emoji")]
    if wordnet is not None:
        sources.append((Path(wordnet) / "wordnet_task.json", "wordnet"))
    for path, name in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the {name} corpus first "
                                    f"(python -m cookie_lib.study.corpora build)")
    docs = {name: json.loads(path.read_text(encoding="utf-8")) for path, name in sources}
    images = [r for path, name in sources if name != "wordnet" for r in _records(path, name, image_root.resolve())]
    banned = downstream_texts(docs["emoji"], docs["openclipart"], docs.get("wordnet"))
    images, removed = scrub_captions(images, banned)
    sentid = 0
    for imgid, img in enumerate(images):
        img["imgid"] = imgid
        img["sentences"] = [dict(s, imgid=imgid, sentid=sentid + i) for i, s in enumerate(img["sentences"])]
        img["sentids"] = [s["sentid"] for s in img["sentences"]]
        sentid += len(img["sentences"])
    rel_root = os.path.relpath(image_root.resolve(), out.resolve())
    doc = {"dataset": "pretrain", "image_root": Path(rel_root).as_posix(), "images": images, "build": removed}
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="dataset_pretrain.json.tmp-", dir=out)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
            fh.write("\n")
        # cookie_lib.data.validate_karpathy demands a test split, which pre-training must not have:
        # the source corpora were validated when built, so check the merge itself and the files
        check_pretrain(doc, image_root)
        check_leakage(leakage_counts(doc, docs["emoji"], docs["openclipart"], docs.get("wordnet")))
        Path(tmp).replace(out / "dataset_pretrain.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    counts = {split: dict(Counter(i["corpus"] for i in images if i["split"] == split)) for split in PRETRAIN_SPLITS}
    return {"splits": counts, "images": len(images), "removed": removed, "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------- leakage
TEST_TEXTS = ("emoji test caption", "Open Clip Art test caption", "WordNet query (lemma)", "WordNet candidate (gloss)")


def downstream_texts(emoji_doc: dict, oca_doc: dict, wordnet_doc: dict | None = None) -> dict[str, set[str]]:
    """{test set name (``TEST_TEXTS``): set of its texts after ``norm_text``}: every caption of the emoji
    and Open Clip Art test images, and (with ``wordnet_doc``) every WordNet query and candidate."""
    out = {TEST_TEXTS[0]: {norm_text(s["raw"]) for i in emoji_doc["images"] if i["split"] == "test"
                           for s in i["sentences"]},
           TEST_TEXTS[1]: {norm_text(s["raw"]) for i in oca_doc["images"] if i["split"] == "test"
                           for s in i["sentences"]}}
    if wordnet_doc is not None:
        out[TEST_TEXTS[2]] = {norm_text(q["text"]) for q in wordnet_doc["queries"]}
        out[TEST_TEXTS[3]] = {norm_text(c["text"]) for c in wordnet_doc["candidates"]}
    return {k: v - {""} for k, v in out.items()}


def scrub_captions(images: list[dict], banned: dict[str, set[str]]) -> tuple[list[dict], dict]:
    """Remove every caption whose ``norm_text`` is in one of the ``banned`` sets; drop images left without one.

    Returns (kept images, report) with report = {"captions_removed": {test set: n}, "captions_removed_total",
    "images_dropped", "examples": up to 10 removed texts}. A caption equal to texts of several test sets
    counts once per set. Why remove the pre-training caption, not the test one: the test sets stay as
    built (their numbers comparable), and a removed caption costs one of an image's 1-6 captions.
    """
    per_set, total, examples, kept, dropped = Counter(), 0, [], [], 0
    for img in images:
        sents = []
        for s in img["sentences"]:
            hit = [name for name, texts in banned.items() if norm_text(s["raw"]) in texts]
            if hit:
                per_set.update(hit)
                total += 1
                if len(examples) < 10 and s["raw"] not in examples:
                    examples.append(s["raw"])
            else:
                sents.append(s)
        if sents:
            kept.append(dict(img, sentences=sents))
        else:
            dropped += 1
    return kept, {"captions_removed": {k: per_set[k] for k in banned}, "captions_removed_total": total,
                  "images_dropped": dropped, "examples": examples}


def phrases_in(text: str, phrases: set[str], longest: int | None = None) -> set[str]:
    """The members of ``phrases`` (``norm_text`` strings) that occur in ``norm_text`` string ``text`` as
    whole words: every contiguous word n-gram of ``text`` (n up to ``longest``, default the longest
    phrase's word count; pass it when calling for many texts) looked up in the set."""
    words = text.split()
    if longest is None:
        longest = max((p.count(" ") + 1 for p in phrases), default=0)
    return {g for i in range(len(words)) for n in range(1, min(longest, len(words) - i) + 1)
            if (g := " ".join(words[i:i + n])) in phrases}


def _longest(phrases: set[str]) -> int:
    return max((p.count(" ") + 1 for p in phrases), default=0)


def _emoji_concepts(emoji_doc: dict) -> dict[str, dict]:
    """{concept: {"split": set, "family", "sibling"}} from the built emoji records (the sibling group is
    recomputed from the CLDR label caption, so a corpus built before the sibling rule fails the check)."""
    from .emoji import sibling_group

    out: dict[str, dict] = {}
    for img in emoji_doc["images"]:
        c = out.setdefault(img["concept"], {"split": set(), "family": img.get("family", img["concept"])})
        c["split"].add(img["split"])
        label = next((s["raw"] for s in img["sentences"] if s.get("kind") == "cldr_label"), img["sentences"][0]["raw"])
        c["sibling"] = sibling_group(img["concept"], label, img.get("subgroup", ""))
    return out


def _a(name: str) -> str:
    return ("an " if name[0] in "aeiouAEIOU" else "a ") + name


def _spanning(groups: dict[str, set]) -> list[str]:
    return sorted(g for g, splits in groups.items() if len(splits) > 1)


def leakage_counts(pretrain_doc: dict, emoji_doc: dict, oca_doc: dict, wordnet_doc: dict | None = None) -> dict:
    """Leakage between the pre-training corpus and the downstream test sets: {check: {"count", "rule",
    "examples"}}, rule "must be 0" (``check_leakage`` raises otherwise), "reported" or "removed".

    Texts are compared after ``norm_text``. Checks: pre-training captions equal to each downstream test
    text (``TEST_TEXTS``); pre-training captions containing a WordNet gloss as a whole-word substring;
    Open Clip Art titles shared by a test drawing and a train/val drawing; emoji families and sibling
    groups (``emoji.sibling_group``) spanning two splits; test images or emoji test concepts in
    pre-training. Reported: pre-training captions containing a WordNet query lemma as whole words and
    the number of distinct lemmas found (ordinary nouns such as "smile" or "mammal": the lemma -> gloss
    pairing, which the task tests, is what must not be trained, and no gloss occurs). Removed: the
    ``"build"`` report of ``scrub_captions`` stored in the pre-training JSON.
    """
    pre_norm = [norm_text(s["raw"]) for i in pretrain_doc["images"] for s in i["sentences"]]
    out: dict[str, dict] = {}

    def add(name, hits, rule="must be 0", count=None):
        hits = list(hits)
        out[name] = {"count": len(hits) if count is None else count, "rule": rule, "examples": sorted(set(hits))[:5]}

    for name, texts in downstream_texts(emoji_doc, oca_doc, wordnet_doc).items():
        add(f"pre-training captions equal to {_a(name)}", (c for c in pre_norm if c in texts))
    if wordnet_doc is not None:
        glosses = downstream_texts(emoji_doc, oca_doc, wordnet_doc)[TEST_TEXTS[3]]
        n = _longest(glosses)
        add("pre-training captions containing a WordNet gloss", (c for c in pre_norm if phrases_in(c, glosses, n)))
    titles: dict[str, set] = {}
    for i in oca_doc["images"]:
        for s in i["sentences"]:
            if s.get("kind") == "title" and norm_text(s["raw"]):
                titles.setdefault(norm_text(s["raw"]), set()).add("test" if i["split"] == "test" else "pre")
    add("Open Clip Art titles on both sides of the test split", _spanning(titles))
    concepts = _emoji_concepts(emoji_doc)
    fam: dict[str, set] = {}
    sib: dict[str, set] = {}
    for c in concepts.values():
        fam.setdefault(c["family"], set()).update(c["split"])
        sib.setdefault(c["sibling"], set()).update(c["split"])
    add("emoji families spanning two splits", _spanning(fam))
    add("emoji sibling groups spanning two splits", _spanning(sib))
    test_files = {f"emoji/images/{i['filepath']}/{i['filename']}" for i in emoji_doc["images"] if i["split"] == "test"}
    test_files |= {f"openclipart/images/{i['filepath']}/{i['filename']}" for i in oca_doc["images"]
                   if i["split"] == "test"}
    add("downstream test images in pre-training",
        (f"{i['filepath']}/{i['filename']}" for i in pretrain_doc["images"]
         if f"{i['filepath']}/{i['filename']}" in test_files))
    emoji_test = {k for k, c in concepts.items() if "test" in c["split"]}
    add("emoji test concepts in pre-training",
        {_unprefixed(i["concept"]) for i in pretrain_doc["images"] if i.get("corpus") == "emoji"} & emoji_test)
    if wordnet_doc is not None:
        lemmas = downstream_texts(emoji_doc, oca_doc, wordnet_doc)[TEST_TEXTS[2]]
        n = _longest(lemmas)
        per_caption = [phrases_in(c, lemmas, n) for c in pre_norm]
        found = [m for hits in per_caption for m in hits]
        add("pre-training captions containing a WordNet lemma (whole words)",
            (c for c, hits in zip(pre_norm, per_caption) if hits), rule="reported")
        add("distinct WordNet lemmas occurring in pre-training captions", set(found), rule="reported")
    build = pretrain_doc.get("build", {})
    for name, n in build.get("captions_removed", {}).items():
        add(f"pre-training captions removed: equal to {_a(name)}", (), rule="removed", count=n)
    if build:
        add("pre-training images dropped (no caption left)", (), rule="removed", count=build.get("images_dropped", 0))
    return out


def check_leakage(counts: dict) -> None:
    """Raise ValueError naming every "must be 0" check of ``leakage_counts`` that is not 0, with examples."""
    bad = {k: v for k, v in counts.items() if v["rule"] == "must be 0" and v["count"]}
    if bad:
        raise ValueError("leakage between pre-training and the downstream test sets: " + "; ".join(
            f"{k}: {v['count']} (e.g. {v['examples'][:3]})" for k, v in bad.items())
            + " - rebuild the corpora with the current code (python -m cookie_lib.study.corpora build --force)")


def leakage_table(counts: dict) -> str:
    """The leakage counts as a Markdown table (check | count | rule)."""
    lines = ["| check | count | rule |", "|---|---|---|"]
    lines += [f"| {k} | {v['count']:,} | {v['rule']} |" for k, v in counts.items()]
    return "\n".join(lines) + "\n"


README_BEGIN, README_END = "<!-- leakage table: begin (python -m cookie_lib.study.corpora leakage --write-readme) -->", \
    "<!-- leakage table: end -->"


def built_leakage(data_dir: Path = DATA_DIR) -> dict:
    """``leakage_counts`` of the corpora built under ``data_dir`` (FileNotFoundError naming a missing one)."""
    data_dir = Path(data_dir)
    paths = {"pretrain": data_dir / "pretrain" / "dataset_pretrain.json",
             "emoji": data_dir / "emoji" / "dataset_emoji.json",
             "openclipart": data_dir / "openclipart" / "dataset_openclipart.json",
             "wordnet": data_dir / "wordnet" / "wordnet_task.json"}
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the corpora first (python -m cookie_lib.study.corpora build)")
    docs = {k: json.loads(p.read_text(encoding="utf-8")) for k, p in paths.items()}
    return leakage_counts(docs["pretrain"], docs["emoji"], docs["openclipart"], docs["wordnet"])


def write_readme_table(counts: dict, readme: Path = DATA_DIR / "README.md") -> None:
    """Replace the text between ``README_BEGIN`` and ``README_END`` of ``readme`` with ``leakage_table``."""
    text = Path(readme).read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: markers {README_BEGIN!r} ... {README_END!r} not found")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    Path(readme).write_text(head + README_BEGIN + "\n" + leakage_table(counts) + README_END + tail, encoding="utf-8")


def check_pretrain(doc: dict, image_root: Path | None = None) -> None:
    """Raise ValueError if the pre-training document has a test image, colliding keys or bad records.

    Checks: only train/val splits; every key starts with its corpus's prefix; unique imgids and
    sentids; sentences non-empty. With ``image_root`` also every image file exists.
    """
    problems = []
    if {i["split"] for i in doc["images"]} - set(PRETRAIN_SPLITS):
        problems.append(f"splits other than {PRETRAIN_SPLITS}: {sorted({i['split'] for i in doc['images']})}")
    for i in doc["images"]:
        if not i["concept"].startswith(PREFIX.get(i.get("corpus"), "\0")):
            problems.append(f"imgid {i['imgid']}: key {i['concept']!r} lacks the prefix of corpus {i.get('corpus')!r}")
        if not i["sentences"] or any(not s["raw"].strip() for s in i["sentences"]):
            problems.append(f"imgid {i['imgid']}: empty caption")
        if image_root is not None and not (Path(image_root) / i["filepath"] / i["filename"]).is_file():
            problems.append(f"imgid {i['imgid']}: missing image {Path(image_root) / i['filepath'] / i['filename']}")
    ids = [i["imgid"] for i in doc["images"]]
    sids = [s["sentid"] for i in doc["images"] for s in i["sentences"]]
    if len(set(ids)) != len(ids) or len(set(sids)) != len(sids):
        problems.append("duplicate imgid or sentid")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the pre-training corpus: " + "; ".join(problems[:10]))


def build_all(data_dir: Path = DATA_DIR, force: bool = False, progress: bool = True) -> dict:
    """Build emoji, openclipart, wordnet and pretrain under ``data_dir`` in order, skipping built ones.

    A rebuilt emoji corpus also rebuilds openclipart (its de-duplication reads the emoji images) and
    pretrain; a rebuilt openclipart rebuilds pretrain.
    """
    from cookie_lib.study import emoji, openclipart, wordnet

    data_dir = Path(data_dir)
    cache = data_dir / ".cache"
    done = {}
    needs = {"openclipart": {"emoji"}, "pretrain": {"emoji", "openclipart", "wordnet"}}
    steps = [
        ("emoji", data_dir / "emoji" / "dataset_emoji.json",
         lambda: emoji.build(data_dir / "emoji", cache_dir=cache, progress=progress)),
        ("openclipart", data_dir / "openclipart" / "dataset_openclipart.json",
         lambda: openclipart.build(data_dir / "openclipart", cache_dir=cache,
                                   emoji_images=data_dir / "emoji" / "images", progress=progress)),
        ("wordnet", data_dir / "wordnet" / "wordnet_task.json",
         lambda: wordnet.build(data_dir / "wordnet", cache_dir=cache)),
        ("pretrain", data_dir / "pretrain" / "dataset_pretrain.json",
         lambda: build_pretrain(data_dir / "pretrain", data_dir / "emoji", data_dir / "openclipart", data_dir,
                                wordnet=data_dir / "wordnet")),
    ]
    for name, marker, step in steps:
        if marker.exists() and not force and not needs.get(name, set()) & set(done):
            print(f"{name}: {marker.relative_to(data_dir.parent) if marker.is_relative_to(data_dir.parent) else marker} "
                  "exists, skipped")
            continue
        t0 = time.perf_counter()
        done[name] = step()
        print(f"{name}: built in {time.perf_counter() - t0:.1f} s")
    return done


# ----------------------------------------------------------------------------- what notebook 01 shows
def corpus_paths(run) -> dict[str, Path]:
    """The study's data files of a run profile: the pre-training corpus and each configured downstream set."""
    from ..config import resolve_path

    paths = {"pretrain": resolve_path(run.config.data.dataset)}
    for name, value in (("emoji", run.downstream_emoji), ("openclipart", run.downstream_oca),
                        ("wordnet", run.downstream_wordnet)):
        if value:
            paths[name] = resolve_path(value)
    return paths


def _corpora(run) -> dict:
    """Validated KarpathyCorpus per image corpus of the run (every image decoded once)."""
    from ..config import resolve_path
    from ..data import validate_karpathy

    root = run.config.data.image_root
    out = {}
    for name, path in corpus_paths(run).items():
        if name != "wordnet":
            out[name] = validate_karpathy(path, resolve_path(root) if name == "pretrain" and root else None)
    return out


def counts_table(run):
    """Images, captions and keys (concepts) per corpus and split, as a DataFrame indexed by (corpus, split)."""
    import pandas as pd

    rows = [{"corpus": name, "split": split, **c} for name, corpus in _corpora(run).items()
            for split, c in sorted(corpus.counts().items(), key=lambda kv: ("train", "val", "test").index(kv[0])
                                   if kv[0] in ("train", "val", "test") else 9)]
    return pd.DataFrame(rows).set_index(["corpus", "split"])


def _unprefixed(key: str) -> str:
    for prefix in PREFIX.values():
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def leak_check(run) -> dict[str, int]:
    """Counts that must be 0 for the protocol to hold: downstream test images or emoji test concepts in the
    pre-training corpus, emoji families spanning two splits and, with both image corpora, the other
    "must be 0" checks of ``leakage_counts`` (caption overlaps, titles, sibling groups); plus Open Clip
    Art drawings dropped as near-copies of an emoji design (informative)."""
    corpora = _corpora(run)
    pre = [r for r in corpora["pretrain"].records if r.split != "test"]  # what training reads: train (+restval), val
    pre_paths = {r.path.resolve() for r in pre}
    pre_keys = {_unprefixed(r.key) for r in pre}
    test_paths, emoji_test_keys = set(), set()
    for name in ("emoji", "openclipart"):
        if name in corpora and any(r.split == "test" for r in corpora[name].records):
            recs = corpora[name].split("test")
            test_paths |= {r.path.resolve() for r in recs}
            if name == "emoji":
                emoji_test_keys = {r.key for r in recs}
    out = {"downstream images in pre-training": len(test_paths & pre_paths),
           "emoji test concepts in pre-training": len(emoji_test_keys & pre_keys)}
    if "emoji" in corpora:
        doc = json.loads(corpora["emoji"].json_path.read_text(encoding="utf-8"))
        splits: dict[str, set] = {}
        for img in doc["images"]:
            splits.setdefault(img.get("family", img.get("concept", img["imgid"])), set()).add(img["split"])
        out["families spanning splits"] = sum(len(s) > 1 for s in splits.values())
    if "emoji" in corpora and "openclipart" in corpora:
        # the caption, title and sibling checks of the build (leakage_counts), those that must be 0
        wn = corpus_paths(run).get("wordnet")
        docs = [json.loads(corpora[n].json_path.read_text(encoding="utf-8")) for n in ("pretrain", "emoji", "openclipart")]
        docs.append(json.loads(wn.read_text(encoding="utf-8")) if wn is not None else None)
        for name, v in leakage_counts(*docs).items():
            if v["rule"] == "must be 0" and name not in ("downstream test images in pre-training",
                                                         "emoji test concepts in pre-training",
                                                         "emoji families spanning two splits"):
                out[name] = v["count"]
    if "openclipart" in corpora:
        doc = json.loads(corpora["openclipart"].json_path.read_text(encoding="utf-8"))
        out["Open Clip Art near-copies of emoji dropped"] = len(doc.get("build", {}).get("near_emoji", []))
    return out


def caption_kind_table(run):
    """Captions per corpus and kind, with the share within the corpus and whether the kind is templated."""
    import pandas as pd

    from .plots import caption_kinds

    frames = [caption_kinds(c).assign(corpus=name) for name, c in _corpora(run).items() if name != "pretrain"]
    return pd.concat(frames).set_index(["corpus", "kind"])


def contact_sheets(run) -> dict:
    """Figures: the emoji designs of a few concepts with their captions; Open Clip Art drawings with titles."""
    from .plots import contact_sheet, drawing_sheet

    corpora = _corpora(run)
    sheets = {}
    if "emoji" in corpora:
        sheets["emoji"] = contact_sheet(corpora["emoji"], n_concepts=8)
    if "openclipart" in corpora:
        sheets["openclipart"] = drawing_sheet(corpora["openclipart"].split("train"), n=24)
    return sheets


def wordnet_summary(run):
    """The WordNet task in numbers and three example pairs (lemma -> gloss), as a two-column DataFrame."""
    import pandas as pd

    path = corpus_paths(run).get("wordnet")
    if path is None:
        return pd.DataFrame({"value": []})
    doc = json.loads(path.read_text(encoding="utf-8"))
    gloss = dict((c["key"], c["text"]) for c in doc["candidates"])
    rows = {"queries (lemmas)": len(doc["queries"]), "candidates (glosses)": len(doc["candidates"]),
            "held-out synsets / eligible / all nouns": f"{doc.get('n_synsets')} / {doc.get('eligible_synsets')} / "
                                                       f"{doc.get('total_synsets')}",
            "source": doc.get("source", "")}
    for i, q in enumerate(doc["queries"][:3]):
        rows[f"example {i + 1}"] = f"{q['text']} -> {gloss[q['key']]}"
    return pd.DataFrame({"value": rows})


def conclusion(counts, leaks: dict, wordnet) -> str:
    """The notebook's closing text, generated from its own tables."""
    pre = counts.loc["pretrain"]
    n_pre = int(pre["images"].sum())
    lines = [f"- The pre-training corpus holds {n_pre:,} images ({', '.join(f'{s}: {int(n):,}' for s, n in pre['images'].items())})."]
    for name in ("emoji", "openclipart"):
        if name in counts.index.get_level_values(0) and "test" in counts.loc[name].index:
            t = counts.loc[(name, "test")]
            lines.append(f"- Downstream {name} test set: {int(t['images']):,} images of {int(t['keys']):,} concepts.")
    if len(wordnet):
        lines.append(f"- WordNet: {wordnet.loc['queries (lemmas)', 'value']:,} lemma -> gloss queries, no loss trains on them.")
    bad = {k: v for k, v in leaks.items() if "dropped" not in k and v}
    lines.append("- Leak checks: " + ("all zero (" + ", ".join(k for k in leaks if "dropped" not in k) + ")."
                                      if not bad else f"**FAILED** {bad}"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.corpora", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every missing corpus/task, then the pre-training corpus")
    b.add_argument("--data-dir", type=Path, default=DATA_DIR)
    b.add_argument("--force", action="store_true", help="rebuild everything")
    lk = sub.add_parser("leakage", help="print the leakage table of the built corpora")
    lk.add_argument("--data-dir", type=Path, default=DATA_DIR)
    lk.add_argument("--write-readme", action="store_true", help="also write it into data/README.md")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "leakage":
            counts = built_leakage(args.data_dir)
            print(leakage_table(counts), end="")
            for k, v in counts.items():
                if v["examples"]:
                    print(f"  {k}: e.g. {v['examples']}")
            if args.write_readme:
                write_readme_table(counts)
            check_leakage(counts)
            return 0
        build_all(args.data_dir, args.force)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
