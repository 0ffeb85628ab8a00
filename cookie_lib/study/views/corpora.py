"""What notebook 01 shows of a run profile's corpora: counts, leak checks, caption kinds, contact sheets,
the WordNet task, and the notebook's closing text (``conclusion``, generated from those tables).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..corpora.common import unprefixed
from ..corpora.leakage import leakage_counts


def corpus_paths(study) -> dict[str, Path]:
    """The study's data files of a run profile: the pre-training corpus and each configured downstream set."""
    from ...config import resolve_path

    paths = {"pretrain": resolve_path(study.config.data.dataset)}
    for name, value in (("emoji", study.downstream_emoji), ("openclipart", study.downstream_oca),
                        ("wordnet", study.downstream_wordnet)):
        if value:
            paths[name] = resolve_path(value)
    return paths


def _corpora(study) -> dict:
    """Validated KarpathyCorpus per image corpus of the run (every image decoded once)."""
    from ...config import resolve_path
    from ...data import validate_karpathy

    root = study.config.data.image_root
    out = {}
    for name, path in corpus_paths(study).items():
        if name != "wordnet":
            out[name] = validate_karpathy(path, resolve_path(root) if name == "pretrain" and root else None)
    return out


def counts_table(study):
    """Images, captions and keys (concepts) per corpus and split, as a DataFrame indexed by (corpus, split)."""
    import pandas as pd

    rows = [{"corpus": name, "split": split, **c} for name, corpus in _corpora(study).items()
            for split, c in sorted(corpus.counts().items(), key=lambda kv: ("train", "val", "test").index(kv[0])
                                   if kv[0] in ("train", "val", "test") else 9)]
    return pd.DataFrame(rows).set_index(["corpus", "split"])


def leak_check(study) -> dict[str, int]:
    """Counts that must be 0 for the protocol to hold: downstream test images or emoji test concepts in the
    pre-training corpus, emoji families spanning two splits and, with both image corpora, the other
    "must be 0" checks of ``leakage_counts`` (caption overlaps, titles, sibling groups); plus Open Clip
    Art drawings dropped as near-copies of an emoji design (informative)."""
    corpora = _corpora(study)
    pre = [r for r in corpora["pretrain"].records if r.split != "test"]  # what training reads: train (+restval), val
    pre_paths = {r.path.resolve() for r in pre}
    pre_keys = {unprefixed(r.key) for r in pre}
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
        wn = corpus_paths(study).get("wordnet")
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


def caption_kind_table(study):
    """Captions per corpus and kind, with the share within the corpus and whether the kind is templated."""
    import pandas as pd

    from .figures import caption_kinds

    frames = [caption_kinds(c).assign(corpus=name) for name, c in _corpora(study).items() if name != "pretrain"]
    return pd.concat(frames).set_index(["corpus", "kind"])


def contact_sheets(study) -> dict:
    """Figures: the emoji designs of a few concepts with their captions; Open Clip Art drawings with titles."""
    from .figures import contact_sheet, drawing_sheet

    corpora = _corpora(study)
    sheets = {}
    if "emoji" in corpora:
        sheets["emoji"] = contact_sheet(corpora["emoji"], n_concepts=8)
    if "openclipart" in corpora:
        sheets["openclipart"] = drawing_sheet(corpora["openclipart"].split("train"), n=24)
    return sheets


def wordnet_summary(study):
    """The WordNet task in numbers and three example pairs (lemma -> gloss), as a two-column DataFrame."""
    import pandas as pd

    path = corpus_paths(study).get("wordnet")
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
