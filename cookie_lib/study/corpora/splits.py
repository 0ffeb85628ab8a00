"""Train/val/test splits of the image corpora: seeded, stratified, whole families at a time.

``assign_splits`` splits the emoji concepts (stratified by CLDR subgroup, grouped by family) and the
Open Clip Art caption sets (stratified by category, grouped by near-duplicate unit). The split of a
concept depends only on a seeded SHA-256 hash of the ids (``stable_unit``), never on Python's salted
``hash`` or on input order, so rebuilding gives byte-identical files.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

SEED = "cookie-emoji-v1"  # the seed of both corpora's splits (first used by the emoji corpus)


def stable_unit(*parts: str) -> float:
    """Deterministic number in [0, 1) from a seeded SHA-256 (unlike Python's salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join((SEED,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


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
