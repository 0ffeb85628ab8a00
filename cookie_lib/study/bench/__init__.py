"""Systems benchmarks for COOKIE, split by concern:

* :mod:`.shapes` - image size, encoder widths, head size, synthetic features (defined once);
* :mod:`.timing` - ``timed``, ``extrapolate_linear``, FLOP counting, the tidy :class:`Rows`;
* :mod:`.inference` - two-stream vs one-stream vs re-rank time, one-stream exhaustive measured end to end;
* :mod:`.costmodel` - time(N, M) = a (N + M) + b N M, the ratio curve and its 3/1000 crossing;
* :mod:`.training` - training throughput and compute efficiency through :mod:`cookie_lib.step`;
* :mod:`.scale` - cross-modal evaluation at 5,000 x 25,000 next to the matrix-product floor;
* :mod:`.__main__` - the CLI, ``python -m cookie_lib.study.bench [--quick] [--out results]``.

What is real and what is synthetic is listed in :data:`ASSUMPTIONS` (also written to the JSON).
"""
from __future__ import annotations

from .costmodel import COST_CSV_COLUMNS, CostModel, crossing_n, fit_cost_model, joint_flops_per_pair, paper_class_model, ratio
from .inference import (exhaustive_benchmark, inference_benchmark, inference_figure, measure_exhaustive,
                        measure_unit_costs, one_stream_pairs, score_pairs, similarity_topk)
from .scale import eval_benchmark, eval_scale_child, matmul_floor
from .shapes import (CAPS_PER_IMAGE, C_T, C_V, FULL, IMAGE_SIZE, QUICK, T_TXT, T_V, head_config, random_text_tokens,
                     synthetic_features)
from .timing import COLUMNS, Rows, count_flops, extrapolate_linear, matmul_ceiling, timed
from .training import THROUGHPUT_VARIANTS, make_train_step, training_benchmark

ASSUMPTIONS = [
    "Encoder throughput (MobileNetV2 64 px on random images; MiniLM incl. tokenisation on the fixture's real "
    "captions) is measured on a sample and extrapolated linearly to N images and 5N captions.",
    "Head (CookieModel dim 256, depth 2, 4 heads) cost is measured on a sample of random tokens of the real "
    "shapes (4x1280 visual, 16x384 text) and extrapolated linearly; similarity + top-10 both ways is timed "
    "on the full N x 5N matrix of random unit embeddings.",
    "One-stream (OneStreamModel, same dim/depth/heads) scoring is timed on a random subset of pairs, batched, "
    "and extrapolated linearly to N x 5N pairs; at one small N it is also measured end to end (all pairs).",
    "The one-stream model is assumed to reuse the unimodal encoders' token outputs (one encoder pass per image "
    "and per caption, not per pair); this favours the one-stream model.",
    "Re-ranking = full two-stream retrieval + one-stream scoring of the top-k captions of every image (N*k pairs).",
    "Cost model time(N, M) = a (N + M) + b N M fitted by NNLS on relative error: two-stream on the per-N "
    "two-stream times, one-stream on end-to-end exhaustive timings at small N. The paper-class joint model "
    "(12 x 768, 100 tokens) costs its counted forward FLOPs per pair at the FLOP/s the measured one-stream "
    "model achieves, with the measured encoders' per-item cost.",
    "Training throughput: cookie_lib.step.train_step + build_optimizer on synthetic cached features (4x1280 "
    "visual, 16x384 text tokens, float16 cache as in cookie_lib.features); 'live' runs MobileNetV2 fine-tuned "
    "(freeze_visual='none') on the fixture's real images with the real augmentations, captions cached. "
    "pairs/s = images/s, each with 2 views and 2 captions.",
    "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention only: elementwise "
    "ops, norms and the optimiser are not counted), so achieved FLOP/s is a lower bound; convolution_backward is "
    "re-estimated as 2 x forward conv FLOPs because FlopCounterMode overcounts depthwise-conv backward ~20x here.",
]
