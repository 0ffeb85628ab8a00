"""Verdicts on the paper's claims: the claims table of the pre-registered contrasts, the claim rules, and
the committed per-query file every interval is recomputed from.

Each contrast of the pre-registration (:mod:`cookie_lib.study.prereg`) becomes one row of
:func:`claims_table`: the paired difference ``a - b`` of its metric with the seeds x test concepts cluster
bootstrap CI, Holm, TOST, the tests against the paper's size, the MDE and the seed-level sensitivity
analysis (formulas: :mod:`cookie_lib.study.stats`), then one verdict.

Verdicts (primary: Holm-adjusted p-values; secondary and sanity: raw ones):
``reproduced`` (significant, paper's direction), ``contradicted`` (significant, opposite),
``no effect`` (TOST: |diff| < SESOI), ``inconclusive`` (neither; see ``mde``). A contrast whose variants
are missing is ``not run``; one with fewer seeds than the pre-registered minimum is ``insufficient seeds``
(its statistics are still shown, its verdict is not drawn). One verdict per claim of the paper from its
primary contrasts (:func:`claim_verdicts`).

Per-query results. :func:`save_per_query` stores every run's per-query lists and the concept of every
query (``results/per_query.npz``); :func:`recompute` gives the claims table from that file alone, and
``python -m cookie_lib.study.verdicts recompute --check results/claims.csv`` checks the committed table
(:func:`check_table`: byte for byte, or to rounding on another CPU). Figure and prose: :mod:`cookie_lib.study.views.claims`.

    from cookie_lib.study.verdicts import claims_table, load_per_query
    from cookie_lib.study.views.claims import claims_figure, claims_prose
    results, clusters = load_per_query("results/per_query.npz")    # the committed per-query results
    df = claims_table(results, clusters=clusters, n_resamples=9999)  # == results/claims.csv
    claims_figure(df, "fig_claims.png"); print(claims_prose(df))
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .prereg import DEFAULT_PREREG, DIRECTIONS, FAMILIES, load_prereg, metric_lists, validate_prereg
from .stats import (below_effect_p, bootstrap_difference, cluster_codes, decide, holm, mde, paired_differences,
                    reachable_no_effect, run_records, seed_level_test, t_test_p, tost_p)

FROZEN = "frozen"  # the seedless baseline: pretrained encoders, PCA-whitened (unimodal tasks only)
VERDICTS = ("reproduced", "contradicted", "no effect", "inconclusive")
NOT_RUN, TOO_FEW_SEEDS = "not run", "insufficient seeds"
PAPER_UNIT_NOTE = "the paper does not say whether this is points or relative %"
COLUMNS = ["id", "claim_id", "claim", "family", "a", "b", "metric", "direction", "n_seeds", "n_queries",
           "n_concepts", "mean_a", "mean_b", "diff", "rel_pct", "ci_low", "ci_high", "pct_low", "pct_high", "se",
           "df", "v_seed", "v_concept", "seed_share", "p_raw", "p_holm", "sesoi", "tost_p", "tost_p_holm", "mde",
           "verdict", "p_seed", "p_seed_holm", "tost_p_seed", "tost_p_seed_holm", "verdict_seed", "differs",
           "paper", "paper_effect", "p_below_paper_pts", "p_below_paper_pts_holm", "p_below_paper_rel",
           "p_below_paper_rel_holm", "vs_paper", "paper_note", "note"]


# ----------------------------------------------------------------------------- the table
def paper_effect(c: Mapping) -> float | None:
    """The paper's stated effect size of a contrast (``paper_effect`` in the pre-registration, in the
    paper's unit: read both as points and as relative % of ``b``), or None when the paper gives no size."""
    x = c.get("paper_effect")
    return None if x is None else float(x)


