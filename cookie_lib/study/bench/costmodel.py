"""A cost model of retrieval time in place of a single measured ratio.

Both strategies are modelled as

    time(N, M) = a (N + M) + b N M                      (N images, M captions; seconds)

``a`` = cost per item (encoders, and for COOKIE its head); ``b`` = cost per (image, caption) pair
(COOKIE: one dot product + top-k; one-stream: one joint transformer pass). a and b are fitted by
non-negative least squares on *relative* error (each equation divided by its measured time, so the
small and the large galleries weigh alike) with :func:`scipy.optimize.nnls`.

With M = c N (c = 5 captions per image) the two-stream / one-stream ratio is

    r(N) = (a2 (1 + c) + b2 c N) / (a1 (1 + c) + b1 c N)

which moves monotonically from a2/a1 (small N) to b2/b1 (large N); :func:`crossing_n` solves
r(N) = target in closed form. The ratio at any one N is therefore a property of N and of the two
models' sizes, not a constant: the benchmark reports the N at which it crosses the paper's 3/1000 for

* the measured one-stream model (the study's cross-encoder, :mod:`cookie_lib.study.onestream`), fitted on end-to-end
  exhaustive timings at a few small N;
* a joint model of the paper's class (12 layers x 768 over about 100 tokens, UNITER/ViLBERT-base),
  whose per-pair cost is its forward FLOPs (counted by torch.utils.flop_counter) divided by the FLOP/s
  the measured one-stream model achieves here; its per-item cost is taken equal to the measured model's
  (the same encoders), which favours it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from ...config import ModelConfig
from ...model import HeadStack
from .timing import count_flops

# The paper's inference-time claim: a two-stream model needs "about 3/1000 of the inference time" of
# a one-stream cross-encoder.
PAPER_INFERENCE_RATIO = 3 / 1000
COST_CSV_COLUMNS = ["model", "n_images", "n_captions", "two_stream_s", "one_stream_s", "ratio"]
PAPER_CLASS = dict(dim=768, depth=12, heads=12, tokens=100)  # UNITER/ViLBERT-base joint transformer


@dataclass
class CostModel:
    """time(N, M) = a (N + M) + b N M, in seconds."""
    a: float
    b: float

    def time(self, n, m):
        n, m = np.asarray(n, dtype=float), np.asarray(m, dtype=float)
        return self.a * (n + m) + self.b * n * m


def fit_cost_model(n, m, seconds) -> CostModel:
    """Fit a, b >= 0 of time = a (N + M) + b N M to measured points (arrays of equal length >= 2),
    minimising the sum of squared *relative* residuals ((model - t) / t)^2."""
    n, m, t = (np.asarray(x, dtype=float) for x in (n, m, seconds))
    if not (n.shape == m.shape == t.shape) or n.ndim != 1 or len(n) < 2:
        raise ValueError(f"fit_cost_model: need >= 2 points of equal length, got {n.shape}, {m.shape}, {t.shape}")
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise ValueError(f"fit_cost_model: times must be positive and finite, got {t.tolist()}")
    design = np.stack([n + m, n * m], axis=1) / t[:, None]
    (a, b), _ = nnls(design, np.ones_like(t))
    return CostModel(float(a), float(b))


def ratio(two: CostModel, one: CostModel, n, caps: float = 5.0):
    """two-stream / one-stream time at N images and caps x N captions (array in, array out)."""
    n = np.asarray(n, dtype=float)
    return two.time(n, caps * n) / one.time(n, caps * n)


def crossing_n(two: CostModel, one: CostModel, target: float, caps: float = 5.0) -> float | None:
    """The gallery size N (images; caps x N captions) at which two-stream / one-stream time = target:

        N* = (1 + c) (a2 - target a1) / (c (target b1 - b2))

    None when the ratio never equals target for N > 0 (it stays above or below it everywhere)."""
    num = (1 + caps) * (two.a - target * one.a)
    den = caps * (target * one.b - two.b)
    if den == 0:
        return None
    n = num / den
    return float(n) if n > 0 and math.isfinite(n) else None


NOT_DETERMINED = "not determined"


def limits(two: CostModel, one: CostModel) -> dict:
    """The ratio's two limits, each a value or None with the reason it is not determined:

        small N: r -> a2 / a1      (None when a1 = 0: the one-stream fit has no per-item cost)
        large N: r -> b2 / b1      (None when b1 = 0: the one-stream fit resolved no per-pair cost)

    Returns {"ratio_small_n_limit", "ratio_small_n_reason", "ratio_large_n_limit", "ratio_large_n_reason"};
    a reason is "" when its value is determined."""
    out = {}
    for key, num, den, what in (("small", two.a, one.a, "a"), ("large", two.b, one.b, "b")):
        ok = den > 0
        out[f"ratio_{key}_n_limit"] = float(num / den) if ok else None
        out[f"ratio_{key}_n_reason"] = "" if ok else f"one-stream {what} fitted as 0"
    return out


def crossing_reason(two: CostModel, one: CostModel, target: float, caps: float = 5.0) -> str:
    """Why :func:`crossing_n` is None ("" when it is not): a fit with a = b = 0, one with b = 0 (the
    ratio never falls with N), or a target outside the ratio's range (a2/a1 .. b2/b1)."""
    if crossing_n(two, one, target, caps) is not None:
        return ""
    if one.a == 0 and one.b == 0:
        return "one-stream fit is a = b = 0"
    if one.b == 0:
        return "one-stream b fitted as 0: the ratio does not fall with N"
    lo = two.b / one.b
    hi = two.a / one.a if one.a > 0 else float("inf")
    return f"never crosses: the ratio stays between {lo:.3g} (N -> inf) and {hi:.3g} (N -> 0)"


