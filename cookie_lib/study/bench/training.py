"""Training throughput and compute efficiency, through the library's one training step
(:func:`cookie_lib.step.train_step` with :func:`cookie_lib.step.build_optimizer`): the benchmark
times exactly what :class:`cookie_lib.train.Trainer` runs, with no optimiser of its own."""
from __future__ import annotations

import statistics
from pathlib import Path

import torch

from ...config import LossConfig, TrainConfig
from ...features import ImageTokens, SplitFeatures, TextTokens
from ...losses import CookieLoss
from ...model import CookieModel, VisualEncoder
from ...runtime import atomic_write_text
from ...step import CookieStep, build_optimizer, build_scheduler, train_step
from .shapes import C_T, C_V, IMAGE_SIZE, T_V, head_config, synthetic_features
from .timing import Rows, count_flops, matmul_ceiling, sync, timed

# Not the study grid's variants: the three cost classes timed here.
THROUGHPUT_VARIANTS = {  # name: (head depth, loss weights cross_modal / visual / textual)
    "cookie": (2, (1.0, 1.0, 1.0)),
    "cross_modal_only": (2, (1.0, 0.0, 0.0)),
    "dual_encoder": (0, (1.0, 0.0, 0.0)),
}


def make_train_step(variant: str, feats: SplitFeatures, live: bool, device: torch.device, batch: int,
                    amp: bool = False, seed: int = 0, visual_weights: str = "auto"):
    """A closure running one optimiser step (sample, forward, backward, AdamW) through
    :func:`cookie_lib.step.train_step`, with the default TrainConfig's learning rates and weight decay."""
    depth, (cm, vis, txt) = THROUGHPUT_VARIANTS[variant]
    torch.manual_seed(seed)
    visual = VisualEncoder("mobilenet_v2", visual_weights, "none").float().to(device) if live else None
    model = CookieModel(head_config(depth), C_V, C_T, T_V)
    loss = CookieLoss(LossConfig(cross_modal=cm, visual=vis, textual=txt))
    images = ImageTokens(feats, visual, IMAGE_SIZE, device)
    texts = TextTokens(feats, None, device)
    step = CookieStep(model, loss, images, texts).to(device).train()
    opt = build_optimizer([model, loss], [visual], TrainConfig())
    sched = build_scheduler(opt, 0, 1, min_ratio=1.0)  # a constant rate: the time does not depend on it
    gen = torch.Generator().manual_seed(seed)
    n = len(feats.records)
    counter = [0]

    def run():
        idx = torch.randperm(n, generator=gen)[:batch]
        train_step(step, opt, sched, feats, [idx], gen, step=counter[0], amp="bf16" if amp else "none")
        counter[0] += 1
    return run


def training_benchmark(rows: Rows, device: torch.device, sizes: dict, out: Path) -> dict:
    print(f"\n[2] training throughput on {device}, batch {sizes['batch']} (pairs/s = images/s)")
    gen = torch.Generator().manual_seed(0)
    n_images = max(4 * sizes["batch"], 128)
    feats = synthetic_features(n_images, views=4, gen=gen)
    live_feats = synthetic_features(n_images, views=1, gen=gen)
    b = sizes["batch"]
    dev = device.type
    result, steps = {}, {}
    for mode in ("cached", "live"):
        for variant in THROUGHPUT_VARIANTS:
            live = mode == "live"
            run = make_train_step(variant, live_feats if live else feats, live, device, b)
            warm = sizes["live_warmup" if live else "cached_warmup"]
            n_steps = sizes["live_steps" if live else "cached_steps"]
            med = statistics.median(timed(run, device, repeats=n_steps, warmup=warm))
            result[(mode, variant)] = b / med
            steps[(mode, variant)] = run
            setting, cols = f"{dev} {mode} {variant}", dict(device=dev, mode=mode, variant=variant)
            note = f"median of {n_steps} steps after {warm} warm-up, batch {b}"
            rows.add("training", setting, "step_s", med, "s", note, **cols)
            rows.add("training", setting, "pairs_per_s", b / med, "pairs/s", note, **cols)
    for mode in ("cached", "live"):
        ref = result[(mode, "cookie")]
        for variant in ("cross_modal_only", "dual_encoder"):
            rows.add("training", f"{dev} {mode} {variant}", "speed_vs_cookie", result[(mode, variant)] / ref,
                     "ratio", "pairs/s relative to full COOKIE, same mode", device=dev, mode=mode, variant=variant)
    for variant in THROUGHPUT_VARIANTS:
        rows.add("training", f"{dev} {variant}", "cached_over_live",
                 result[("cached", variant)] / result[("live", variant)], "ratio", "pairs/s cached / live",
                 device=dev, variant=variant)

    print(f"\n[3] compute efficiency on {device}")
    ceiling = matmul_ceiling(device, sizes["matmul"])
    rows.add("compute", f"{dev} matmul {sizes['matmul']}^3 fp32", "ceiling_flops_per_s", ceiling, "FLOP/s",
             f"best of 5, {torch.get_num_threads()} threads", device=dev)
    compute = {"ceiling": ceiling}
    for mode in ("cached", "live"):
        flops = count_flops(steps[(mode, "cookie")])
        step_s = b / result[(mode, "cookie")]
        setting, cols = f"{dev} {mode} cookie", dict(device=dev, mode=mode, variant="cookie")
        rows.add("compute", setting, "flops_per_step", flops, "FLOP",
                 "FlopCounterMode: matmul/conv/attention only; conv backward = 2 x conv forward", **cols)
        rows.add("compute", setting, "achieved_flops_per_s", flops / step_s, "FLOP/s", "FLOPs / median step time",
                 **cols)
        rows.add("compute", setting, "fraction_of_ceiling", flops / step_s / ceiling, "ratio", "vs fp32 matmul",
                 **cols)
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
            sync(device)
        avg = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in avg) or 1.0
        ranked = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
        tops[mode] = [(e.key, e.self_cpu_time_total / total) for e in ranked]
        for e in ranked:
            rows.add("compute", f"{device.type} {mode} cookie profile", f"self_cpu_share:{e.key}",
                     e.self_cpu_time_total / total, "fraction", "torch.profiler, share of total self CPU time",
                     show=False, device=device.type, mode=mode, variant="cookie")
        texts.append(f"=== {mode} features, full COOKIE (3 losses, shared head), "
                     f"{n if mode == 'cached' else 1} training step(s), sorted by self CPU time ===\n"
                     + avg.table(sort_by="self_cpu_time_total", row_limit=25))
    atomic_write_text("\n\n".join(texts) + "\n", path)
    for mode, top in tops.items():
        print(f"  where the time goes ({mode} step, self CPU share): "
              + ", ".join(f"{k} {100 * s:.0f}%" for k, s in top))
    return tops
