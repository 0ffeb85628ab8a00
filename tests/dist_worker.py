"""Helper for tests/test_distributed.py, launched with ``torchrun --nproc_per_node N`` (gloo, CPU).

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py OUT.pt

Every rank builds the same global batch (seeded), keeps its slice, and computes
(a) ``info_nce`` on raw embedding leaves (gathered negatives) -> loss, grads w.r.t. its rows and the logit scale;
(b) ``CookieLoss`` (all three losses) on top of a small Linear wrapped in DistributedDataParallel -> loss,
    DDP-averaged parameter grads (Linear + the three log-temperatures).
Rank 0 saves every rank's results to OUT.pt; the test compares them with one process on the global batch.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cookie_lib.config import LossConfig
from cookie_lib.losses import CookieLoss, info_nce

B, D, IN = 4, 8, 6  # per-rank batch, embedding width, raw input width


def global_batch(world: int) -> dict:
    """The same data on every rank (and in the test process): keys with duplicates across ranks."""
    g = torch.Generator().manual_seed(1234)
    n = B * world
    return {"a": F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1),
            "b": F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1),
            "x": {k: torch.randn(n, IN, generator=g, dtype=torch.float64) for k in ("v1", "v2", "t1", "t2")},
            "keys": torch.arange(n) % (n - 3)}  # a few keys repeat, some across the rank boundary


class Head(nn.Module):
    """A tiny 'model + loss' module: one Linear per modality, then CookieLoss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.img, self.txt = nn.Linear(IN, D), nn.Linear(IN, D)
        self.loss = CookieLoss(LossConfig(cross_modal=1.0, visual=0.5, textual=2.0))

    def forward(self, x: dict, keys):
        emb = {k: F.normalize((self.img if k[0] == "v" else self.txt)(v), dim=-1) for k, v in x.items()}
        return self.loss(emb, keys)


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = global_batch(world)
    mine = slice(rank * B, (rank + 1) * B)

    # (a) raw info_nce
    a = data["a"][mine].clone().requires_grad_()
    b = data["b"][mine].clone().requires_grad_()
    s = torch.tensor(9.0, dtype=torch.float64, requires_grad=True)
    loss = info_nce(a, b, data["keys"][mine], s)
    loss.backward()
    res = {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad, "grad_s": s.grad}

    # (b) CookieLoss through DistributedDataParallel (which averages parameter grads over ranks)
    head = Head().double()
    ddp = DistributedDataParallel(head)
    total, parts = ddp({k: v[mine] for k, v in data["x"].items()}, data["keys"][mine])
    total.backward()
    res["cookie_total"] = total.detach()
    res["cookie_parts"] = parts
    res["cookie_grads"] = {n: p.grad.clone() for n, p in head.named_parameters()}

    gathered = [None] * world
    dist.all_gather_object(gathered, res)
    if rank == 0:
        torch.save(gathered, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
