"""Argument checks shared by every metric in :mod:`cookie_lib.metrics`: each turns a user argument into the
tensor the rank engine expects, or raises a one-line ValueError that names the argument (and the first bad
row, index or key).
"""
from __future__ import annotations

from typing import Hashable, Sequence

import torch

Tensor = torch.Tensor


def check_embeddings(x, name: str) -> Tensor:
    """Return ``x`` as a finite, non-empty 2-D floating tensor ``[n, D]`` or raise ValueError."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad argument
            raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from None
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D tensor [n, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty tensor of shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: unsupported dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.double()  # integers are exact in float64
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half matmul on CPU is slow and imprecise
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: contains NaN or inf (first bad row: {bad})")
    return x


def check_same_space(a, b, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """Two embedding sets [n_a, D] and [n_b, D] (each checked by :func:`check_embeddings`) of one width, on
    one device, promoted to one dtype."""
    a, b = check_embeddings(a, name_a), check_embeddings(b, name_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b}: embedding dims differ ({a.shape[1]} vs {b.shape[1]})")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b}: on different devices ({a.device}, {b.device})")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def check_ks(ks) -> tuple[int, ...]:
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks: expected a sequence of positive ints, got {ks!r}") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected a non-empty sequence of positive ints, got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks: duplicate values in {ks!r}")
    return ks


def check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    return chunk_size


def check_int_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from None
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
    return x.long()


def check_index(idx, name: str, length: int, upper: int, device) -> Tensor:
    """Integer index vector of shape [length] with values in [0, upper)."""
    idx = check_int_tensor(idx, name)
    if idx.dim() != 1 or idx.shape[0] != length:
        raise ValueError(f"{name}: expected shape [{length}], got {tuple(idx.shape)}")
    idx = idx.to(device)
    bad = ((idx < 0) | (idx >= upper)).nonzero()
    if bad.numel():
        p = int(bad[0, 0])
        raise ValueError(f"{name}: index out of range [0, {upper}) at position {p} (value {int(idx[p])})")
    return idx


def check_pairs(pairs, name: str, n_q: int, n_g: int, device) -> Tensor:
    """[2, P] long pairs, row 0 a query index in [0, n_q), row 1 a gallery index in [0, n_g)."""
    if pairs is None:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    pairs = check_int_tensor(pairs, name)
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{name}: expected shape [2, P], got {tuple(pairs.shape)}")
    pairs = pairs.to(device)
    for row, upper, what in ((0, n_q, "query"), (1, n_g, "gallery")):
        bad = ((pairs[row] < 0) | (pairs[row] >= upper)).nonzero()
        if bad.numel():
            p = int(bad[0, 0])
            raise ValueError(f"{name}: {what} index {int(pairs[row, p])} at pair {p} out of range [0, {upper})")
    return pairs


def encode_keys(groups: Sequence[tuple[str, object, int]], device) -> list[Tensor]:
    """Map several sequences of hashable keys onto one shared integer code space.

    ``groups`` holds (argument name, keys, expected length); returns one long tensor per group.
    """
    table: dict[Hashable, int] = {}
    out = []
    for name, keys, length in groups:
        if isinstance(keys, Tensor):
            keys = keys.tolist()
        try:
            keys = list(keys)
        except TypeError:
            raise ValueError(f"{name}: expected a sequence of {length} keys") from None
        if len(keys) != length:
            raise ValueError(f"{name}: expected {length} keys, got {len(keys)}")
        codes = []
        for i, k in enumerate(keys):
            try:
                codes.append(table.setdefault(k, len(table)))
            except TypeError:
                raise ValueError(f"{name}: key at position {i} is not hashable ({k!r})") from None
        out.append(torch.tensor(codes, dtype=torch.long, device=device))
    return out
