"""Shapes shared by every benchmark, defined once: image size, encoder widths, caption length, head size.

The widths are those of the packaged encoders (MobileNetV2's last feature map, all-MiniLM-L6-v2's hidden
size); notebooks and scripts import them from here rather than repeating the numbers.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ...config import ModelConfig, project_root
from ...features import SplitFeatures
from ...model import visual_tokens_for

IMAGE_SIZE = 64
T_V = visual_tokens_for(IMAGE_SIZE)  # 4 grid tokens at 64 px
C_V = 1280  # MobileNetV2 feature width (torchvision mobilenet_v2.features output channels)
C_T = 384  # all-MiniLM-L6-v2 hidden size
T_TXT = 16  # typical caption length in word pieces
CAPS_PER_IMAGE = 5
FIXTURE = "data/fixture_emoji/dataset_emoji.json"

# Sizes of every measurement; --quick uses the second set. fit_ns / holdout_n / repeats: the end-to-end
# retrieval timings the cost model is fitted and checked on (python -m cookie_lib.study.bench can override them);
# FULL repeats N = 300 twice, not 3 times: one exhaustive pass there is 450,000 joint passes (~1.5 min on 2 cores).
# study_*: the study's own frozen and fine-tuned steps (cookie_lib.study.bench.studystep), timed steps per
# precision, warm-up, profiled steps, the n of the n^3 matmul ceiling.
FULL = dict(fit_ns=(100, 300), holdout_n=200, repeats=(3, 2), holdout_repeats=1, resamples=999, batch=128, cached_warmup=2, cached_steps=10,
            live_warmup=1, live_steps=4, profile_steps=3, matmul=2048, eval_images=5000,
            study_steps=8, study_warmup=2, study_profile_steps=2, study_matmul=1024,
            curve_ns=tuple(int(x) for x in np.unique(np.logspace(1, 6, 26).round())))
QUICK = dict(fit_ns=(4, 12), holdout_n=8, repeats=3, holdout_repeats=2, resamples=199, batch=16, cached_warmup=1, cached_steps=2,
             live_warmup=1, live_steps=1, profile_steps=1, matmul=512, eval_images=500,
             study_steps=2, study_warmup=1, study_profile_steps=1, study_matmul=256,
             curve_ns=(10, 100, 1000, 10000, 100000))


def head_config(depth: int = 2) -> ModelConfig:
    """The head every benchmark times: d = 256, 4 heads, ``depth`` layers (the study's default model)."""
    return ModelConfig(dim=256, depth=depth, heads=4)


def random_text_tokens(n: int, gen: torch.Generator, t: int = T_TXT, min_len: int = 4, device="cpu"):
    """Random caption token states [n, t, C_T] and a mask [n, t] with lengths uniform in [min_len, t]."""
    tokens = torch.randn(n, t, C_T, generator=gen)
    lengths = torch.randint(min_len, t + 1, (n,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return tokens.to(device), mask.to(device)


def fixture_captions() -> list[str]:
    """Every caption string of the committed fixture corpus (real text for the tokenizer's timing)."""
    data = json.loads((project_root() / FIXTURE).read_text())
    return [s["raw"] for im in data["images"] for s in im["sentences"]]


def fixture_train_records():
    from ...data import load_karpathy
    return load_karpathy(project_root() / FIXTURE).split("train")


def synthetic_features(n_images: int, views: int, gen: torch.Generator) -> SplitFeatures:
    """Cached features of realistic shapes (float16 like the real cache): image tokens [views, n, T_V, C_V],
    CAPS_PER_IMAGE random captions per image [5n, T_TXT, C_T]; records are fixture images (cycled)."""
    base = fixture_train_records()
    records = [base[i % len(base)] for i in range(n_images)]
    m = n_images * CAPS_PER_IMAGE
    image_tokens = torch.randn(views, n_images, T_V, C_V, generator=gen).half()
    text_tokens, text_mask = random_text_tokens(m, gen)
    caption_ids = [list(range(i * CAPS_PER_IMAGE, (i + 1) * CAPS_PER_IMAGE)) for i in range(n_images)]
    texts = [f"caption {j}" for j in range(m)]
    return SplitFeatures(records, image_tokens, texts, text_tokens.half(), text_mask, caption_ids,
                         torch.arange(n_images))
