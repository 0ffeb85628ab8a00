"""Cached-prefix partial fine-tuning: the last k blocks of each encoder train, the rest stays frozen and cached.

With ``model.finetune_visual_blocks = k_v`` and ``model.finetune_text_layers = k_t`` (0 = that encoder is
wholly frozen, today's behaviour) the encoders are cut in two::

    image --CNN blocks [0, L - k_v) (frozen, cached)--> prefix tokens --VisualTail (k_v blocks, trained)--> tokens
    text  --embeddings + layers [0, 6 - k_t) (frozen, cached)--> prefix states --TextTail (k_t layers)--> states

(L = ``model.visual_layer`` kept blocks.) The prefix outputs are cached exactly like today's frozen features
(:func:`cookie_lib.features.split_features`, same views, same seed): the cache of a prefix is the cache of
a frozen encoder cut earlier, i.e. ``model.visual_layer = L - k_v`` and a text encoder with 6 - k_t layers,
stored in its own folder ``<data.cache_dir>/prefix-v<k_v>-t<k_t>`` (the folder, not the hash, tells the
text prefixes apart). A training step then costs the tails + head only. The tails live inside
:class:`cookie_lib.model.CookieModel` (``visual_tail``, ``text_tail``), so every evaluation that embeds cached
tokens (validation, the downstream suite) runs them too, on the prefix caches of its own split.

Views: as for frozen runs, the V cached augmented views of every image (view 0 un-augmented) and, with
``train.grid_flip``, their mirrored token grids - here the mirrored *prefix* grid, which the trained tail
then reads; no image is augmented live, since the prefix is not recomputed.
"""
from __future__ import annotations

import dataclasses

from .config import Config, ModelConfig


def finetuning(cfg: Config) -> bool:
    """Whether a config trains encoder tails on a cached prefix."""
    return bool(cfg.model.finetune_visual_blocks or cfg.model.finetune_text_layers)


def kept_blocks(m: ModelConfig) -> int:
    """Number of CNN feature blocks the model reads (``visual_layer``, or all of the backbone's)."""
    if m.visual_layer != "all":
        return m.visual_layer
    import torch
    import torchvision

    from .model import _feature_blocks

    with torch.device("meta"):
        return len(_feature_blocks(torchvision.models.get_model(m.visual_backbone, weights=None)))


def prefix_visual_layer(m: ModelConfig):
    """The ``visual_layer`` of the frozen visual prefix: kept blocks - ``finetune_visual_blocks`` (the
    config's own value when no visual block is fine-tuned). ValueError when nothing would be left."""
    if not m.finetune_visual_blocks:
        return m.visual_layer
    n = kept_blocks(m) - m.finetune_visual_blocks
    if n < 1:
        raise ValueError(f"model.finetune_visual_blocks={m.finetune_visual_blocks} leaves no frozen block of the "
                         f"{kept_blocks(m)} kept (model.visual_layer={m.visual_layer!r}); it must be < {kept_blocks(m)}")
    return n


def prefix_config(cfg: Config) -> Config:
    """The config under which the prefix's features are cached: ``model.visual_layer`` cut to the prefix,
    ``data.cache_dir`` a ``prefix-v<k_v>-t<k_t>`` subfolder, and the fine-tuning keys kept (they name the
    text prefix). ``cfg`` itself when nothing is fine-tuned."""
    if not finetuning(cfg):
        return cfg
    m = cfg.model
    tag = f"prefix-v{m.finetune_visual_blocks}-t{m.finetune_text_layers}"
    return dataclasses.replace(cfg, model=dataclasses.replace(m, visual_layer=prefix_visual_layer(m)),
                               data=dataclasses.replace(cfg.data, cache_dir=f"{cfg.data.cache_dir.rstrip('/')}/{tag}"))
