"""Systems benchmarks for COOKIE, split by concern:

* :mod:`.shapes` - image size, encoder widths, head size, synthetic features, the sizes of every measurement;
* :mod:`.timing` - ``timed``, FLOP counting, the tidy :class:`Rows`;
* :mod:`.endtoend` - retrieval time of the study's trained COOKIE and cross-encoder, end to end from images
  and caption strings, repeated at several N, and the one cost model fitted on it;
* :mod:`.costmodel` - time(N, M) = a (N + M) + b N M, its fit, the ratio's limits and its 3/1000 crossing;
* :mod:`.training` - training throughput and compute efficiency through :mod:`cookie_lib.step`;
* :mod:`.scale` - cross-modal evaluation at 5,000 x 25,000 next to the matrix-product floor;
* :mod:`.__main__` - the CLI, ``python -m cookie_lib.study.bench [--quick] [--profile P] [--out results]``.

What is measured and what is derived is listed in :data:`ASSUMPTIONS` (also written to the JSON).
"""
from __future__ import annotations

from .costmodel import (COST_CSV_COLUMNS, NOT_DETERMINED, CostModel, crossing_n, crossing_reason, derived_fields,
                        fit_cost_model, joint_flops_per_pair, limits, ratio)
from .endtoend import (CAPS, STRATEGIES, Pipeline, crossing_interval, fit_all, gallery_inputs, load_pipeline, measure,
                       retrieve)
from .scale import eval_benchmark, eval_scale_child, matmul_floor
from .shapes import (CAPS_PER_IMAGE, C_T, C_V, FULL, IMAGE_SIZE, QUICK, T_TXT, T_V, head_config, random_text_tokens,
                     synthetic_features)
from .timing import COLUMNS, Rows, count_flops, matmul_ceiling, timed
from .training import THROUGHPUT_VARIANTS, make_train_step, training_benchmark

ASSUMPTIONS = [
    "Retrieval is timed end to end on the study's trained models (COOKIE and the cross-encoder trained on it, "
    "one seed; untrained models of the same shapes when no run exists, and the JSON says so): from image "
    "tensors (decoded and resized once, outside the clock) and caption strings (tokenised inside it) to the "
    "top 10 both ways, for N images of the emoji test split and 5 captions each (M = 5 N).",
    "The cross-encoder's towers are COOKIE's head, run once per image and per caption; its joint block runs "
    "once per scored pair: all N x M pairs exhaustively, each image's and caption's top k (distinct pairs) "
    "when re-ranking.",
    "One estimator: every strategy is run several times at each fitted N; time(N, M) = a (N + M) + b N M is "
    "fitted by NNLS on relative error to every repeat, checked on a held-out N, and its 3/1000 crossing gets a "
    "95 % percentile interval by scipy.stats.bootstrap over the repeats (refitting both models each time).",
    "The paper-class joint model (12 x 768 over 100 tokens) is FLOP-costed, not measured: b = its counted "
    "forward FLOPs per pair / the FLOP/s the trained cross-encoder's joint passes achieve here; a = the "
    "measured cross-encoder's per-item cost (same encoders), which favours it.",
    "Training throughput: cookie_lib.step.train_step + build_optimizer on synthetic cached features (4x1280 "
    "visual, 16x384 text tokens, float16 cache as in cookie_lib.features); 'live' runs MobileNetV2 fine-tuned "
    "(freeze_visual='none') on the fixture's real images with the real augmentations, captions cached. "
    "pairs/s = images/s, each with 2 views and 2 captions.",
    "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only: elementwise "
    "ops, norms and the optimiser are not counted), so achieved FLOP/s is a lower bound; convolution_backward is "
    "re-estimated as 2 x forward conv FLOPs because FlopCounterMode overcounts depthwise-conv backward ~20x here.",
]
