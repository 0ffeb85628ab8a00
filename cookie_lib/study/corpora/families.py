"""Emoji families and sibling groups: the blocks of concepts that must share a split.

A family is the set of variants of one base emoji (gendered and skin-tone forms, flags, keycaps, clock
faces: ``emoji_family``); a sibling group is one design recoloured, resized, mirrored or numbered
(``sibling_group``). ``families_with_siblings`` merges both into the family ids that
``splits.assign_splits`` keeps whole, and ``fixed_splits`` pins the big families (flags and every family
of more than ``BIG_FAMILY`` concepts) to train.
"""
from __future__ import annotations

from collections import Counter

from .common import tokenize

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
      balanced (as every family of more than ``BIG_FAMILY`` concepts, see ``fixed_splits``).
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


def fixed_splits(families: dict[str, str]) -> dict[str, str]:
    """{family id: split} pinned before the hashed split (``families`` maps key -> family id): every family
    of more than ``BIG_FAMILY`` concepts -> train, and the flags -> ``FLAG_SPLIT``."""
    sizes = Counter(families.values())
    return {fam: "train" for fam, n in sizes.items() if n > BIG_FAMILY} | {FLAG_FAMILY: FLAG_SPLIT}
