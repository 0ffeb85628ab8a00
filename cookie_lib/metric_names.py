"""Every metric name, defined once.

Results files (``result.json`` "test", "val_epochs", ``per_query``), the pre-registration
(``docs/preregistration.yaml``), the report tables and the notebooks key metrics by these strings, so their
values never change. Grep a name (``emoji_mr``) to find the constant, then the constant (``EMOJI_MR``) to
find where it is computed. All values are points (0-100) unless noted; ranks are the pessimistic ranks of
:mod:`cookie_lib.metrics`.

Key-based protocols (:mod:`cookie_lib.metrics`, :mod:`cookie_lib.evaluate`, the trainer's validation)
---------------------------------------------------------------------------------------------------
``i2t_r{K}`` / ``t2i_r{K}``: R@K image -> text / text -> image; ``rsum``: their sum (max 600); ``mr`` =
rsum / 6 (mean recall); ``i2t_medr`` / ``t2i_medr``: median 1-based rank (a rank, not points).
:func:`cookie_lib.metrics.image_retrieval` returns ``r{K}``, ``map``, ``n_queries``, ``n_map_queries``
(counts) and :func:`cookie_lib.metrics.text_matching` ``r{K}``, ``mrr``; :mod:`cookie_lib.evaluate` prefixes
them with ``img_`` (image -> other images) and ``txt_`` (CLDR label -> keyword list).

The study's downstream suite (:mod:`cookie_lib.study.downstream`)
----------------------------------------------------------------
``emoji_*`` / ``oca_*``: cross-modal retrieval on the emoji / Open Clip Art test split, each distinct caption
once; ``*_i2t_mr`` / ``*_t2i_mr``: the per-query lists (image, distinct caption) of (h1 + h5 + h10) / 3
whose means average to ``*_mr``. ``img_r1`` / ``img_map``: cross-design image retrieval; ``wn_*``: WordNet
lemma -> gloss; ``txt_*``: emoji label -> keywords.
"""
from __future__ import annotations

from typing import NamedTuple

KS = (1, 5, 10)  # the cut-offs every table reports

# ----------------------------------------------------------------------------- key-based cross-modal
I2T_R1 = "i2t_r1"
I2T_R5 = "i2t_r5"
I2T_R10 = "i2t_r10"
T2I_R1 = "t2i_r1"
T2I_R5 = "t2i_r5"
T2I_R10 = "t2i_r10"
RSUM = "rsum"
MR = "mr"
I2T_MEDR = "i2t_medr"
T2I_MEDR = "t2i_medr"

# ----------------------------------------------------------------------------- unimodal results (unprefixed)
R1 = "r1"
R5 = "r5"
R10 = "r10"
MAP = "map"
MRR = "mrr"
N_QUERIES = "n_queries"
N_MAP_QUERIES = "n_map_queries"

# ----------------------------------------------------------------------------- unimodal, as evaluate names them
IMG_R1 = "img_r1"
IMG_R5 = "img_r5"
IMG_R10 = "img_r10"
IMG_MAP = "img_map"
IMG_N_QUERIES = "img_n_queries"
IMG_N_MAP_QUERIES = "img_n_map_queries"
TXT_R1 = "txt_r1"
TXT_R5 = "txt_r5"
TXT_R10 = "txt_r10"
TXT_MRR = "txt_mrr"
WN_R1 = "wn_r1"
WN_MRR = "wn_mrr"

# image_retrieval / text_matching result -> the name evaluate reports it under
IMAGE_RETRIEVAL = {R1: IMG_R1, R5: IMG_R5, R10: IMG_R10, MAP: IMG_MAP, N_QUERIES: IMG_N_QUERIES,
                   N_MAP_QUERIES: IMG_N_MAP_QUERIES}
TEXT_MATCHING = {R1: TXT_R1, R5: TXT_R5, R10: TXT_R10, MRR: TXT_MRR}

# ----------------------------------------------------------------------------- the study's cross-modal tasks
EMOJI_I2T_R1 = "emoji_i2t_r1"
EMOJI_I2T_R5 = "emoji_i2t_r5"
EMOJI_I2T_R10 = "emoji_i2t_r10"
EMOJI_T2I_R1 = "emoji_t2i_r1"
EMOJI_T2I_R5 = "emoji_t2i_r5"
EMOJI_T2I_R10 = "emoji_t2i_r10"
EMOJI_RSUM = "emoji_rsum"
EMOJI_MR = "emoji_mr"
EMOJI_I2T_MR = "emoji_i2t_mr"  # per-query list
EMOJI_T2I_MR = "emoji_t2i_mr"  # per-query list
OCA_I2T_R1 = "oca_i2t_r1"
OCA_I2T_R5 = "oca_i2t_r5"
OCA_I2T_R10 = "oca_i2t_r10"
OCA_T2I_R1 = "oca_t2i_r1"
OCA_T2I_R5 = "oca_t2i_r5"
OCA_T2I_R10 = "oca_t2i_r10"
OCA_RSUM = "oca_rsum"
OCA_MR = "oca_mr"
OCA_I2T_MR = "oca_i2t_mr"  # per-query list
OCA_T2I_MR = "oca_t2i_mr"  # per-query list


class CrossModalNames(NamedTuple):
    """The names of one cross-modal task: R@1/5/10 per direction (aligned with :data:`KS`), their sum,
    mean recall, and the per-query mean-recall lists of each direction."""
    i2t: tuple[str, str, str]
    t2i: tuple[str, str, str]
    rsum: str
    mr: str
    i2t_mr: str = ""
    t2i_mr: str = ""


KARPATHY = CrossModalNames((I2T_R1, I2T_R5, I2T_R10), (T2I_R1, T2I_R5, T2I_R10), RSUM, MR)
EMOJI = CrossModalNames((EMOJI_I2T_R1, EMOJI_I2T_R5, EMOJI_I2T_R10), (EMOJI_T2I_R1, EMOJI_T2I_R5, EMOJI_T2I_R10),
                        EMOJI_RSUM, EMOJI_MR, EMOJI_I2T_MR, EMOJI_T2I_MR)
OCA = CrossModalNames((OCA_I2T_R1, OCA_I2T_R5, OCA_I2T_R10), (OCA_T2I_R1, OCA_T2I_R5, OCA_T2I_R10),
                      OCA_RSUM, OCA_MR, OCA_I2T_MR, OCA_T2I_MR)
CROSS_MODAL_TASKS = {"emoji": EMOJI, "oca": OCA}  # the downstream suite's image corpora


def at_k(names: dict[int, str], k: int, rule: str) -> str:
    """``names[k]`` for a reported cut-off, else ``rule`` with K filled in (an unusual ``ks`` argument)."""
    return names.get(k) or rule.format(k=k)


I2T_AT = dict(zip(KS, KARPATHY.i2t))
T2I_AT = dict(zip(KS, KARPATHY.t2i))
R_AT = dict(zip(KS, (R1, R5, R10)))
