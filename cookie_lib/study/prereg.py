"""The pre-registration: ``docs/preregistration.yaml``, its hash and the structure the claims rely on.

The contrasts that decide the paper's claims live in ``docs/preregistration.yaml`` (committed before the
study runs; :func:`prereg_sha256` gives the hash the study records). Each contrast compares variant ``a``
with variant ``b`` on one metric, in the paper's direction (``a > b`` or ``a < b``), with a smallest effect
size of interest (SESOI, points), and belongs to one family: ``primary`` (Holm-adjusted; decides the
paper's claims), ``secondary`` (exploratory) or ``sanity``. A metric may be the mean of several per-query
lists (``metrics``, :func:`metric_lists`); ``claims`` joins primary contrasts into one claim of the paper
under a rule (``any`` or ``all``; :func:`cookie_lib.study.verdicts.claim_verdicts`); ``alpha``, ``power``,
``confidence`` and ``min_seeds`` fix the tests (:mod:`cookie_lib.study.stats`).

    from cookie_lib.study.prereg import load_prereg, prereg_sha256
    pre = load_prereg()          # validated, with "sha256" and "path" added
    assert pre["sha256"] == prereg_sha256()
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import yaml

DEFAULT_PREREG = Path(__file__).resolve().parents[2] / "docs" / "preregistration.yaml"
FAMILIES = ("primary", "secondary", "sanity")
DIRECTIONS = {"a > b": 1, "a < b": -1}
REQUIRED_FIELDS = ("id", "family", "claim", "a", "b", "metric", "direction", "sesoi", "sesoi_reason", "paper")
CLAIM_RULES = ("any", "all")


def prereg_sha256(path: str | Path = DEFAULT_PREREG) -> str:
    """sha256 (hex) of the pre-registration file's bytes: the study records it next to claims.csv."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_prereg(path: str | Path = DEFAULT_PREREG) -> dict:
    """Read and check the pre-registration YAML; returns the dict with ``sha256`` and ``path`` added.

    Raises ``ValueError`` naming the file and the contrast when a required field is missing or invalid
    (family, direction, a positive numeric SESOI, unique ids, a non-empty primary family)."""
    path = Path(path)
    try:
        prereg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the pre-registration: {e}") from e
    validate_prereg(prereg, source=str(path))
    return {**prereg, "sha256": prereg_sha256(path), "path": str(path)}


def validate_prereg(prereg: Mapping, source: str = "pre-registration") -> None:
    """Check the structure :func:`load_prereg` relies on; raise ``ValueError`` naming what is wrong."""
    if not isinstance(prereg, Mapping) or not isinstance(prereg.get("contrasts"), list):
        raise ValueError(f"{source}: needs a top-level 'contrasts' list")
    for key in ("alpha", "power", "confidence"):
        if not isinstance(prereg.get(key), (int, float)) or not 0 < prereg[key] < 1:
            raise ValueError(f"{source}: '{key}' must be a number in (0, 1), got {prereg.get(key)!r}")
    seen = set()
    for i, c in enumerate(prereg["contrasts"]):
        name = f"{source}: contrast #{i + 1} ({c.get('id', '?') if isinstance(c, Mapping) else c!r})"
        if not isinstance(c, Mapping):
            raise ValueError(f"{name}: must be a mapping")
        missing = [f for f in REQUIRED_FIELDS if c.get(f) in (None, "")]
        if missing:
            raise ValueError(f"{name}: missing required field(s) {missing}")
        if c["family"] not in FAMILIES:
            raise ValueError(f"{name}: family {c['family']!r} is not one of {FAMILIES}")
        if c["direction"] not in DIRECTIONS:
            raise ValueError(f"{name}: direction {c['direction']!r} is not one of {list(DIRECTIONS)}")
        if isinstance(c["sesoi"], bool) or not isinstance(c["sesoi"], (int, float)) or c["sesoi"] <= 0:
            raise ValueError(f"{name}: sesoi must be a positive number of points, got {c['sesoi']!r}")
        if c["a"] == c["b"]:
            raise ValueError(f"{name}: a and b are the same variant {c['a']!r}")
        if c["id"] in seen:
            raise ValueError(f"{name}: duplicate id {c['id']!r}")
        seen.add(c["id"])
        pe = c.get("paper_effect")
        if pe is not None and (isinstance(pe, bool) or not isinstance(pe, (int, float)) or pe <= 0):
            raise ValueError(f"{name}: paper_effect must be a positive number (the paper's size), got {pe!r}")
    if not any(c["family"] == "primary" for c in prereg["contrasts"]):
        raise ValueError(f"{source}: the primary family is empty")
    primary = {c["id"] for c in prereg["contrasts"] if c["family"] == "primary"}
    for cl in prereg.get("claims") or []:
        if not isinstance(cl, Mapping) or not cl.get("id") or not cl.get("contrasts"):
            raise ValueError(f"{source}: claim {cl!r} needs an id and a non-empty contrasts list")
        bad = [i for i in cl["contrasts"] if i not in primary]
        if bad:
            raise ValueError(f"{source}: claim {cl['id']}: {bad} are not primary contrasts")
        if cl.get("rule", "any") not in CLAIM_RULES:
            raise ValueError(f"{source}: claim {cl['id']}: rule {cl['rule']!r} is not one of {CLAIM_RULES}")


def metric_lists(prereg: Mapping, metric: str) -> list[str]:
    """The per-query lists whose means average to ``metric`` (``prereg['metrics']``; default: itself)."""
    return list((prereg.get("metrics") or {}).get(metric, [metric]))

