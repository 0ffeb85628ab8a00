"""The one-stream cross-encoder of the speed claim, trained and evaluated, so the claim has accuracy on both sides.

Model (:class:`CrossEncoder`, image-text matching as in ALBEF/BLIP)::

    v_i, u_i = Towers(image tokens)       # COOKIE's trained projections + head: states [T_v, d], pooled unit [d]
    t_j, w_j = Towers(caption tokens)     # the same for the caption: [T, d], [d]
    h = Joint([CLS; v_i + e_img; t_j + e_txt])          # ``joint_depth`` full-attention blocks, LayerScale 1
    score(i, j) = exp(s) <u_i, w_j> + W_m h[CLS] + b_m

The towers are the trained COOKIE model of the same seed, frozen (its per-item states are computed once
per image and per caption, as every cross-encoder's unimodal encoders are). The joint block attends over
both modalities at once, so every (image, caption) pair needs its own pass: N x M passes for exhaustive
retrieval. It is *not* the identity at initialisation (LayerScale 1, standard init); the match layer W_m
starts at 0 and exp(s) at COOKIE's learned cross-modal logit scale 1/tau, so at step 0 the scores are
COOKIE's own InfoNCE logits and what training adds is the joint block's correction. Adding the dual
encoder's similarity to the matching logit is what ALBEF and BLIP do when they re-rank (``score +
topk_sim`` in their retrieval code).

Training (:func:`train_onestream`): hard negatives are mined once from COOKIE's similarity over the whole
training split: for every image the captions of other keys at similarity ranks ``HARD_NEGATIVE_SKIP`` + 1
.. + ``HARD_NEGATIVE_POOL``, for every caption the images likewise. Each step takes ``BATCH`` training
images (one cached view each, grid flips included) with one of each image's captions, draws
``GROUP_NEGATIVES`` = H negatives per image and per caption from those pools, and minimises the grouped
softmax loss of re-rankers trained on a retriever's negatives (localized contrastive estimation):

    L = 1/2 mean_i [ CE(s(i, c_i) vs s(i, c_i^1..H)) + CE(s(i, c_i) vs s(i_c^1..H, c_i)) ]

by COOKIE's training step (:func:`cookie_lib.step.train_step` with the step module :class:`GroupStep`):
AdamW (:func:`cookie_lib.step.build_optimizer`, the library's decay groups) on the schedule of
:func:`cookie_lib.step.build_scheduler`, COOKIE's seeded epoch batches and step draws, for ``STEPS`` steps
(or ``steps``). Every ``VAL_EVERY`` steps the model
re-ranks COOKIE's top ``VAL_K`` on a seeded subset of ``VAL_IMAGES`` validation images; the checkpoint
with the best mean R@1 (both directions) is the one kept (step 0, which is COOKIE, is only the reference).
``out_dir/result.json`` (config, settings, history, validation curve, chosen step) and
``out_dir/onestream.pt`` are written atomically.

Evaluation (:func:`speed_accuracy_table`), R@1 both ways with the pessimistic ranks of
:mod:`cookie_lib.metrics`, seconds over the cached encoder tokens, pairs scored by the joint blocks:

* two-stream: COOKIE embeddings, dot products;
* two-stream + re-rank top k: each image's k best captions and each caption's k best images (by COOKIE)
  re-scored by the cross-encoder; the rest keep their order below them;
* one-stream exhaustive: every pair scored (on a seeded gallery of ``n_exhaustive`` images).

Modules: :mod:`.settings` (the training settings saved with every run), :mod:`.model` (the cross-encoder,
its tower states, pair scoring, loading), :mod:`.gallery` (positives, re-ranking, R@1 on a gallery),
:mod:`.train` (hard-negative mining, the grouped loss, :func:`train_onestream`), :mod:`.table` (the
speed/accuracy table; its figure is :func:`cookie_lib.study.views.figures.pareto_figure`). The study grid
trains and evaluates it (run-level ``onestream_seeds``).
"""
from __future__ import annotations

from .gallery import Gallery, Positives, rerank
from .model import CrossEncoder, encode_split, load_onestream, score_index_pairs
from .settings import SETTINGS
from .table import TABLE_COLUMNS, gallery_eval, speed_accuracy_table
from .train import GroupStep, mine_hard_negatives, train_onestream

__all__ = ["SETTINGS", "TABLE_COLUMNS", "CrossEncoder", "Gallery", "GroupStep", "Positives", "encode_split", "gallery_eval", "load_onestream", "mine_hard_negatives", "rerank", "score_index_pairs", "speed_accuracy_table", "train_onestream"]