def claims_table(results, prereg: Mapping | str | Path | None = None, n_resamples: int = 9999,
                 rng: int = 0, clusters: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per pre-registered contrast (in file order) with the columns of ``COLUMNS``.

    ``results``: runs as described in :mod:`cookie_lib.study.stats` (DataFrame or list of result dicts);
    ``clusters``: the test concept of every query per list (None: every query its own concept).
    ``prereg``: a loaded dict, a path, or None for ``docs/preregistration.yaml``. ``rng`` seeds the
    bootstrap (each contrast gets its own stream derived from it), so the table is reproducible.

    Primary analysis: the seeds x concepts cluster bootstrap
    (:func:`~cookie_lib.study.stats.bootstrap_difference`), t on the Satterthwaite df, Holm over the primary
    family, TOST at the SESOI, one-sided tests against the paper's effect (points and relative readings, each
    Holm-adjusted over the primary contrasts that state one). Sensitivity analysis: the seed-level paired t
    test (:func:`~cookie_lib.study.stats.seed_level_test`), Holm-adjusted the same way; ``verdict_seed`` and
    ``differs`` flag every contrast whose verdict depends on the analysis."""
    if prereg is None or isinstance(prereg, (str, Path)):
        prereg = load_prereg(prereg or DEFAULT_PREREG)
    else:
        validate_prereg(prereg)
    alpha, power, conf = prereg["alpha"], prereg["power"], prereg["confidence"]
    min_seeds = {**{f: 5 if f == "primary" else 3 for f in FAMILIES}, **(prereg.get("min_seeds") or {})}
    contrasts = prereg["contrasts"]
    m_primary = sum(c["family"] == "primary" for c in contrasts)
    variants = {v for v, _, _ in run_records(results)}
    streams = np.random.SeedSequence(rng).spawn(len(contrasts))

    rows = []
    for c, stream in zip(contrasts, streams):
        row = {k: c.get(k) for k in ("id", "claim", "family", "a", "b", "metric", "direction", "sesoi", "paper",
                                     "claim_id")}
        row.update(paper_note=PAPER_UNIT_NOTE if "%" in str(c["paper"]) else "", note="",
                   paper_effect=paper_effect(c))
        lists = metric_lists(prereg, c["metric"])
        missing = [v for v in (c["a"], c["b"]) if v not in variants]
        try:
            paired = None if missing else paired_differences(results, c["a"], c["b"], lists)
        except KeyError as err:  # the runs lack this task (e.g. a profile without the Open Clip Art test set)
            missing, paired = [str(err).strip('"')], None
        if missing or not paired["seeds"]:
            row.update(verdict=NOT_RUN, n_seeds=0, note=f"missing: {missing or 'no common seeds'}")
            rows.append(row)
            continue
        S = len(paired["seeds"])
        row.update(n_seeds=S, n_queries="+".join(str(d.shape[1]) for d in paired["diffs"]),
                   mean_a=paired["mean_a"], mean_b=paired["mean_b"])
        if S < 2:
            row.update(verdict=TOO_FEW_SEEDS, diff=paired["mean_a"] - paired["mean_b"], note="one seed: no CI")
            rows.append(row)
            continue
        codes, n_concepts = cluster_codes(clusters, lists, [d.shape[1] for d in paired["diffs"]])
        boot = bootstrap_difference(paired["diffs"], codes, n_concepts, n_resamples, conf,
                                    np.random.default_rng(stream))
        seed_means = boot.pop("seed_means")
        level = alpha / m_primary if c["family"] == "primary" else alpha
        sign = DIRECTIONS[c["direction"]]
        se, dfree = boot["se"], boot["df"]
        row.update(boot, rel_pct=100 * boot["diff"] / paired["mean_b"] if paired["mean_b"] else float("nan"),
                   seed_share=boot["v_seed"] / (boot["v_seed"] + boot["v_concept"])
                   if boot["v_seed"] + boot["v_concept"] > 0 else float("nan"),
                   p_raw=t_test_p(boot["diff"], se, dfree),
                   tost_p=tost_p(boot["diff"], se, dfree, c["sesoi"]),
                   mde=mde(se, dfree, level, power),
                   **seed_level_test(seed_means, c["sesoi"]))
        eff = row["paper_effect"]
        if eff is not None:
            row.update(p_below_paper_pts=below_effect_p(sign * boot["diff"], eff, se, dfree),
                       p_below_paper_rel=below_effect_p(sign * boot["diff"], eff / 100 * abs(paired["mean_b"]),
                                                        se, dfree))
        if S < min_seeds[c["family"]]:
            row.update(verdict=TOO_FEW_SEEDS, note=f"{S} seeds < the pre-registered {min_seeds[c['family']]}")
        rows.append(row)

    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    text_cols = ["verdict", "verdict_seed", "differs", "note", "vs_paper"]
    df[text_cols] = df[text_cols].astype(object)  # all-NaN until decided below
    # Holm over the primary family; rows without a valid test enter as p = 1 (family size stays m).
    primary = (df.family == "primary").to_numpy()
    tested = df.verdict.isna().to_numpy()
    for col, adj in (("p_raw", "p_holm"), ("tost_p", "tost_p_holm"), ("p_seed", "p_seed_holm"),
                     ("tost_p_seed", "tost_p_seed_holm")):
        p = np.where(tested, df[col].astype(float), np.nan)
        df.loc[primary, adj] = holm(p[primary], alpha)
    for col in ("p_below_paper_pts", "p_below_paper_rel"):  # family: the primary contrasts with a stated size
        has = primary & tested & df[col].notna().to_numpy()
        if has.any():
            df.loc[has, col + "_holm"] = holm(df.loc[has, col].astype(float), alpha)
    for i in np.flatnonzero(tested):
        r = df.iloc[i]
        first = r.family == "primary"
        p, pe = (r.p_holm, r.tost_p_holm) if first else (r.p_raw, r.tost_p)
        ps, pse = (r.p_seed_holm, r.tost_p_seed_holm) if first else (r.p_seed, r.tost_p_seed)
        verdict = decide(r["diff"], p, pe, r.direction, alpha)
        idx = df.index[i]
        df.loc[idx, "verdict"] = verdict
        df.loc[idx, "verdict_seed"] = decide(r["diff"], ps, pse, r.direction, alpha)
        df.loc[idx, "differs"] = df.loc[idx, "verdict_seed"] != verdict
        if pd.notna(r.paper_effect):
            pts, rel = ((r.p_below_paper_pts_holm, r.p_below_paper_rel_holm) if first
                        else (r.p_below_paper_pts, r.p_below_paper_rel))
            small = [pd.notna(x) and x < alpha for x in (pts, rel)]
            df.loc[idx, "vs_paper"] = ("smaller than the paper's (both readings)" if all(small) else
                                       "smaller than the paper's read as points" if small[0] else
                                       "smaller than the paper's read as relative %" if small[1] else
                                       "not shown smaller than the paper's")
        reachable = reachable_no_effect(r.v_concept, r.sesoi, alpha / (m_primary if first else 1))
        if verdict == "no effect" and not reachable:
            df.loc[idx, "note"] = "no effect reached although the concepts' variance alone should prevent it"
        elif verdict == "inconclusive" and not reachable:
            df.loc[idx, "note"] = "no effect is unreachable at this SESOI with this test set (precision analysis)"
        elif verdict == "reproduced" and abs(r["diff"]) < r.sesoi:
            df.loc[idx, "note"] = "significant but smaller than the SESOI"
    return df


def claim_verdicts(df: pd.DataFrame, prereg: Mapping | str | Path | None = None) -> pd.DataFrame:
    """One verdict per claim of the paper (``prereg['claims']``), from the primary verdicts of its contrasts,
    by the pre-registered rule: *reproduced* = at least one contrast reproduced and none contradicted
    (a claim with ``rule: all``: every contrast reproduced, as when a gain must beat two comparators);
    *contradicted* = at least one contradicted and none reproduced; *mixed* = both; *no effect* = every
    contrast no effect; *inconclusive* otherwise; *not run* when a contrast did not run (*insufficient
    seeds* when one has too few). A claim whose contrasts with a stated size are all smaller than the
    paper's (both readings) says so in ``size``, whatever its verdict: an inconclusive difference can still
    exclude the effect the paper reports."""
    if prereg is None or isinstance(prereg, (str, Path)):
        prereg = load_prereg(prereg or DEFAULT_PREREG)
    by_id = df.set_index("id")
    rows = []
    for cl in prereg.get("claims") or []:
        present = [i for i in cl["contrasts"] if i in by_id.index]
        if not present:  # a table of other contrasts (a custom pre-registration): the claim is not in it
            continue
        sub = by_id.loc[present]
        v = list(sub.verdict)
        if len(sub) < len(cl["contrasts"]) or NOT_RUN in v:
            verdict = NOT_RUN
        elif TOO_FEW_SEEDS in v:
            verdict = TOO_FEW_SEEDS
        elif "reproduced" in v and "contradicted" in v:
            verdict = "mixed"
        elif "reproduced" in v and (cl.get("rule", "any") == "any" or set(v) == {"reproduced"}):
            verdict = "reproduced"
        elif "contradicted" in v:
            verdict = "contradicted"
        elif all(x == "no effect" for x in v):
            verdict = "no effect"
        else:
            verdict = "inconclusive"
        sized = sub[sub.paper_effect.notna()] if "paper_effect" in sub else sub.iloc[:0]
        size = ""
        if len(sized) and all(str(x).startswith("smaller than the paper's (both") for x in sized.vs_paper):
            size = "smaller than the paper's effect under both readings"
        seed_v = [x if isinstance(x, str) else "-" for x in sub.verdict_seed] if "verdict_seed" in sub else []
        rows.append({"claim_id": cl["id"], "claim": cl["claim"], "contrasts": ", ".join(cl["contrasts"]),
                     "contrast verdicts": ", ".join(f"{i}: {x}" for i, x in zip(sub.index, v)),
                     "verdict": verdict, "size": size,
                     "seed-level verdicts": ", ".join(f"{i}: {x}" for i, x in zip(sub.index, seed_v))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- per-query results, committed
def per_query_arrays(results, clusters: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """What :func:`save_per_query` stores: ``runs`` (JSON: [[variant, seed or null], ...]), ``r{i}__{list}``
    (float32 per-query values of run i) and ``clusters__{list}`` (the concept of every query)."""
    runs = run_records(results)
    arrays = {"runs": np.array(json.dumps([[v, s] for v, s, _ in runs]))}
    for i, (_, _, pq) in enumerate(runs):
        for name, values in pq.items():
            arrays[f"r{i}__{name}"] = np.asarray(values, dtype=np.float32)
    for name, labels in clusters.items():
        arrays[f"clusters__{name}"] = np.asarray([str(x) for x in labels])
    return arrays


def save_per_query(results, clusters: Mapping[str, Sequence[str]], path: str | Path) -> None:
    """Every run's per-query lists and the concept of every query (:func:`per_query_arrays`) in one
    compressed ``.npz``, written atomically: what :func:`claims_table` needs, so the claims recompute
    from the repository."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **per_query_arrays(results, clusters))
    os.replace(tmp, path)


