"""The study's variants: each one a set of dotted overrides of a profile's training config, and the lists that
say which variants the study trains, with which seeds, and which contrast families read them.

"cookie" is the full model (the profile's shared head of L = model.depth layers, three losses); the others
remove one component. A variant's config is :func:`variant_config`; the training and loading of runs is
:mod:`cookie_lib.study.grid`.

    from cookie_lib.study.variants import variant_config, PRIMARY
    cfg = variant_config("default", "separate_1", seed=10)   # depth L/2 per stack: parameter-matched
"""
from __future__ import annotations

from ..config import Config, ConfigError, load_config
from .profile import load_run_profile

# PRIMARY variants enter the pre-registered contrasts
# (docs/preregistration.yaml) and run with the profile's ``seeds`` (>= 5); SECONDARY ones are exploratory sweeps
# run with ``secondary_seeds``.
VARIANTS: dict[str, dict] = {
    "cookie": {},
    "cross_modal_only": {"loss.visual": 0.0, "loss.textual": 0.0},  # a CLIP-style dual encoder with a head
    "no_visual": {"loss.visual": 0.0},
    "no_textual": {"loss.textual": 0.0},
    "separate_1": {"model.shared": False},  # two L/2-layer stacks (PARAMETER_MATCHED): as many head parameters as cookie
    "separate_2": {"model.shared": False},  # two L-layer stacks: the same compute per embedding as cookie
    "depth_0": {"model.depth": 0},  # projections + final LayerNorm + pooling only
    "depth_1": {"model.depth": 1},
    "visual_concept": {"loss.visual_positives": "concept"},  # the labelled ablation: same-concept images as positives
}
# The fine-tuned arm (cookie_lib.prefix): the same variants with the last FT_BLOCKS CNN blocks and text layers
# trained on the cached frozen prefix at FT_ENCODER_LR, run with the profile's ``finetune_seeds`` (none by default).
FT_BLOCKS = 1  # k: the cost/benefit pilot (python -m cookie_lib.study.bench.finetune; docs/method.md) ordered k = 2
# above k = 1 on validation mR after 30 steps, but k = 1 costs 0.69x as much per step (bf16, 1 thread: 350 vs 243
# pairs/s); chosen to bring both arms at the plateau budget near run_all's time (pre-registration version 3; the
# committed run still trained 92 min on a shared 2-core machine)
FT_ENCODER_LR = 1e-4  # 10x below the head's lr; the config default 1e-5 barely moves a tail in ~400 steps
FINETUNE = {"model.finetune_visual_blocks": FT_BLOCKS, "model.finetune_text_layers": FT_BLOCKS,
            "train.encoder_lr": FT_ENCODER_LR}
VARIANTS.update({f"ft_{v}": {**FINETUNE, **VARIANTS[v]} for v in ("cookie", "cross_modal_only", "no_visual",
                                                                   "no_textual")})
FINETUNED = ["ft_cookie", "ft_cross_modal_only", "ft_no_visual", "ft_no_textual"]
# The fine-tuned arm trains for the profile's ``finetune_epochs`` (its plateau needs more epochs than the frozen
# arm's); its initialization comparator is the frozen arm's cookie trained for the same budget, so that P3/P4 of
# the pre-registration compare fine-tuning, not a longer schedule.
VARIANTS["cookie_long"] = {}
BUDGET_MATCHED = ["cookie_long"]
LONG_BUDGET = FINETUNED + BUDGET_MATCHED  # the variants that train for ``finetune_epochs``
# Frozen arm: PRIMARY variants run with the profile's ``seeds``, SECONDARY with ``secondary_seeds``; the fine-tuned
# arm (FINETUNED) with ``finetune_seeds``. The loss ablation is read on the fine-tuned arm, beside the frozen
# models it starts from (pre-registration version 3); no_visual, no_textual and visual_concept keep their
# definitions (``grid one``) but are not part of the study's run.
PRIMARY = ["cookie", "cross_modal_only", "separate_1", "separate_2"]
SECONDARY = ["depth_0", "depth_1"]
LOSS_ABLATION = FINETUNED + ["cookie", "cross_modal_only"]
HEAD_ABLATION = ["cookie", "separate_1", "separate_2", "depth_0", "depth_1"]
STUDIED = LONG_BUDGET + PRIMARY + SECONDARY  # every trained variant of the study, in the tables' order
# Variants whose model.depth is derived from the profile's (cookie's) depth L by matched_depth, so that their two
# separate stacks hold as many head parameters as cookie's one shared stack (at the default L = 2: 1 + 1 layers).
PARAMETER_MATCHED = ["separate_1"]
DEPTH_SWEEP = ["depth_0", "depth_1", "cookie"]  # the shared head at depth 0, 1 and L (see sweep_depths)
ONESTREAM = "onestream"  # the one-stream cross-encoder of the speed claim (cookie_lib.study.onestream)
FROZEN = "frozen"  # pseudo-variant: the pretrained encoders' pooled, PCA-whitened features (unimodal tasks only)


def variant_config(profile: str, variant: str, seed: int, extra: dict | None = None) -> Config:
    """The validated config of one (variant, seed): the profile, the variant's overrides, ``extra`` (dotted
    overrides of every variant), the seed; a PARAMETER_MATCHED variant's depth follows the profile's (+ extra's)
    model.depth (:func:`matched_depth`); a LONG_BUDGET variant trains for the profile's ``finetune_epochs``
    (when set)."""
    if variant not in VARIANTS and variant != ONESTREAM:
        raise KeyError(f"unknown variant {variant!r}; choose from {list(VARIANTS) + [ONESTREAM]}")
    budget = load_run_profile(profile).finetune_epochs if variant in LONG_BUDGET else 0
    overrides = {**VARIANTS.get(variant, {}), **({"train.epochs": budget} if budget else {}), **(extra or {})}
    if variant in PARAMETER_MATCHED:
        overrides["model.depth"] = matched_depth(load_config(profile, extra).model.depth)
    return load_config(profile, {**overrides, "train.seed": seed})


def matched_depth(depth: int) -> int:
    """Layers k of each of two separate stacks that hold as many head parameters as one shared stack of
    ``depth`` = L layers. Every layer has the same parameters, so 2 k = L: k = 1 at L = 2, k = 2 at L = 4.
    (A shared head's modality vectors, 2 d parameters when model.modality_embedding is on, have no separate
    counterpart.) ConfigError for an odd or zero L, which no pair of equal stacks matches."""
    if depth < 2 or depth % 2:
        raise ConfigError(f"model.depth={depth}: the parameter-matched variants {PARAMETER_MATCHED} need an even "
                          f"depth >= 2 (two stacks of depth/2 layers hold the shared head's parameters)")
    return depth // 2


def sweep_depths(profile: str) -> dict[str, int]:
    """Head depth of each DEPTH_SWEEP variant, from its config: ``{"depth_0": 0, "depth_1": 1, "cookie": L}``."""
    return {v: variant_config(profile, v, 0).model.depth for v in DEPTH_SWEEP}
