"""The cross-encoder: COOKIE's frozen towers + joint blocks + a match layer (see :mod:`cookie_lib.study.onestream`),
its tower states, pair scoring, and loading a trained one."""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import config_from_dict
from ...features import SplitFeatures
from ...model import CookieModel, HeadStack, masked_mean
from .settings import JOINT_DEPTH, SETTINGS


class CrossEncoder(nn.Module):
    """COOKIE's frozen towers + ``joint_depth`` joint blocks + a match layer (see the module docstring).

    encode_images(tokens [B, T_v, C_v]) -> (states [B, T_v, d], emb [B, d] unit norm)
    encode_texts(tokens [B, T, C_t], mask [B, T]) -> (states [B, T, d], emb [B, d])
    score_states(v [P, T_v, d], u [P, d], t [P, T, d], w [P, d], mask [P, T]) -> logits [P]
    score(img_tokens, txt_tokens, txt_mask) -> logits [B] (pairwise, row by row)
    """

    def __init__(self, cookie: CookieModel, joint_depth: int = JOINT_DEPTH, sim_scale: float | None = None):
        super().__init__()
        self.cookie = copy.deepcopy(cookie).eval()
        for p in self.cookie.parameters():
            p.requires_grad_(False)
        cfg = cookie.cfg
        d = cfg.dim
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        # 1-D vectors: the optimiser's no-decay rule applies to them
        self.type_img = nn.Parameter(torch.randn(d) * 0.02)
        self.type_txt = nn.Parameter(torch.randn(d) * 0.02)
        self.joint = HeadStack(dataclasses.replace(cfg, depth=joint_depth, layer_scale_init=1.0))
        self.match = nn.Linear(d, 1)
        nn.init.zeros_(self.match.weight)
        nn.init.zeros_(self.match.bias)
        # COOKIE's own cross-modal logit scale 1/tau: at step 0 the scores are COOKIE's InfoNCE logits
        scale = sim_scale if sim_scale is not None else 1.0 / 0.07
        self.log_sim_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.cookie.eval()  # frozen towers: no dropout
        return self

    def _states(self, x: torch.Tensor, mask: torch.Tensor | None, modality: str):
        c = self.cookie
        vec = None if c.modality_embedding is None else c.modality_embedding[modality]
        states = c._stack(modality)(x, mask, vec)
        return states, F.normalize(masked_mean(states, mask), dim=-1)

    def encode_images(self, tokens: torch.Tensor):
        return self._states(self.cookie.visual_proj(tokens) + self.cookie.visual_pos, None, "visual")

    def encode_texts(self, tokens: torch.Tensor, mask: torch.Tensor):
        return self._states(self.cookie.text_proj(tokens), mask, "text")

    def score_states(self, v, u, t, w, mask):
        p = v.shape[0]
        x = torch.cat([self.cls.expand(p, -1, -1), v + self.type_img, t + self.type_txt], dim=1)
        valid = torch.cat([torch.ones(p, 1 + v.shape[1], dtype=torch.bool, device=x.device), mask], dim=1)
        h = self.joint(x, valid)[:, 0]
        return self.log_sim_scale.exp() * (u * w).sum(-1) + self.match(h).squeeze(-1)

    def score(self, img_tokens, txt_tokens, txt_mask):
        v, u = self.encode_images(img_tokens)
        t, w = self.encode_texts(txt_tokens, txt_mask)
        return self.score_states(v, u, t, w, txt_mask)


@torch.no_grad()
def encode_split(model: CrossEncoder, feats: SplitFeatures, images, captions, device, batch: int = 512) -> dict:
    """Tower states of ``images`` (view 0) and ``captions`` (rows of feats.texts): {"v" [N, T_v, d],
    "u" [N, d], "t" [M, T, d], "w" [M, d], "mask" [M, T]} on ``device``."""
    images, captions = torch.as_tensor(images), torch.as_tensor(captions)
    vs, us, ts, ws = [], [], [], []
    for idx in images.split(batch):
        v, u = model.encode_images(feats.image_tokens[0, idx].float().to(device))
        vs.append(v), us.append(u)
    mask = feats.text_mask[captions].to(device)
    width = max(int(mask.sum(1).max()), 1) if len(captions) else 1
    mask = mask[:, :width]
    for rows, m in zip(captions.split(batch), mask.split(batch)):
        t, w = model.encode_texts(feats.text_tokens[rows, :width].float().to(device), m)
        ts.append(t), ws.append(w)
    return {"v": torch.cat(vs), "u": torch.cat(us), "t": torch.cat(ts), "w": torch.cat(ws), "mask": mask}


@torch.no_grad()
def score_index_pairs(model: CrossEncoder, enc: dict, ii: torch.Tensor, jj: torch.Tensor, batch: int = 1024
                      ) -> torch.Tensor:
    """Cross-encoder scores of the pairs (image ii[p], caption jj[p]) of :func:`encode_split` states -> [P].

    Pairs are scored in caption-length order and each pass is trimmed to its longest caption (padding is
    masked out of attention, so the scores do not change; the cost does)."""
    out = torch.empty(len(ii), device=enc["u"].device)
    lengths = enc["mask"].sum(1)
    order = torch.argsort(lengths[jj], stable=True)
    for s in range(0, len(order), batch):
        sel = order[s:s + batch]
        i, j = ii[sel], jj[sel]
        width = max(int(lengths[j].max()), 1)
        out[sel] = model.score_states(enc["v"][i], enc["u"][i], enc["t"][j, :width], enc["w"][j],
                                      enc["mask"][j, :width]).float()
    return out


def load_onestream(path: str | Path, feats: SplitFeatures | None = None, widths: tuple[int, int, int] | None = None
                   ) -> CrossEncoder:
    """The CrossEncoder saved by :func:`train_onestream` (``onestream.pt``), in eval mode. The token widths
    (C_v, C_t, T_v) come from ``feats`` (cached tokens) or ``widths``."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    cfg = config_from_dict(blob["config"])
    if widths is None:
        widths = (feats.image_tokens.shape[-1], feats.text_tokens.shape[-1], feats.image_tokens.shape[-2])
    cookie = CookieModel(cfg.model, *widths)
    model = CrossEncoder(cookie, blob.get("settings", SETTINGS)["joint_depth"], 1.0)  # scale: from the state dict
    model.load_state_dict(blob["model"])
    return model.eval()