def load_per_query(path: str | Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Read :func:`save_per_query`'s file: (runs as result dicts with variant, seed, per_query; clusters).
    Raises ValueError naming the file when it is missing or not such a file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            runs = json.loads(str(z["runs"]))
            results = [{"variant": v, "seed": s, "per_query": {}} for v, s in runs]
            clusters = {}
            for key in z.files:
                if key.startswith("clusters__"):
                    clusters[key[len("clusters__"):]] = z[key].tolist()
                elif key != "runs":
                    i, name = key.split("__", 1)
                    results[int(i[1:])]["per_query"][name] = z[key].astype(np.float64)
    except FileNotFoundError:
        raise ValueError(f"{path}: per-query results not found (written by the study's claims step)") from None
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a per-query results file ({e})") from None
    return results, clusters


def inputs_digest(arrays: Mapping[str, np.ndarray], n_resamples: int, prereg_path: str | Path = DEFAULT_PREREG) -> str:
    """sha256 over the pre-registration, the number of bootstrap resamples and the per-query arrays
    (:func:`per_query_arrays`): what the claims table is a function of. A claims.csv from other inputs is stale."""
    h = hashlib.sha256(Path(prereg_path).read_bytes())
    h.update(f"n_resamples={n_resamples}".encode())
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.asarray(arrays[key]).tobytes())
    return h.hexdigest()


