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
tokens (validation, the downstream suite) runs them too, on the prefix caches of its own split. The tails
(:class:`VisualTail`, :class:`TextTail`, built by :func:`encoder_tails`) and the frozen prefixes
(:func:`prefix_encoders`) are defined here.

Views: as for frozen runs, the V cached augmented views of every image (view 0 un-augmented) and, with
``train.grid_flip``, their mirrored token grids - here the mirrored *prefix* grid, which the trained tail
then reads; no image is augmented live, since the prefix is not recomputed.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import Config, ModelConfig
from .model import TextEncoder, VisualEncoder, _feature_blocks


def finetuning(cfg: Config) -> bool:
    """Whether a config trains encoder tails on a cached prefix."""
    return bool(cfg.model.finetune_visual_blocks or cfg.model.finetune_text_layers)


def kept_blocks(m: ModelConfig) -> int:
    """Number of CNN feature blocks the model reads (``visual_layer``, or all of the backbone's)."""
    if m.visual_layer != "all":
        return m.visual_layer
    import torchvision

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


# ----------------------------------------------------------------------------- trainable encoder tails
class VisualTail(nn.Module):
    """The last k feature blocks of the CNN, trained on top of the cached frozen prefix's grid tokens.

        forward(tokens [B, h*w, C_in]) -> [B, h'*w', C_out]:  reshape to [B, C_in, h, w] (h = w),
        run the blocks, flatten back to tokens (as :class:`VisualEncoder` does).

    BatchNorm: every BatchNorm of the tail stays in eval mode whatever ``train()`` says, normalising with
    the stored ImageNet running statistics, which are never updated; its affine weight and bias train.
    Why: at init the tail then computes exactly the frozen encoder's function (the fine-tuned arm starts at
    the frozen arm's initialisation, and the cached prefix + tail reproduces the full encoder), and a
    training batch of 128 images x 16 positions of one 4 x 4 map is a poor, view-dependent estimate of
    the statistics that evaluation would then have to use.
    """

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.blocks.requires_grad_(True)
        self.out_dim = _out_channels(self.blocks)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(False)
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, c = tokens.shape
        side = int(round(t ** 0.5))
        if side * side != t:
            raise ValueError(f"VisualTail needs a square token grid, got T = {t} tokens")
        fmap = tokens.transpose(1, 2).reshape(b, c, side, side)
        return self.blocks(fmap).flatten(2).transpose(1, 2)


def _out_channels(blocks: nn.Module) -> int:
    """Output channels of a stack of conv blocks: those of its last Conv2d or BatchNorm."""
    last = [m for m in blocks.modules() if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm))]
    if not last:
        raise ValueError("VisualTail: the blocks contain no convolution")
    return last[-1].num_features if isinstance(last[-1], nn.modules.batchnorm._BatchNorm) else last[-1].out_channels


class TextTail(nn.Module):
    """The last k transformer layers of the text encoder, trained on the cached prefix's token states.

        forward(states [B, T, C_t], mask [B, T] bool) -> (states [B, T, C_t], mask)

    The mask is turned into BERT's bidirectional attention mask exactly as ``BertModel`` does for its
    layers, so prefix + tail = the whole encoder. Dropout inside the layers is active in train mode, as in
    ordinary BERT fine-tuning.
    """

    def __init__(self, layers: list[nn.Module], bert_config):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.layers.requires_grad_(True)
        self.bert_config = bert_config
        self.out_dim = bert_config.hidden_size

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from transformers.masking_utils import create_bidirectional_mask

        attn = create_bidirectional_mask(config=self.bert_config, inputs_embeds=states, attention_mask=mask.long())
        for layer in self.layers:
            states = layer(states, attn)
        return states, mask


def encoder_tails(m: ModelConfig) -> tuple[VisualTail | None, TextTail | None]:
    """The trainable tails of a cached-prefix fine-tuning config, initialised from the pretrained encoders.

    ``m.finetune_visual_blocks`` = k_v: the last k_v of the ``visual_layer`` blocks kept; ``m.finetune_text_layers``
    = k_t: the last k_t transformer layers. 0 gives None (that encoder stays wholly frozen and cached).
    Raises ValueError when k exceeds the blocks or layers there are.
    """
    visual = text = None
    if m.finetune_visual_blocks:
        full = VisualEncoder(m.visual_backbone, m.visual_weights, "all", m.visual_layer)
        k = m.finetune_visual_blocks
        if k > len(full.blocks):
            raise ValueError(f"model.finetune_visual_blocks={k}: {m.visual_backbone} with visual_layer="
                             f"{m.visual_layer!r} has only {len(full.blocks)} blocks")
        visual = VisualTail(full.blocks[len(full.blocks) - k:])
    if m.finetune_text_layers:
        full = TextEncoder(m.text_model, "all", m.max_text_len)
        layers = list(full.bert.encoder.layer)
        k = m.finetune_text_layers
        if k > len(layers):
            raise ValueError(f"model.finetune_text_layers={k}: the text model has only {len(layers)} layers")
        text = TextTail(layers[len(layers) - k:], full.bert.config)
    return visual, text


def prefix_encoders(m: ModelConfig) -> tuple[VisualEncoder, TextEncoder]:
    """The frozen prefixes whose outputs a cached-prefix fine-tuning run caches: the first
    (kept blocks - ``finetune_visual_blocks``) CNN blocks and the first (layers - ``finetune_text_layers``)
    text layers (see :func:`prefix_config` for the matching cache config)."""
    text = TextEncoder(m.text_model, "all", m.max_text_len)
    n_text = len(text.bert.encoder.layer) - m.finetune_text_layers
    if n_text < 0:
        raise ValueError(f"model.finetune_text_layers={m.finetune_text_layers}: the text model has only "
                         f"{len(text.bert.encoder.layer)} layers")
    text = TextEncoder(m.text_model, "all", m.max_text_len, num_layers=n_text) if m.finetune_text_layers else text
    return VisualEncoder(m.visual_backbone, m.visual_weights, "all", prefix_visual_layer(m)), text
