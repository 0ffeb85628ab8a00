"""Leakage between the pre-training corpus and the downstream test sets: the checks and their counts.

``downstream_texts`` collects the texts of every downstream test set (``TEST_TEXTS``), ``scrub_captions``
removes the pre-training captions equal to one of them, ``leakage_counts`` counts every overlap (texts,
Open Clip Art titles, emoji families and sibling groups spanning two splits, test images or concepts in
pre-training) and ``check_leakage`` raises on a "must be 0" count that is not. ``built_leakage`` reads
the corpora built under data/. Texts are compared after ``common.norm_text``.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .common import DATA_DIR, norm_text, unprefixed

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
    from .families import sibling_group

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
    groups (``families.sibling_group``) spanning two splits; test images or emoji test concepts in
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
        {unprefixed(i["concept"]) for i in pretrain_doc["images"] if i.get("corpus") == "emoji"} & emoji_test)
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
