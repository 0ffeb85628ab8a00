"""Inference time: two-stream (COOKIE) vs one-stream (joint transformer) vs two-stream + re-rank.

Per-item costs are measured on samples and combined for N images and 5N captions; the one-stream
exhaustive time is also measured end to end at one small N (:func:`measure_exhaustive`), next to its
extrapolation, so the extrapolation itself is checked.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ...model import CookieModel, OneStreamModel, TextEncoder, VisualEncoder
from ..report import PAPER_INFERENCE_RATIO
from .shapes import CAPS_PER_IMAGE, C_T, C_V, IMAGE_SIZE, T_V, fixture_captions, head_config, random_text_tokens
from .timing import Rows, count_flops, extrapolate_linear, sync, timed


def one_stream_pairs(n_images: int, caps_per_image: int = CAPS_PER_IMAGE) -> int:
    """Joint passes a one-stream model needs for full retrieval: every image with every caption."""
    return n_images * n_images * caps_per_image


@torch.no_grad()
def score_pairs(model: OneStreamModel, img_tokens, txt_tokens, txt_mask, img_idx, txt_idx, batch: int = 1024):
    """One-stream scores of the pairs (img_idx[k], txt_idx[k]), ``batch`` pairs per joint pass -> [P].

    Each pass is trimmed to its longest caption (padding columns are masked out of attention, so the
    scores do not change; the cost does): order pairs by caption length to make passes short."""
    out = []
    for s in range(0, len(img_idx), batch):
        i, j = img_idx[s:s + batch], txt_idx[s:s + batch]
        mask = txt_mask[j]
        width = max(int(mask.sum(1).max()), 1)
        out.append(model.score(img_tokens[i], txt_tokens[j, :width], mask[:, :width]))
    return torch.cat(out)


@torch.no_grad()
def similarity_topk(img_emb: torch.Tensor, txt_emb: torch.Tensor, k: int = 10):
    """Full similarity matrix and the top-k both ways: (i2t [N, k], t2i [M, k]) indices."""
    sim = img_emb @ txt_emb.T
    i2t = sim.topk(k, dim=1).indices
    t2i = sim.T.topk(k, dim=1).indices
    return i2t, t2i


def default_encoders():
    return VisualEncoder("mobilenet_v2", "auto", "all"), TextEncoder("auto", "all", 32)


def measure_unit_costs(device: torch.device, sizes: dict, encoders=None, gen_seed: int = 0) -> dict:
    """Seconds per image / caption / pair of every component on ``device``."""
    gen = torch.Generator().manual_seed(gen_seed)
    visual, text = encoders if encoders is not None else default_encoders()
    visual, text = visual.to(device).eval(), text.to(device).eval()
    costs = {}
    with torch.inference_mode():
        n = sizes["enc_images"]
        images = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
        costs["image_encoder"] = min(timed(lambda: [visual(b) for b in images.split(256)], device,
                                           repeats=2, warmup=1)) / n
        caps = fixture_captions()
        m = sizes["enc_captions"]
        texts = [caps[i % len(caps)] for i in range(m)]

        def run_text():
            for s in range(0, m, 256):
                enc = text.tokenize(texts[s:s + 256])
                text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        costs["text_encoder"] = min(timed(run_text, device, repeats=2, warmup=1)) / m
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


def measure_exhaustive(n_images: int, device: torch.device, encoders=None, pair_batch: int = 1024,
                       seed: int = 0, count: bool = False) -> dict:
    """One-stream retrieval over n images x 5n captions, end to end and measured (not extrapolated):
    encode n random images and 5n fixture captions, then score every one of the 5 n^2 pairs with a
    (randomly initialised: time does not depend on the weights) OneStreamModel, ``pair_batch`` pairs
    per pass, and take the top-10 both ways. Returns ``{"seconds", "pairs", "encode_s", "joint_s"}``, and
    with ``count`` also ``joint_flops``: the joint passes' FLOPs (FlopCounterMode, counted afterwards in
    train mode so attention takes the explicit path the counter sees; not timed)."""
    gen = torch.Generator().manual_seed(seed)
    visual, text = encoders if encoders is not None else default_encoders()
    visual, text = visual.to(device).eval(), text.to(device).eval()
    torch.manual_seed(seed)
    one = OneStreamModel(head_config(), C_V, C_T, T_V).to(device).eval()
    m = n_images * CAPS_PER_IMAGE
    caps = fixture_captions()
    texts = [caps[i % len(caps)] for i in range(m)]
    images = torch.randn(n_images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        img_tok = torch.cat([visual(b) for b in images.split(256)])
        enc = text.tokenize(texts)
        txt_tok, txt_mask = text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        sync(device)
        t1 = time.perf_counter()
        # caption-major, captions by length: each joint pass is as short as its longest caption
        by_len = torch.argsort(txt_mask.sum(1), stable=True)
        jj = by_len.repeat_interleave(n_images)
        ii = torch.arange(n_images, device=device).repeat(m)
        flat = score_pairs(one, img_tok, txt_tok, txt_mask, ii, jj, pair_batch)
        scores = torch.empty(n_images, m, device=device, dtype=flat.dtype)
        scores[ii, jj] = flat
        k = min(10, n_images)
        scores.topk(min(10, m), dim=1), scores.T.topk(k, dim=1)
        sync(device)
        t2 = time.perf_counter()
    out = {"seconds": t2 - t0, "pairs": n_images * m, "encode_s": t1 - t0, "joint_s": t2 - t1}
    if count:
        one.train()
        with torch.no_grad():
            out["joint_flops"] = count_flops(lambda: score_pairs(one, img_tok, txt_tok, txt_mask, ii, jj, pair_batch))
    return out


def inference_benchmark(rows: Rows, device: torch.device, sizes: dict, encoders=None) -> dict:
    """Two-stream vs one-stream vs re-ranking retrieval time for N images and 5N captions; returns the
    curves (for the figure) and the unit costs (for the cost model)."""
    print(f"\n[1] inference time on {device} (N images, 5N captions)")
    c = measure_unit_costs(device, sizes, encoders)
    dev = device.type
    per = dict(device=dev)
    rows.add("inference", f"{dev} per-item", "image_encoder", 1 / c["image_encoder"], "images/s",
             f"MobileNetV2 {IMAGE_SIZE}px, random images, {sizes['enc_images']} measured", **per)
    rows.add("inference", f"{dev} per-item", "text_encoder", 1 / c["text_encoder"], "captions/s",
             f"MiniLM incl. tokenisation, fixture captions, {sizes['enc_captions']} measured", **per)
    rows.add("inference", f"{dev} per-item", "head_image", 1 / c["head_image"], "images/s", "CookieModel d256 L2", **per)
    rows.add("inference", f"{dev} per-item", "head_text", 1 / c["head_text"], "captions/s", "CookieModel d256 L2",
             **per)
    rows.add("inference", f"{dev} per-item", "one_stream", 1 / c["one_stream_pair"], "pairs/s",
             f"OneStreamModel d256 L2, {c['measured_pairs']} random pairs, batch {sizes['pair_batch']}", **per)
    gen = torch.Generator().manual_seed(1)
    curves = {"N": [], "two_stream": [], "one_stream": [], "rerank_k10": [], "rerank_k50": [], "similarity": []}
    for n in sizes["ns"]:
        m = n * CAPS_PER_IMAGE
        setting = f"{dev} N={n} M={m}"
        cols = dict(device=dev, n_images=n, n_captions=m)
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
        rows.add("inference", setting, "encoders_s", enc, "s", note_x, **cols)
        rows.add("inference", setting, "two_stream_head_s", head, "s", note_x, **cols)
        rows.add("inference", setting, "similarity_top10_s", sim, "s", "measured on the full N x 5N matrix", **cols)
        rows.add("inference", setting, "one_stream_pairs_s", joint, "s", f"{pairs} pairs, {note_x}", **cols)
        rows.add("inference", setting, "two_stream_s", two, "s", "encoders + head + similarity + top-10 both ways",
                 **cols)
        rows.add("inference", setting, "one_stream_s", one, "s", "encoders + N x 5N joint passes (extrapolated)",
                 **cols)
        rows.add("inference", setting, "ratio_two_over_one", two / one, "ratio", f"paper: {PAPER_INFERENCE_RATIO}",
                 **cols)
        rows.add("inference", setting, "ratio_vs_paper", two / one / PAPER_INFERENCE_RATIO, "x",
                 "ratio / paper ratio", **cols)
        rows.add("inference", setting, "ratio_excl_encoders", (head + sim) / joint, "ratio",
                 "head + similarity vs joint passes only", **cols)
        curves["N"].append(n)
        curves["two_stream"].append(two)
        curves["one_stream"].append(one)
        curves["similarity"].append(sim)
        for k in (10, 50):
            kk = min(k, m)
            rr = two + extrapolate_linear(c["one_stream_pair"], 1, n * kk)
            rows.add("inference", setting, f"rerank_k{k}_s", rr, "s",
                     f"two-stream + one-stream scoring of top-{kk} captions per image ({n * kk} pairs)", **cols)
            rows.add("inference", setting, f"rerank_k{k}_ratio", rr / one, "ratio", "vs one-stream", **cols)
            curves[f"rerank_k{k}"].append(rr)
    return {"curves": curves, "unit_costs": c}


def exhaustive_benchmark(rows: Rows, device: torch.device, n_images: int, unit_costs: dict, encoders=None) -> dict:
    """The one-stream exhaustive time at ``n_images`` measured end to end, beside its extrapolation
    (encoders + 5 n^2 x the sampled per-pair cost)."""
    m = n_images * CAPS_PER_IMAGE
    print(f"\n[1b] one-stream exhaustive retrieval measured end to end: {n_images} x {m} on {device}")
    res = measure_exhaustive(n_images, device, encoders)
    c = unit_costs
    extrap = n_images * c["image_encoder"] + m * c["text_encoder"] + res["pairs"] * c["one_stream_pair"]
    setting = f"{device.type} N={n_images} M={m} exhaustive"
    cols = dict(device=device.type, n_images=n_images, n_captions=m, mode="exhaustive")
    rows.add("inference", setting, "one_stream_measured_s", res["seconds"], "s",
             f"encoders + all {res['pairs']} joint passes + top-10, measured end to end", **cols)
    rows.add("inference", setting, "one_stream_extrapolated_s", extrap, "s",
             "encoders + pairs x per-pair cost from the pair sample", **cols)
    rows.add("inference", setting, "measured_over_extrapolated", res["seconds"] / extrap, "ratio", "", **cols)
    return {**res, "extrapolated_s": extrap}


def inference_figure(curves: dict, path: Path, title: str) -> Path:
    """Log-log retrieval time against N for the three strategies, written by plots.save_figure."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from ..plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    n = curves["N"]
    ax.loglog(n, curves["one_stream"], "o-", label="one-stream (N x 5N joint passes, extrapolated)")
    ax.loglog(n, curves["rerank_k50"], "^--", label="two-stream + one-stream re-rank top-50")
    ax.loglog(n, curves["rerank_k10"], "v--", label="two-stream + one-stream re-rank top-10")
    ax.loglog(n, curves["two_stream"], "s-", label="two-stream (COOKIE)")
    ax.loglog(n, [PAPER_INFERENCE_RATIO * t for t in curves["one_stream"]], ":", color="grey",
              label="paper's claim: 3/1000 x one-stream")
    ax.set_xticks(n, [str(v) for v in n])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("gallery size N images (5N captions)")
    ax.set_ylabel("retrieval time, both directions (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