def recompute(per_query_path: str | Path, n_resamples: int, prereg: str | Path = DEFAULT_PREREG) -> pd.DataFrame:
    """The claims table from the committed per-query file alone (what ``python -m
    cookie_lib.study.verdicts recompute`` prints or checks)."""
    results, clusters = load_per_query(per_query_path)
    return claims_table(results, prereg, n_resamples=n_resamples, clusters=clusters)


CHECK_RTOL = 1e-9  # the last bits of the bootstrap's sums depend on the CPU's vector width (AVX2 vs AVX-512)


def check_table(path: Path, text: str) -> str:
    """How the claims CSV at ``path`` matches the recomputed ``text``: "identical to" (byte for byte), "equal
    to rounding (rtol 1e-9) to" (every text cell, verdicts included, identical and every number within
    CHECK_RTOL: what another CPU's floating-point reductions give), or "" (it differs)."""
    stored = path.read_text()
    if stored == text:
        return "identical to"
    try:
        pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(io.StringIO(text)), check_exact=False,
                                      rtol=CHECK_RTOL, atol=0.0)
    except AssertionError:
        return ""
    return f"equal to rounding (rtol {CHECK_RTOL:g}) to"


def main(argv: list[str] | None = None) -> int:
    """``python -m cookie_lib.study.verdicts recompute [--per-query F] [--resamples N] [--check CSV | --out CSV]``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m cookie_lib.study.verdicts",
                                 description="Recompute the claims table from the committed per-query results.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rc = sub.add_parser("recompute", help="claims.csv from per_query.npz + the pre-registration")
    rc.add_argument("--per-query", default="results/per_query.npz")
    rc.add_argument("--resamples", type=int, default=None,
                    help="bootstrap resamples (default: the value recorded in results/manifest.json beside the file)")
    rc.add_argument("--prereg", default=str(DEFAULT_PREREG))
    rc.add_argument("--check", metavar="CSV", help="exit 1 unless the recomputed table equals this file (byte for "
                    "byte, or to floating-point rounding: see check_table)")
    rc.add_argument("--out", metavar="CSV", help="write the table here (default: print it)")
    args = ap.parse_args(argv)
    pq = Path(args.per_query)
    n = args.resamples
    if n is None:
        man = pq.with_name("manifest.json")
        try:
            n = int(json.loads(man.read_text())["bootstrap_resamples"])
        except (OSError, KeyError, ValueError):
            ap.error(f"--resamples not given and {man} records no bootstrap_resamples")
    try:
        text = recompute(pq, n, args.prereg).to_csv(index=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        same = check_table(Path(args.check), text)
        print(f"{args.check}: {same or 'DIFFERS from'} the table recomputed from {pq} ({n} resamples)")
        return 0 if same else 1
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
