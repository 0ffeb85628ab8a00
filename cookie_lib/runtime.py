"""Run plumbing: atomic writes, the run-folder lock, command-line error handling, seeding, devices,
torch.distributed setup, and provenance manifests.

torch is imported inside the functions that need it, so that light command lines (``cookie_lib.data``,
``cookie_lib.study.corpora.emoji``) can use :func:`cli` without paying for the torch import.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import random
import secrets
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

# the run errors are re-exported here, where they are raised (defined in cookie_lib.errors)
from .errors import USER_ERRORS, AtomicWriteError, CheckpointError, ConfigError, RunFolderLockedError  # noqa: F401


def cli(main: Callable[[], int | None]) -> None:
    """Run a command-line ``main()`` and exit with its status.

    Errors in :data:`cookie_lib.errors.USER_ERRORS` print one line ``error: <message>`` to stderr and exit
    with status 2 (the conventional status for bad usage, as argparse uses); anything else propagates with its traceback,
    because it is a bug or an environment problem that the traceback helps to find.
    Usage, in each entry point: ``if __name__ == "__main__": cli(main)``.
    """
    try:
        status = main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status or 0)


# ----------------------------------------------------------------------------- atomic writes
def _create_beside(path: Path) -> tuple[int, Path]:
    """Create a new empty temporary file next to ``path``: (fd, temporary path).

    Created with mode 0o666 filtered by the process umask, exactly like ``open(path, "w")``: a shared group
    folder (umask 002) gets group-writable files, umask 022 gives 0644. ``tempfile.mkstemp`` would force
    0600 and teammates could not read results. O_EXCL with a random name makes the creation race-free.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(path.parent))


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (atomic on POSIX).

        with atomic_path(dest) as tmp:   # any writer that takes a path (torch.save, fig.savefig, ...)
            fig.savefig(tmp, format="png")

    The data is fsync'ed before the rename, so a crash right after cannot leave an empty file under the
    final name (and a full disk that the file system reports only at flush time fails here, not later).
    On any failure (a full disk: ENOSPC) the temporary file is removed, ``path`` keeps its previous
    content, and an :class:`AtomicWriteError` naming ``path`` is raised.
    """
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_beside(path)
        os.close(fd)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, AtomicWriteError):
            raise
        raise AtomicWriteError(e.errno, f"could not write {path} ({e.strerror or e}); "
                                        f"the previous version of the file, if any, is unchanged", str(path)) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save that never leaves a truncated file behind."""
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


# ----------------------------------------------------------------------------- one writer per run folder
LOCK_NAME = ".cookie.lock"
_held: dict[Path, list] = {}  # resolved folder -> [open lock file, re-entry count] held by this process


class RunLock:
    """Exclusive lock on a run folder: ``with RunLock(folder): ...`` (one writer per folder).

    An ``fcntl.flock`` on ``folder/.cookie.lock``, taken without waiting: if another process holds it,
    :class:`RunFolderLockedError` is raised at once, naming the folder and the holder's pid. The kernel
    drops a flock when its holder exits in any way (including ``kill -9``), so a crashed run never leaves
    a stale lock; the lock file itself stays (deleting it would let two processes lock two different
    files). Re-entrant within one process (a CLI holds it around a Trainer that takes it again).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self._key = self.folder.resolve()
        if key in _held:
            _held[key][1] += 1
            return self
        lock_path = self.folder / LOCK_NAME
        f = open(lock_path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunFolderLockedError(
                f"run folder {self.folder} is in use by another process (pid {holder}, lock {lock_path}); "
                f"wait for it to finish, or choose another run folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _held[key] = [f, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = self._key
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            entry[0].close()  # closing the last descriptor releases the flock


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> "torch.device":
    """"auto" -> cuda when available, else cpu; any other name is checked (ConfigError, one line, when the
    name is not a device or names a CUDA device this machine does not have)."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"device {name!r}: no CUDA GPU is available on this machine; use --device cpu "
                              f"(or auto)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device {name!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    return dev


def init_distributed() -> tuple[int, int, int]:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on GPU).

    Returns (rank, world_size, local_rank); (0, 1, 0) for a plain single-process run.
    """
    import torch
    import torch.distributed as dist
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
    import torch.distributed as dist
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
    import torch
    return {"commit": git_commit(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "torch_threads": torch.get_num_threads(), "config": config, **extra}
