"""Retrieval time of the study's trained models, end to end, and the one cost model fitted on it.

Models (:func:`load_pipeline`): the profile's frozen encoders (MobileNetV2 cut at ``visual_layer``, MiniLM
with its tokenizer), the trained COOKIE of one seed (``runs/<profile>/cookie/seed<k>``) and the
cross-encoder trained on it (``runs/<profile>/onestream/seed<k>``, :mod:`cookie_lib.study.onestream`).
Where a run is missing (CI, a fresh checkout) models of the same shapes are built untrained and every
output says so: time does not depend on the weights, only on the shapes.

Gallery (:func:`gallery_inputs`): N images of the emoji test split (decoded, resized and normalised once,
outside the clock) and 5 caption strings each (their own, cycled), so M = 5 N.

Strategies, each timed from the image tensors and the caption strings to the top 10 both ways
(:func:`retrieve`):

* ``two-stream``: encoders -> COOKIE head -> unit embeddings; similarity [N, M]; top 10 both ways;
* ``rerank k``: two-stream, then the cross-encoder's joint pass on every image's top k captions and every
  caption's top k images (each distinct pair once; the tower states are the head's own);
* ``one-stream``: encoders -> towers once per item, then the joint pass on all N x M pairs; top 10.

Estimator (:func:`measure` + :func:`fit_all`), the only one: each strategy is run ``repeats`` times at each
N of ``fit_ns``; time(N, M) = a (N + M) + b N M is fitted (NNLS on relative error,
:func:`cookie_lib.study.bench.costmodel.fit_cost_model`) to every repeat at those N, and checked against
the median of the repeats at ``holdout_n`` (never fitted). The crossing N of two-stream / one-stream =
3/1000 (:func:`crossing_n`) gets a 95 % percentile interval from :func:`scipy.stats.bootstrap`, which
resamples the repeats within each (strategy, N) cell and refits. A joint model of the paper's class
(12 x 768 over 100 tokens) is *FLOP-costed, not measured*: its b is its counted forward FLOPs per pair
divided by the FLOP/s the trained cross-encoder's joint passes achieve here, its a the measured one.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...config import load_config, project_root, resolve_path
from ...features import image_transform, load_image
from ...model import CookieModel, build_encoders, visual_tokens_for
from .costmodel import (PAPER_CLASS, PAPER_INFERENCE_RATIO, CostModel, crossing_n, derived_fields, fit_cost_model,
                        joint_flops_per_pair)
from .timing import count_flops, sync

CAPS = 5
STRATEGIES = ("two-stream", "rerank 10", "rerank 50", "one-stream")


@dataclasses.dataclass
class Pipeline:
    """Encoders + COOKIE + cross-encoder of one seed; ``trained`` False = untrained models of the same shapes."""
    visual: torch.nn.Module
    text: torch.nn.Module
    cookie: CookieModel
    cross: torch.nn.Module
    trained: bool
    label: str
    profile: str

    def to(self, device):
        for m in (self.visual, self.text, self.cookie, self.cross):
            m.to(device).eval()
        return self


def load_pipeline(profile: str, seed: int | None = None, runs_root: str | Path = "runs") -> Pipeline:
    """The profile's encoders and the trained COOKIE + cross-encoder of ``seed`` (default: the profile's
    first ``onestream_seeds``); untrained stand-ins of the same shapes when either run is missing."""
    from ...evaluate import load_run
    from ..grid import run_dir
    from ..onestream import SETTINGS, CrossEncoder, load_onestream
    from ..profile import load_run_profile
    from ..variants import ONESTREAM

    if seed is None:
        seed = (load_run_profile(profile).onestream_seeds or [0])[0]
    cfg = load_config(profile)
    visual, text = build_encoders(cfg)
    c_v, c_t = visual.out_dim, text.out_dim
    t_v = visual_tokens_for(cfg.model.image_size, cfg.model.visual_layer, cfg.model.visual_backbone)
    cookie_dir, cross_pt = run_dir(profile, "cookie", seed, runs_root), run_dir(profile, ONESTREAM, seed, runs_root)
    cross_pt = cross_pt / "onestream.pt"
    done = cross_pt.with_name("result.json")
    current = done.is_file() and json.loads(done.read_text()).get("settings") == SETTINGS  # not an older model's
    if (cookie_dir / "checkpoint.pt").is_file() and cross_pt.is_file() and current:
        cookie = load_run(cookie_dir).model.eval()
        cross = load_onestream(cross_pt, widths=(c_v, c_t, t_v))
        label, trained = f"trained, seed {seed}", True
    else:
        torch.manual_seed(seed)
        cookie = CookieModel(cfg.model, c_v, c_t, t_v).eval()
        cross = CrossEncoder(cookie).eval()
        label, trained = "untrained models of the study's shapes (no finished runs)", False
    m = cfg.model
    label = (f"{label}: COOKIE d {m.dim}, {m.depth} head layers, {t_v} visual / <= {m.max_text_len} text tokens; "
             f"cross-encoder + {len(cross.joint.layers)} joint layer(s)")
    return Pipeline(visual, text, cookie, cross, trained, label, Path(profile).stem)


def gallery_inputs(profile: str, n: int) -> tuple[torch.Tensor, list[str]]:
    """N images of the profile's emoji test split (the committed fixture when it has none), as one tensor
    [N, 3, S, S], and 5 caption strings per image (its own, cycled): M = 5 N. Images are reused cyclically
    when the split has fewer than N."""
    from ...data import load_karpathy
    from ..profile import load_run_profile

    run = load_run_profile(profile)
    path = resolve_path(run.downstream_emoji) if run.downstream_emoji else None
    if path is None or not path.exists():
        path = project_root() / "data/fixture_emoji/dataset_emoji.json"
    records = load_karpathy(path).split("test") or load_karpathy(path).split("train")
    tf = image_transform(run.config.model.image_size, False)
    pics = [tf(load_image(r.path)) for r in records[:n]]
    images = torch.stack([pics[i % len(pics)] for i in range(n)])
    captions = [records[i % len(records)].captions[c % len(records[i % len(records)].captions)]
                for i in range(n) for c in range(CAPS)]
    return images, captions


@torch.inference_mode()
def retrieve(p: Pipeline, images: torch.Tensor, captions: list[str], strategy: str, device: torch.device,
             batch: int = 256, pair_batch: int = 1024) -> dict:
    """Run one strategy end to end (see the module docstring); returns {"seconds", "pairs"} (joint passes)
    with the top-10 indices computed (and discarded) inside the clock."""
    from ..onestream import score_index_pairs

    sync(device)
    t0 = time.perf_counter()
    img_tok = torch.cat([p.visual(b.to(device)) for b in images.split(batch)])
    enc = p.text.tokenize(captions)
    txt, mask = [], []
    for ids, att in zip(enc["input_ids"].split(batch), enc["attention_mask"].split(batch)):
        t, m = p.text(ids.to(device), att.to(device))
        txt.append(t), mask.append(m)
    txt, mask = torch.cat(txt), torch.cat(mask)
    v, u = zip(*[p.cross.encode_images(b) for b in img_tok.split(batch)])
    t, w = zip(*[p.cross.encode_texts(a, b) for a, b in zip(txt.split(batch), mask.split(batch))])
    states = {"v": torch.cat(v), "u": torch.cat(u), "t": torch.cat(t), "w": torch.cat(w), "mask": mask}
    n, m = len(images), len(captions)
    pairs = 0
    if strategy == "one-stream":
        ii, jj = torch.arange(n, device=device).repeat_interleave(m), torch.arange(m, device=device).repeat(n)
        scores = score_index_pairs(p.cross, states, ii, jj, pair_batch).view(n, m)
        pairs = n * m
    else:
        scores = states["u"] @ states["w"].T  # COOKIE's similarity (the towers are COOKIE's head)
        if strategy.startswith("rerank"):
            k = int(strategy.split()[1])
            top_i2t, top_t2i = scores.topk(min(k, m), dim=1).indices, scores.T.topk(min(k, n), dim=1).indices
            ids = torch.unique(torch.cat([(torch.arange(n, device=device)[:, None] * m + top_i2t).reshape(-1),
                                          (top_t2i * m + torch.arange(m, device=device)[:, None]).reshape(-1)]))
            vals = score_index_pairs(p.cross, states, ids // m, ids % m, pair_batch)
            scores = scores.clone()
            scores.view(-1)[ids] = vals + 1e4  # the re-scored pairs above every other candidate
            pairs = len(ids)
    scores.topk(min(10, m), dim=1), scores.T.topk(min(10, n), dim=1)
    sync(device)
    return {"seconds": time.perf_counter() - t0, "pairs": int(pairs)}


def joint_flops(p: Pipeline, device: torch.device, text_len: int = 10, pairs: int = 64) -> float:
    """Forward FLOPs of one joint pass of the cross-encoder (FlopCounterMode; train mode so attention
    takes the explicit path the counter sees) with a ``text_len``-token caption."""
    from ..onestream import score_index_pairs

    d = p.cookie.cfg.dim
    t_v = p.cookie.visual_pos.shape[1]
    states = {"v": torch.zeros(pairs, t_v, d, device=device), "u": torch.zeros(pairs, d, device=device),
              "t": torch.zeros(pairs, text_len, d, device=device), "w": torch.zeros(pairs, d, device=device),
              "mask": torch.ones(pairs, text_len, dtype=torch.bool, device=device)}
    idx = torch.arange(pairs, device=device)
    p.cross.train()
    try:
        with torch.no_grad():
            total = count_flops(lambda: score_index_pairs(p.cross, states, idx, idx, pairs))
    finally:
        p.cross.eval()
    return total / pairs


def measure(p: Pipeline, device: torch.device, fit_ns, holdout_n: int, repeats, holdout_repeats: int | None = None,
            progress=print) -> list[dict]:
    """Every strategy ``repeats`` times at each N of ``fit_ns`` (an int, or one count per N: the largest N
    costs the most) and ``holdout_repeats`` (default: the first count) times at ``holdout_n``, after one small
    warm-up run each: rows {strategy, n_images, n_captions, repeat, seconds, pairs, role ("fit" / "holdout")}."""
    counts = [repeats] * len(fit_ns) if isinstance(repeats, int) else list(repeats)
    if len(counts) != len(fit_ns) or min(counts) < 1:
        raise ValueError(f"measure: repeats {repeats} must be one count >= 1 or one per N of {list(fit_ns)}")
    rows = []
    images, captions = gallery_inputs(p.profile, max(*fit_ns, holdout_n))
    for s in STRATEGIES:
        retrieve(p, images[:4], captions[:4 * CAPS], s, device)  # warm-up: one-off allocation costs
    plan = [(n, "fit", c) for n, c in zip(fit_ns, counts)] + [(holdout_n, "holdout", holdout_repeats or counts[0])]
    for n, role, reps in plan:
        for r in range(reps):
            for s in STRATEGIES:
                res = retrieve(p, images[:n], captions[:n * CAPS], s, device)
                rows.append(dict(strategy=s, n_images=n, n_captions=n * CAPS, repeat=r, role=role, **res))
                progress(f"  {s:10s} N={n:5d} M={n * CAPS:6d} repeat {r}: {res['seconds']:8.3f} s, "
                         f"{res['pairs']:,} joint passes")
    return rows


def _fit(rows: list[dict], strategy: str) -> CostModel:
    pts = [r for r in rows if r["strategy"] == strategy and r["role"] == "fit"]
    return fit_cost_model([r["n_images"] for r in pts], [r["n_captions"] for r in pts], [r["seconds"] for r in pts])


def _cells(rows: list[dict], strategy: str) -> list[tuple[int, np.ndarray]]:
    ns = sorted({r["n_images"] for r in rows if r["strategy"] == strategy and r["role"] == "fit"})
    return [(n, np.array([r["seconds"] for r in rows if r["strategy"] == strategy and r["role"] == "fit"
                          and r["n_images"] == n])) for n in ns]


def _crossing_from_cells(two_cells, one_cells, paper_factor: float | None):
    """Crossing N of the two fits over the given repeat cells (paper_factor: b of the paper class = that x b)."""
    def fit(cells):
        n = np.concatenate([[c[0]] * len(c[1]) for c in cells]).astype(float)
        return fit_cost_model(n, CAPS * n, np.concatenate([c[1] for c in cells]))
    two, one = fit(two_cells), fit(one_cells)
    if paper_factor is not None:
        one = CostModel(one.a, one.b * paper_factor)
    n_star = crossing_n(two, one, PAPER_INFERENCE_RATIO, CAPS)
    return float("nan") if n_star is None else n_star


def crossing_interval(rows: list[dict], paper_factor: float | None = None, resamples: int = 999,
                      seed: int = 0) -> dict:
    """95 % percentile interval of the crossing N by scipy.stats.bootstrap over the repeats: each
    (strategy, N) cell of repeats is resampled independently and both models refitted. Returns {"low",
    "high", "undetermined_fraction", "resamples"}; low/high are None with a reason when more than 2.5 % of
    the resamples never cross (then the interval is unbounded on one side)."""
    from scipy.stats import bootstrap

    two, one = _cells(rows, "two-stream"), _cells(rows, "one-stream")
    if min(len(c[1]) for c in two + one) < 2:
        return {"low": None, "high": None, "reason": "fewer than 2 repeats per N: no spread to resample",
                "undetermined_fraction": None, "resamples": 0}
    k = len(two)

    def stat(*samples):
        cells = [(c[0], np.asarray(s)) for c, s in zip(two + one, samples)]
        return _crossing_from_cells(cells[:k], cells[k:], paper_factor)
    res = bootstrap([c[1] for c in two + one], stat, n_resamples=resamples, method="percentile", vectorized=False,
                    paired=False, rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution)
    undetermined = float(np.mean(~np.isfinite(dist)))
    if undetermined > 0.025:
        return {"low": None, "high": None, "undetermined_fraction": undetermined, "resamples": resamples,
                "reason": f"{100 * undetermined:.0f} % of bootstrap refits never cross 3/1000"}
    lo, hi = np.nanpercentile(dist, [2.5, 97.5])
    return {"low": float(lo), "high": float(hi), "undetermined_fraction": undetermined, "resamples": resamples,
            "reason": ""}


def fit_all(rows: list[dict], p: Pipeline, device: torch.device, resamples: int = 999) -> dict:
    """The cost models of every strategy, the held-out check, the crossing N of the trained cross-encoder
    and of the FLOP-costed paper-class joint model, each with its bootstrap interval."""
    models = {s: _fit(rows, s) for s in STRATEGIES}
    holdout = {}
    for s, cm in models.items():
        pts = [r for r in rows if r["strategy"] == s and r["role"] == "holdout"]
        if pts:
            measured = float(np.median([r["seconds"] for r in pts]))
            predicted = float(cm.time(pts[0]["n_images"], pts[0]["n_captions"]))
            holdout[s] = {"n_images": pts[0]["n_images"], "n_captions": pts[0]["n_captions"], "measured_s": measured,
                          "predicted_s": predicted, "relative_error": predicted / measured - 1,
                          "repeats_s": [r["seconds"] for r in pts]}
    ours_flops = joint_flops(p, device)
    paper_flops = joint_flops_per_pair(PAPER_CLASS["dim"], PAPER_CLASS["depth"], PAPER_CLASS["heads"],
                                       PAPER_CLASS["tokens"])
    one = models["one-stream"]
    achieved = ours_flops / one.b if one.b > 0 else None
    factor = paper_flops / ours_flops
    paper = CostModel(one.a, one.b * factor)
    two = models["two-stream"]
    classes = {
        "trained cross-encoder (measured)": {**derived_fields(two, one, PAPER_INFERENCE_RATIO, CAPS),
                                             "interval": crossing_interval(rows, None, resamples), "measured": True},
        "paper-class joint model (FLOP-costed, not measured)": {
            **derived_fields(two, paper, PAPER_INFERENCE_RATIO, CAPS),
            "interval": crossing_interval(rows, factor, resamples), "measured": False,
            "flops_per_pair": paper_flops, **PAPER_CLASS},
    }
    return {"fits": {s: {"a": m.a, "b": m.b} for s, m in models.items()}, "holdout": holdout,
            "classes": classes, "joint_flops_per_pair": ours_flops, "achieved_flops_per_s": achieved,
            "paper_over_ours_flops": factor}


def ratio_curve(result: dict, ns) -> list[dict]:
    """Rows {model, n_images, n_captions, two_stream_s, one_stream_s, ratio} of the fitted models."""
    two = CostModel(**result["fits"]["two-stream"])
    out = []
    for name, c in result["classes"].items():
        one = CostModel(c["a"], c["b"])
        for n in ns:
            t2, t1 = float(two.time(n, CAPS * n)), float(one.time(n, CAPS * n))
            out.append({"model": name, "n_images": int(n), "n_captions": int(CAPS * n), "two_stream_s": t2,
                        "one_stream_s": t1, "ratio": t2 / t1 if t1 > 0 else float("nan")})
    return out


def to_json(obj) -> str:
    return json.dumps(obj, indent=1, default=float)