def derived_fields(two: CostModel, one: CostModel, target: float, caps: float = 5.0) -> dict:
    """Every quantity derived from the two fits, each a value or None plus a reason (see :func:`limits`,
    :func:`crossing_reason`): {"a", "b", "crossing_n_images", "crossing_n_reason", ratio limits ...}."""
    return {"a": one.a, "b": one.b, "crossing_n_images": crossing_n(two, one, target, caps),
            "crossing_n_reason": crossing_reason(two, one, target, caps), **limits(two, one)}


def joint_flops_per_pair(dim: int, depth: int, heads: int, tokens: int) -> int:
    """Forward FLOPs of one pass of a depth x dim joint transformer over ``tokens`` tokens, counted by
    FlopCounterMode on the library's own transformer block (matmuls and attention; norms not counted)."""
    # train mode (dropout 0): torch's fused inference path for attention hides part of its FLOPs from the counter
    stack = HeadStack(ModelConfig(dim=dim, depth=depth, heads=heads, dropout=0.0)).train()
    x = torch.zeros(1, tokens, dim)
    with torch.no_grad():
        return count_flops(lambda: stack(x, None))


def paper_class_model(measured_one: CostModel, achieved_flops_per_s: float,
                      spec: dict = PAPER_CLASS) -> tuple[CostModel, dict]:
    """Cost model of a joint model of the paper's class on this machine: b = its FLOPs per pair / the
    FLOP/s the measured one-stream model's joint passes achieve here; a as measured."""
    flops = joint_flops_per_pair(spec["dim"], spec["depth"], spec["heads"], spec["tokens"])
    achieved = achieved_flops_per_s
    return CostModel(measured_one.a, flops / achieved), {"flops_per_pair": flops, "achieved_flops_per_s": achieved,
                                                          **spec}


def curve(two: CostModel, ones: dict[str, CostModel], ns, caps: float = 5.0) -> list[dict]:
    """Rows {model, n_images, n_captions, two_stream_s, one_stream_s, ratio} over ``ns`` for each one-stream model."""
    out = []
    for name, one in ones.items():
        for n in ns:
            m = caps * n
            t2, t1 = float(two.time(n, m)), float(one.time(n, m))
            out.append({"model": name, "n_images": int(n), "n_captions": int(m), "two_stream_s": t2,
                        "one_stream_s": t1, "ratio": t2 / t1 if t1 > 0 else float("nan")})  # nan: a = b = 0
    return out


__all__ = ["CostModel", "fit_cost_model", "ratio", "crossing_n", "crossing_reason", "limits", "derived_fields",
           "NOT_DETERMINED", "joint_flops_per_pair", "paper_class_model",
           "curve", "PAPER_CLASS", "COST_CSV_COLUMNS"]


METHOD_STRATEGY = {"two-stream": "two-stream", "two-stream + re-rank top 10": "rerank 10",
                   "two-stream + re-rank top 50": "rerank 50", "one-stream exhaustive": "one-stream"}


def end_to_end_seconds(results: Path | None, method: str, n: int, m: int) -> tuple[float | None, str]:
    """(seconds, source) of one retrieval strategy at N images x M captions from the benchmark's
    ``inference_cost_model.json``: the median of the measured repeats when the benchmark timed this N
    (with M = 5 N), else its fitted cost model a (N + M) + b N M; (None, reason) when it has not run."""
    path = None if results is None else Path(results) / "inference_cost_model.json"
    if path is None or not path.exists():
        return None, "benchmark not run"
    cm = json.loads(path.read_text())
    strategy = METHOD_STRATEGY.get(method)
    if "fits" not in cm or strategy not in cm["fits"]:
        return None, "benchmark has no end-to-end timing of this strategy"
    pts = [p["seconds"] for p in cm["points"] if p["strategy"] == strategy and p["n_images"] == n and
           p["n_captions"] == m]
    if pts:
        return float(np.median(pts)), f"measured, median of {len(pts)}"
    fit = cm["fits"][strategy]
    return float(fit["a"] * (n + m) + fit["b"] * n * m), "cost model"
