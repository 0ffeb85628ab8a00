"""Systems benchmarks for COOKIE: inference time (two-stream vs one-stream), training throughput,
compute efficiency and evaluation at scale.

    python -m cookie_lib.bench [--quick] [--out results]

Writes ``OUT/benchmarks.csv`` (tidy: benchmark, setting, metric, value, unit, note),
``OUT/benchmarks.json`` (the same rows, headline numbers, assumptions, provenance manifest),
``OUT/fig_inference_time.png`` and ``OUT/profile_train_step.txt``; every file is written atomically.
``--quick`` shrinks every size (CI: well under a minute); the full run takes a few minutes on 2 cores.

What is real and what is synthetic (also recorded under "assumptions" in the JSON):

* Encoder costs use the real packaged encoders (MobileNetV2 at 64 px, all-MiniLM-L6-v2 with its
  tokenizer) on random images and on the fixture corpus's real caption strings; throughput is measured
  on a sample and extrapolated linearly to N images and 5N captions.
* Head, similarity and one-stream costs use random token tensors of the real shapes
  (4 visual tokens x 1280, 16 text tokens x 384 with random valid lengths); weights are random
  (timing does not depend on them). Similarity + top-10 is timed on the full N x 5N matrix.
* One-stream scoring of all N x 5N pairs is timed on a random subset of pairs (batched) and
  extrapolated linearly. The one-stream model is assumed to reuse the unimodal encoders' token
  outputs (one encoder pass per image and per caption, not per pair), which favours it.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .config import LossConfig, ModelConfig, project_root
from .features import ImageTokens, SplitFeatures, TextTokens
from .losses import CookieLoss
from .metrics import cross_modal_retrieval
from .model import CookieModel, OneStreamModel, TextEncoder, VisualEncoder, visual_tokens_for
from .runtime import atomic_write_json, atomic_write_text, manifest
from .train import CookieStep, sample_pairs

PAPER_RATIO = 3 / 1000  # "about 3/1000 of the inference time" of one-stream models
IMAGE_SIZE = 64
T_V = visual_tokens_for(IMAGE_SIZE)  # 4 grid tokens at 64 px
C_V, C_T, T_TXT = 1280, 384, 16  # MobileNetV2 / MiniLM widths, typical caption length in word pieces
CAPS_PER_IMAGE = 5
FIXTURE = "data/fixture_emoji/dataset_emoji.json"

# Sizes of every measurement; --quick uses the second set.
FULL = dict(ns=(100, 1000, 5000), enc_images=512, enc_captions=256, head_items=4096, pairs=16384,
            pair_batch=1024, batch=128, pool=512, cached_warmup=2, cached_steps=10, live_warmup=1,
            live_steps=4, profile_steps=3, matmul=2048, eval_images=5000)
QUICK = dict(ns=(20, 100, 500), enc_images=32, enc_captions=16, head_items=256, pairs=512,
             pair_batch=256, batch=16, pool=64, cached_warmup=1, cached_steps=2, live_warmup=1,
             live_steps=1, profile_steps=1, matmul=512, eval_images=500)

ASSUMPTIONS = [
    "Encoder throughput (MobileNetV2 64 px on random images; MiniLM incl. tokenisation on the fixture's real "
    "captions) is measured on a sample and extrapolated linearly to N images and 5N captions.",
    "Head (CookieModel dim 256, depth 2, 4 heads) cost is measured on a sample of random tokens of the real "
    "shapes (4x1280 visual, 16x384 text) and extrapolated linearly; similarity + top-10 both ways is timed "
    "on the full N x 5N matrix of random unit embeddings.",
    "One-stream (OneStreamModel, same dim/depth/heads) scoring is timed on a random subset of pairs, batched, "
    "and extrapolated linearly to N x 5N pairs.",
    "The one-stream model is assumed to reuse the unimodal encoders' token outputs (one encoder pass per image "
    "and per caption, not per pair); this favours the one-stream model.",
    "Re-ranking = full two-stream retrieval + one-stream scoring of the top-k captions of every image (N*k pairs).",
    "Training throughput: CookieStep + AdamW on synthetic cached features (4x1280 visual, 16x384 text tokens, "
    "float16 cache as in cookie_lib.features); 'live' runs MobileNetV2 fine-tuned (freeze_visual='none') on the "
    "fixture's real images with the real augmentations, captions cached. pairs/s = images/s, each with 2 views "
    "and 2 captions.",
    "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only: elementwise "
    "ops, norms and the optimiser are not counted), so achieved FLOP/s is a lower bound; convolution_backward is "
    "re-estimated as 2 x forward conv FLOPs because FlopCounterMode overcounts depthwise-conv backward ~20x here.",
]


# ----------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1, warmup: int = 0) -> list[float]:
    """Wall seconds of ``repeats`` calls of fn() after ``warmup`` calls (device-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def extrapolate_linear(seconds: float, measured: int, total: int | float) -> float:
    """Seconds for ``total`` items given ``seconds`` for ``measured`` items (cost linear in the count)."""
    if measured <= 0:
        raise ValueError(f"measured must be positive, got {measured}")
    return seconds * total / measured


def one_stream_pairs(n_images: int, caps_per_image: int = CAPS_PER_IMAGE) -> int:
    """Joint passes a one-stream model needs for full retrieval: every image with every caption."""
    return n_images * n_images * caps_per_image


def random_text_tokens(n: int, gen: torch.Generator, t: int = T_TXT, min_len: int = 4, device="cpu"):
    """Random caption token states [n, t, C_T] and a mask [n, t] with lengths uniform in [min_len, t]."""
    tokens = torch.randn(n, t, C_T, generator=gen)
    lengths = torch.randint(min_len, t + 1, (n,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return tokens.to(device), mask.to(device)


@torch.no_grad()
def score_pairs(model: OneStreamModel, img_tokens, txt_tokens, txt_mask, img_idx, txt_idx, batch: int = 1024):
    """One-stream scores of the pairs (img_idx[k], txt_idx[k]), ``batch`` pairs per joint pass -> [P]."""
    out = []
    for s in range(0, len(img_idx), batch):
        i, j = img_idx[s:s + batch], txt_idx[s:s + batch]
        out.append(model.score(img_tokens[i], txt_tokens[j], txt_mask[j]))
    return torch.cat(out)


@torch.no_grad()
def similarity_topk(img_emb: torch.Tensor, txt_emb: torch.Tensor, k: int = 10):
    """Full similarity matrix and the top-k both ways: (i2t [N, k], t2i [M, k]) indices."""
    sim = img_emb @ txt_emb.T
    i2t = sim.topk(k, dim=1).indices
    t2i = sim.T.topk(k, dim=1).indices
    return i2t, t2i


def fixture_captions() -> list[str]:
    data = json.loads((project_root() / FIXTURE).read_text())
    return [s["raw"] for im in data["images"] for s in im["sentences"]]


def fixture_train_records():
    from .data import load_karpathy
    return load_karpathy(project_root() / FIXTURE).split("train")


def head_config(depth: int = 2) -> ModelConfig:
    return ModelConfig(dim=256, depth=depth, heads=4)


class Rows:
    """Tidy result rows; ``add`` also prints a line of the report."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, benchmark, setting, metric, value, unit, note="", show=True):
        self.rows.append(dict(benchmark=benchmark, setting=setting, metric=metric, value=float(value),
                              unit=unit, note=note))
        if show:
            print(f"  {benchmark:10s} {setting:34s} {metric:26s} {_fmt(value):>12s} {unit}")

    def get(self, benchmark, setting, metric) -> float:
        for r in self.rows:
            if (r["benchmark"], r["setting"], r["metric"]) == (benchmark, setting, metric):
                return r["value"]
        raise KeyError((benchmark, setting, metric))

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["benchmark", "setting", "metric", "value", "unit", "note"])
        w.writeheader()
        for r in self.rows:
            w.writerow({**r, "value": f"{r['value']:.6g}"})
        return buf.getvalue()


def _fmt(v: float) -> str:
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


# ----------------------------------------------------------------------------- 1. inference
def measure_unit_costs(device: torch.device, sizes: dict, encoders=None, gen_seed: int = 0) -> dict:
    """Seconds per image / caption / pair of every component on ``device``."""
    gen = torch.Generator().manual_seed(gen_seed)
    visual, text = encoders if encoders is not None else (VisualEncoder("mobilenet_v2", "auto", "all"),
                                                          TextEncoder("auto", "all", 32))
    visual, text = visual.to(device).eval(), text.to(device).eval()
    costs = {}
    with torch.inference_mode():
        # visual encoder on random normalised images, batches of 256
        n = sizes["enc_images"]
        images = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
        run = lambda: [visual(b) for b in images.split(256)]  # noqa: E731
        costs["image_encoder"] = min(timed(run, device, repeats=2, warmup=1)) / n
        # text encoder incl. tokenisation, on real fixture captions (cycled)
        caps = fixture_captions()
        m = sizes["enc_captions"]
        texts = [caps[i % len(caps)] for i in range(m)]

        def run_text():
            for s in range(0, m, 256):
                enc = text.tokenize(texts[s:s + 256])
                text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        costs["text_encoder"] = min(timed(run_text, device, repeats=2, warmup=1)) / m
        # two-stream head: projections + shared transformer + pooling, batches of 1024
        torch.manual_seed(gen_seed)
        head = CookieModel(head_config(), C_V, C_T, T_V).to(device).eval()
        k = sizes["head_items"]
        img_tok = torch.randn(k, T_V, C_V, generator=gen).to(device)
        txt_tok, txt_mask = random_text_tokens(k, gen, device=device)
        costs["head_image"] = min(timed(lambda: [head.embed_image(b) for b in img_tok.split(1024)], device,
                                        repeats=2, warmup=1)) / k
        costs["head_text"] = min(timed(lambda: [head.embed_text(a, b) for a, b in
                                                zip(txt_tok.split(1024), txt_mask.split(1024))], device,
                                       repeats=2, warmup=1)) / k
        # one-stream joint transformer on a random subset of pairs from a token pool
        one = OneStreamModel(head_config(), C_V, C_T, T_V).to(device).eval()
        pool = sizes["pool"]
        p_img = torch.randn(pool, T_V, C_V, generator=gen).to(device)
        p_txt, p_mask = random_text_tokens(pool * CAPS_PER_IMAGE, gen, device=device)
        n_pairs = sizes["pairs"]
        ii = torch.randint(0, pool, (n_pairs,), generator=gen).to(device)
        jj = torch.randint(0, pool * CAPS_PER_IMAGE, (n_pairs,), generator=gen).to(device)
        bsz = sizes["pair_batch"]
        score_pairs(one, p_img, p_txt, p_mask, ii[:bsz], jj[:bsz], bsz)  # warm-up
        secs = min(timed(lambda: score_pairs(one, p_img, p_txt, p_mask, ii, jj, bsz), device, repeats=2))
        costs["one_stream_pair"] = extrapolate_linear(secs, n_pairs, 1)
        costs["measured_pairs"] = n_pairs
    return costs


def inference_benchmark(rows: Rows, device: torch.device, sizes: dict, encoders=None) -> dict:
    """Two-stream vs one-stream vs re-ranking retrieval time for N images and 5N captions."""
    print(f"\n[1] inference time on {device} (N images, 5N captions)")
    c = measure_unit_costs(device, sizes, encoders)
    dev = device.type
    rows.add("inference", f"{dev} per-item", "image_encoder", 1 / c["image_encoder"], "images/s",
             f"MobileNetV2 {IMAGE_SIZE}px, random images, {sizes['enc_images']} measured")
    rows.add("inference", f"{dev} per-item", "text_encoder", 1 / c["text_encoder"], "captions/s",
             f"MiniLM incl. tokenisation, fixture captions, {sizes['enc_captions']} measured")
    rows.add("inference", f"{dev} per-item", "head_image", 1 / c["head_image"], "images/s", "CookieModel d256 L2")
    rows.add("inference", f"{dev} per-item", "head_text", 1 / c["head_text"], "captions/s", "CookieModel d256 L2")
    rows.add("inference", f"{dev} per-item", "one_stream", 1 / c["one_stream_pair"], "pairs/s",
             f"OneStreamModel d256 L2, {c['measured_pairs']} random pairs, batch {sizes['pair_batch']}")
    gen = torch.Generator().manual_seed(1)
    curves = {"N": [], "two_stream": [], "one_stream": [], "rerank_k10": [], "rerank_k50": []}
    for n in sizes["ns"]:
        m = n * CAPS_PER_IMAGE
        setting = f"{dev} N={n} M={m}"
        enc = n * c["image_encoder"] + m * c["text_encoder"]
        head = n * c["head_image"] + m * c["head_text"]
        img = torch.nn.functional.normalize(torch.randn(n, 256, generator=gen), dim=1).to(device)
        txt = torch.nn.functional.normalize(torch.randn(m, 256, generator=gen), dim=1).to(device)
        sim = min(timed(lambda: similarity_topk(img, txt, min(10, n)), device, repeats=2, warmup=1))
        two = enc + head + sim
        pairs = one_stream_pairs(n)
        joint = extrapolate_linear(c["one_stream_pair"], 1, pairs)
        one = enc + joint
        note_x = "extrapolated linearly from measured per-item costs"
        rows.add("inference", setting, "encoders_s", enc, "s", note_x)
        rows.add("inference", setting, "two_stream_head_s", head, "s", note_x)
        rows.add("inference", setting, "similarity_top10_s", sim, "s", "measured on the full N x 5N matrix")
        rows.add("inference", setting, "one_stream_pairs_s", joint, "s", f"{pairs} pairs, {note_x}")
        rows.add("inference", setting, "two_stream_s", two, "s", "encoders + head + similarity + top-10 both ways")
        rows.add("inference", setting, "one_stream_s", one, "s", "encoders + N x 5N joint passes (extrapolated)")
        rows.add("inference", setting, "ratio_two_over_one", two / one, "ratio", f"paper: {PAPER_RATIO}")
        rows.add("inference", setting, "ratio_vs_paper", two / one / PAPER_RATIO, "x", "ratio / 0.003")
        rows.add("inference", setting, "ratio_excl_encoders", (head + sim) / joint, "ratio",
                 "head + similarity vs joint passes only")
        curves["N"].append(n)
        curves["two_stream"].append(two)
        curves["one_stream"].append(one)
        for k in (10, 50):
            kk = min(k, m)
            rr = two + extrapolate_linear(c["one_stream_pair"], 1, n * kk)
            rows.add("inference", setting, f"rerank_k{k}_s", rr, "s",
                     f"two-stream + one-stream scoring of top-{kk} captions per image ({n * kk} pairs)")
            rows.add("inference", setting, f"rerank_k{k}_ratio", rr / one, "ratio", "vs one-stream")
            curves[f"rerank_k{k}"].append(rr)
    return curves


def inference_figure(curves: dict, path: Path, title: str) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    n = curves["N"]
    ax.loglog(n, curves["one_stream"], "o-", label="one-stream (N x 5N joint passes, extrapolated)")
    ax.loglog(n, curves["rerank_k50"], "^--", label="two-stream + one-stream re-rank top-50")
    ax.loglog(n, curves["rerank_k10"], "v--", label="two-stream + one-stream re-rank top-10")
    ax.loglog(n, curves["two_stream"], "s-", label="two-stream (COOKIE)")
    ax.loglog(n, [PAPER_RATIO * t for t in curves["one_stream"]], ":", color="grey",
              label="paper's claim: 0.003 x one-stream")
    ax.set_xticks(n, [str(v) for v in n])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("gallery size N images (5N captions)")
    ax.set_ylabel("retrieval time, both directions (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------- 2./3. training
def synthetic_features(n_images: int, views: int, gen: torch.Generator) -> SplitFeatures:
    """Cached features of realistic shapes (float16 like the real cache); records are fixture images (cycled)."""
    base = fixture_train_records()
    records = [base[i % len(base)] for i in range(n_images)]
    m = n_images * CAPS_PER_IMAGE
    image_tokens = torch.randn(views, n_images, T_V, C_V, generator=gen).half()
    text_tokens, text_mask = random_text_tokens(m, gen)
    caption_ids = [list(range(i * CAPS_PER_IMAGE, (i + 1) * CAPS_PER_IMAGE)) for i in range(n_images)]
    texts = [f"caption {j}" for j in range(m)]
    return SplitFeatures(records, image_tokens, texts, text_tokens.half(), text_mask, caption_ids,
                         torch.arange(n_images))


VARIANTS = {  # name: (head depth, loss weights cross_modal / visual / textual)
    "cookie": (2, (1.0, 1.0, 1.0)),
    "cross_modal_only": (2, (1.0, 0.0, 0.0)),
    "dual_encoder": (0, (1.0, 0.0, 0.0)),
}


def make_train_step(variant: str, feats: SplitFeatures, live: bool, device: torch.device, batch: int,
                    amp: bool = False, seed: int = 0, visual_weights: str = "auto"):
    """A closure running one optimiser step (sample, forward, backward, AdamW) as the Trainer does."""
    depth, (cm, vis, txt) = VARIANTS[variant]
    torch.manual_seed(seed)
    visual = VisualEncoder("mobilenet_v2", visual_weights, "none").float().to(device) if live else None
    model = CookieModel(head_config(depth), C_V, C_T, T_V)
    loss = CookieLoss(LossConfig(cross_modal=cm, visual=vis, textual=txt))
    images = ImageTokens(feats, visual, IMAGE_SIZE, device)
    texts = TextTokens(feats, None, device)
    step = CookieStep(model, loss, images, texts).to(device).train()
    head = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    groups = [{"params": head, "lr": 5e-4}]
    if visual is not None:
        groups.append({"params": [p for p in visual.parameters() if p.requires_grad], "lr": 1e-5})
    opt = torch.optim.AdamW(groups, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    n = len(feats.records)

    def run():
        idx = torch.randperm(n, generator=gen)[:batch]
        va, vb, c1, c2 = sample_pairs(feats, idx, images.num_views, gen)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            total, _ = step(idx, va, vb, c1, c2, feats.keys[idx])
        total.backward()
        opt.step()
    return run


def matmul_ceiling(device: torch.device, n: int) -> float:
    """FLOP/s of an n^3 float32 matmul (best of 5): the practical ceiling on these threads."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    secs = min(timed(lambda: a @ b, device, repeats=5, warmup=1))
    return 2 * n ** 3 / secs


def count_flops(fn) -> int:
    """FLOPs of fn() by FlopCounterMode, with convolution_backward re-estimated as 2 x the forward conv FLOPs.

    In this torch version FlopCounterMode overcounts the backward of grouped (depthwise) convolutions
    about 10-20x (MobileNetV2 at 64 px: 49 MFLOP forward, 953 MFLOP counted for backward); a convolution's
    backward (grad input + grad weight) costs about twice its forward, which is what is used instead.
    """
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    counts = {str(k): v for k, v in fc.get_flop_counts().get("Global", {}).items()}
    total = fc.get_total_flops()
    if "aten.convolution_backward" in counts:
        total += 2 * counts.get("aten.convolution", 0) - counts["aten.convolution_backward"]
    return int(total)


def training_benchmark(rows: Rows, device: torch.device, sizes: dict, out: Path) -> dict:
    print(f"\n[2] training throughput on {device}, batch {sizes['batch']} (pairs/s = images/s)")
    gen = torch.Generator().manual_seed(0)
    n_images = max(4 * sizes["batch"], 128)
    feats = synthetic_features(n_images, views=4, gen=gen)
    live_feats = synthetic_features(n_images, views=1, gen=gen)
    b = sizes["batch"]
    result, steps = {}, {}
    for mode in ("cached", "live"):
        for variant in VARIANTS:
            live = mode == "live"
            run = make_train_step(variant, live_feats if live else feats, live, device, b)
            warm = sizes["live_warmup" if live else "cached_warmup"]
            n_steps = sizes["live_steps" if live else "cached_steps"]
            times = timed(run, device, repeats=n_steps, warmup=warm)
            med = statistics.median(times)
            result[(mode, variant)] = b / med
            steps[(mode, variant)] = run
            setting = f"{device.type} {mode} {variant}"
            note = f"median of {n_steps} steps after {warm} warm-up, batch {b}"
            rows.add("training", setting, "step_s", med, "s", note)
            rows.add("training", setting, "pairs_per_s", b / med, "pairs/s", note)
    for mode in ("cached", "live"):
        ref = result[(mode, "cookie")]
        for variant in ("cross_modal_only", "dual_encoder"):
            rows.add("training", f"{device.type} {mode} {variant}", "speed_vs_cookie", result[(mode, variant)] / ref,
                     "ratio", "pairs/s relative to full COOKIE, same mode")
    for variant in VARIANTS:
        rows.add("training", f"{device.type} {variant}", "cached_over_live",
                 result[("cached", variant)] / result[("live", variant)], "ratio", "pairs/s cached / live")

    print(f"\n[3] compute efficiency on {device}")
    ceiling = matmul_ceiling(device, sizes["matmul"])
    rows.add("compute", f"{device.type} matmul {sizes['matmul']}^3 fp32", "ceiling_flops_per_s", ceiling, "FLOP/s",
             f"best of 5, {torch.get_num_threads()} threads")
    compute = {"ceiling": ceiling}
    for mode in ("cached", "live"):
        flops = count_flops(steps[(mode, "cookie")])
        step_s = b / result[(mode, "cookie")]
        setting = f"{device.type} {mode} cookie"
        rows.add("compute", setting, "flops_per_step", flops, "FLOP", "FlopCounterMode: matmul/conv/attention only; conv backward = 2 x conv forward")
        rows.add("compute", setting, "achieved_flops_per_s", flops / step_s, "FLOP/s", "FLOPs / median step time")
        rows.add("compute", setting, "fraction_of_ceiling", flops / step_s / ceiling, "ratio", "vs fp32 matmul")
        compute[mode] = flops / step_s / ceiling
    compute["top_ops"] = profile_steps(steps, sizes["profile_steps"], out / "profile_train_step.txt", rows, device)
    return {"pairs_per_s": {f"{m} {v}": x for (m, v), x in result.items()}, "compute": compute}


def profile_steps(steps: dict, n: int, path: Path, rows: Rows, device: torch.device) -> dict:
    """torch.profiler tables (self CPU time) of the cached and live full-COOKIE steps."""
    from torch.profiler import ProfilerActivity, profile

    texts, tops = [], {}
    for mode in ("cached", "live"):
        run = steps[(mode, "cookie")]
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(n if mode == "cached" else 1):
                run()
            _sync(device)
        avg = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in avg) or 1.0
        ranked = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
        tops[mode] = [(e.key, e.self_cpu_time_total / total) for e in ranked]
        for e in ranked:
            rows.add("compute", f"{device.type} {mode} cookie profile", f"self_cpu_share:{e.key}",
                     e.self_cpu_time_total / total, "fraction", "torch.profiler, share of total self CPU time",
                     show=False)
        texts.append(f"=== {mode} features, full COOKIE (3 losses, shared head), "
                     f"{n if mode == 'cached' else 1} training step(s), sorted by self CPU time ===\n"
                     + avg.table(sort_by="self_cpu_time_total", row_limit=25))
    atomic_write_text("\n\n".join(texts) + "\n", path)
    for mode, top in tops.items():
        print(f"  where the time goes ({mode} step, self CPU share): "
              + ", ".join(f"{k} {100 * s:.0f}%" for k, s in top))
    return tops


# ----------------------------------------------------------------------------- 4. evaluation at scale
def eval_scale_child(n: int, caps: int, d: int) -> None:
    """Run in a fresh process by eval_benchmark: time cross_modal_retrieval on random unit embeddings
    (N x caps*N, D=d) and sample the RSS every 2 ms during the call; print one JSON line."""
    import resource
    import threading

    try:
        import psutil
        proc = psutil.Process()
    except ImportError:
        proc = None
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(n * caps, d, generator=g), dim=1)
    t2i = torch.arange(n).repeat_interleave(caps)
    cross_modal_retrieval(img[:64], txt[:320], t2i[:320] % 64)  # warm-up (lazy imports, thread pool)

    def rss() -> int:
        return proc.memory_info().rss if proc else 0

    peak, done = [rss()], []

    def sample():
        while not done:
            peak.append(rss())
            time.sleep(0.002)

    before_rss = rss()
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    th = threading.Thread(target=sample, daemon=True)
    if proc:
        th.start()
    t0 = time.perf_counter()
    res = cross_modal_retrieval(img, txt, t2i)
    secs = time.perf_counter() - t0
    done.append(True)
    if proc:
        th.join()
    after_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mib = 1 / 2**20
    print(json.dumps({"seconds": secs, "threads": torch.get_num_threads(), "rsum": res["rsum"],
                      "psutil": proc is not None,
                      "psutil_peak_delta_mib": (max(peak) - before_rss) * mib,
                      "ru_maxrss_delta_mib": (after_max - before_max) * mib,
                      "ru_maxrss_mib": after_max * mib,
                      "rss_before_mib": before_rss * mib}))


def eval_benchmark(rows: Rows, n_images: int, dim: int = 256) -> dict:
    m = n_images * CAPS_PER_IMAGE
    print(f"\n[4] cross_modal_retrieval at scale: {n_images} x {m}, D={dim} (fresh subprocess)")
    env = {**os.environ, "PYTHONPATH": str(project_root()) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = f"from cookie_lib.bench import eval_scale_child; eval_scale_child({n_images}, {CAPS_PER_IMAGE}, {dim})"
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, cwd=project_root(), env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation subprocess failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    setting = f"cpu {n_images}x{m} D={dim}"
    rows.add("eval_scale", setting, "seconds", res["seconds"], "s",
             f"random unit embeddings, after a tiny warm-up, {res['threads']} threads")
    if res["psutil"]:
        rows.add("eval_scale", setting, "peak_rss_delta_mib", max(res["psutil_peak_delta_mib"], 0.0), "MiB",
                 "psutil RSS sampled every 2 ms during the call (fresh subprocess), minus RSS before it")
    rows.add("eval_scale", setting, "ru_maxrss_delta_mib", max(res["ru_maxrss_delta_mib"], 0.0), "MiB",
             "resource.getrusage ru_maxrss after minus before the call, fresh subprocess "
             "(0 when the call stays below the process's earlier peak)")
    rows.add("eval_scale", setting, "ru_maxrss_mib", res["ru_maxrss_mib"], "MiB",
             "whole-process peak RSS incl. torch import")
    res["delta_mib"] = res["psutil_peak_delta_mib"] if res["psutil"] else res["ru_maxrss_delta_mib"]
    return res


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="COOKIE systems benchmarks (see module docstring).")
    p.add_argument("--quick", action="store_true", help="shrink every size (CI, < 60 s)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = QUICK if a.quick else FULL
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    print(f"cookie benchmarks ({'quick' if a.quick else 'full'}): torch {torch.__version__}, "
          f"{threads} threads (torch.get_num_threads()), device {device}")
    rows = Rows()
    rows.add("environment", "cpu", "torch_threads", threads, "threads", "torch.get_num_threads()")
    rows.add("environment", "cpu", "load_avg_1min_start", os.getloadavg()[0], "load",
             f"os.getloadavg() on {os.cpu_count()} CPUs: other processes share these cores")

    curves = inference_benchmark(rows, device, sizes)
    fig = out / "fig_inference_time.png"
    inference_figure(curves, fig, f"COOKIE retrieval time, CPU {threads} threads (one-stream extrapolated)")
    train = training_benchmark(rows, device, sizes, out)
    ev = eval_benchmark(rows, sizes["eval_images"])
    total = time.perf_counter() - t_start
    rows.add("environment", "cpu", "benchmark_wall_s", total, "s", "whole benchmark run")
    rows.add("environment", "cpu", "load_avg_1min_end", os.getloadavg()[0], "load", "os.getloadavg()")

    headline = {
        "threads": threads,
        "inference": {str(n): {"two_stream_s": rows.get("inference", f"cpu N={n} M={5 * n}", "two_stream_s"),
                               "one_stream_s": rows.get("inference", f"cpu N={n} M={5 * n}", "one_stream_s"),
                               "ratio": rows.get("inference", f"cpu N={n} M={5 * n}", "ratio_two_over_one"),
                               "rerank_k10_s": rows.get("inference", f"cpu N={n} M={5 * n}", "rerank_k10_s"),
                               "rerank_k50_s": rows.get("inference", f"cpu N={n} M={5 * n}", "rerank_k50_s")}
                      for n in sizes["ns"]},
        "paper_ratio": PAPER_RATIO,
        "training_pairs_per_s": train["pairs_per_s"],
        "fraction_of_matmul_ceiling": {k: train["compute"][k] for k in ("cached", "live")},
        "matmul_ceiling_flops_per_s": train["compute"]["ceiling"],
        "eval_scale": ev,
    }
    print("\nheadline")
    for n, h in headline["inference"].items():
        print(f"  N={n:>5s}: two-stream {h['two_stream_s']:.3g} s, one-stream {h['one_stream_s']:.3g} s, "
              f"ratio {h['ratio']:.3g} (paper 0.003), re-rank top-10 {h['rerank_k10_s']:.3g} s, "
              f"top-50 {h['rerank_k50_s']:.3g} s")
    for k, v in headline["training_pairs_per_s"].items():
        print(f"  training {k:28s} {v:8.1f} pairs/s")
    print(f"  achieved / fp32 matmul ceiling ({headline['matmul_ceiling_flops_per_s'] / 1e9:.1f} GFLOP/s): "
          f"cached {100 * headline['fraction_of_matmul_ceiling']['cached']:.1f} %, "
          f"live {100 * headline['fraction_of_matmul_ceiling']['live']:.1f} %")
    print(f"  eval {sizes['eval_images']} x {5 * sizes['eval_images']}: {ev['seconds']:.2f} s, peak RSS "
          f"+{ev['delta_mib']:.0f} MiB ({'psutil sampling' if ev['psutil'] else 'ru_maxrss delta'}, fresh subprocess)")
    print(f"  total {total:.0f} s")

    if not all(math.isfinite(r["value"]) for r in rows.rows):
        raise RuntimeError("a benchmark produced a non-finite value")
    atomic_write_text(rows.csv_text(), out / "benchmarks.csv")
    atomic_write_json(manifest(None, benchmark="cookie_lib.bench", quick=a.quick, sizes=sizes, headline=headline,
                               assumptions=ASSUMPTIONS, rows=rows.rows), out / "benchmarks.json")
    print(f"wrote {out / 'benchmarks.csv'}, {out / 'benchmarks.json'}, {fig}, {out / 'profile_train_step.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
