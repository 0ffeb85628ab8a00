"""Run plumbing: atomic writes, seeding, devices, torch.distributed setup, and provenance manifests."""
from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save that never leaves a truncated file behind."""
    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: Path) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed() -> tuple[int, int, int]:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on GPU).

    Returns (rank, world_size, local_rank); (0, 1, 0) for a plain single-process run.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if "RANK" not in os.environ:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def git_commit() -> str:
    """The commit the code came from, with '+dirty' when tracked files outside results/ have uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # generated outputs (results/) do not make the code dirty; a rerun rewrites them by design
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    pkgs = ("torch", "torchvision", "transformers", "numpy", "pandas", "scikit-learn", "papermill")
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for p in pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def manifest(config: dict | None = None, **extra: Any) -> dict:
    """Provenance for a results file: commit, versions, time, host threads, config and anything extra."""
    return {"commit": git_commit(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "torch_threads": torch.get_num_threads(), "config": config, **extra}
