"""Text -> text matching tasks (the WordNet lemma -> gloss task of the downstream suite): the task file,
its validation, and the frozen text encoder's token states cached per task file.

The file is ``{"queries": [{"text", "key"}], "candidates": [{"text", "key"}]}``; a query's positives are the
candidates with its key. The cache ``<cache_dir>/<name>-text-<key>.pt`` is keyed by the file's bytes and the
text-encoder settings (:func:`text_cache_key`).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, resolve_path
from ..features import encode_texts
from ..model import TextEncoder
from ..runtime import atomic_save

TEXT_CACHE_VERSION = 1  # bump when the text cache layout changes

__all__ = ["TextTask", "load_text_task", "text_cache_key", "text_task_features"]


@dataclass
class TextTask:
    """A text -> text matching task: Q queries, C candidates, positives share a key.

    texts: the distinct strings of queries and candidates (first-seen order); q_rows [Q] and c_rows [C]
    index them; tokens [M, T, C_t] float16 and mask [M, T] bool are the frozen text encoder's states.
    """
    name: str
    texts: list[str]
    q_rows: torch.Tensor
    q_keys: list[str]
    c_rows: torch.Tensor
    c_keys: list[str]
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def num_queries(self) -> int:
        return len(self.q_keys)


def load_text_task(path: Path, name: str = "wordnet") -> TextTask:
    """Read ``{"queries": [{"text", "key"}], "candidates": [{"text", "key"}]}`` and validate it.

    Keys are compared as strings. Raises ValueError naming the file and the entry on a malformed file,
    and when a query key has no candidate (its rank would be undefined).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: text task file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object with 'queries' and 'candidates'")
    index: dict[str, int] = {}
    rows, keys = {}, {}
    for part in ("queries", "candidates"):
        items = data.get(part)
        if not isinstance(items, list) or not items:
            raise ValueError(f"{path}: '{part}' must be a non-empty list")
        rows[part], keys[part] = [], []
        for i, it in enumerate(items):
            text = it.get("text") if isinstance(it, dict) else None
            key = it.get("key") if isinstance(it, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}: {part}[{i}] 'text' must be a non-empty string, got {text!r}")
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ValueError(f"{path}: {part}[{i}] 'key' must be a string or int, got {key!r}")
            rows[part].append(index.setdefault(text, len(index)))
            keys[part].append(str(key))
    orphans = [k for k in keys["queries"] if k not in set(keys["candidates"])]
    if orphans:
        raise ValueError(f"{path}: {len(orphans)} queries have no candidate with their key (e.g. {orphans[0]!r})")
    return TextTask(name, list(index), torch.tensor(rows["queries"]), keys["queries"],
                    torch.tensor(rows["candidates"]), keys["candidates"])


def text_cache_key(cfg: Config, path: Path) -> str:
    """Hash of the task file's bytes and the text-encoder settings that change the cached states."""
    m = cfg.model
    ident = dict(sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(), text=m.text_model,
                 max_text_len=m.max_text_len, version=TEXT_CACHE_VERSION)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def text_task_features(cfg: Config, path: Path, name: str = "wordnet", encoder: TextEncoder | None = None,
                       progress: bool = True) -> TextTask:
    """Load a text task with its frozen text-encoder token states, computing and caching them on first use.

    The cache ``<cache_dir>/<name>-text-<key>.pt`` holds (texts, tokens [M, T, C_t] float16, mask [M, T])
    and is written atomically. A cache that cannot be read or whose texts differ from the task file is
    derived data: it is deleted with a warning and rebuilt.
    """
    path = Path(path)
    task = load_text_task(path, name)
    cache = resolve_path(cfg.data.cache_dir) / f"{name}-text-{text_cache_key(cfg, path)}.pt"
    blob = None
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            problem = None if blob["texts"] == task.texts and blob["tokens"].shape[0] == len(task.texts) \
                else "its texts do not match the task file"
        except Exception as e:  # noqa: BLE001 - any failure to read derived data means: rebuild it
            problem = f"unreadable ({type(e).__name__})"
        if problem is not None:
            warnings.warn(f"text cache {cache} is corrupt ({problem}); deleting and rebuilding it")
            cache.unlink(missing_ok=True)
            blob = None
    if blob is None:
        m = cfg.model
        encoder = encoder or TextEncoder(m.text_model, "all", m.max_text_len)
        tokens, mask = encode_texts(task.texts, encoder, progress=progress)
        blob = dict(texts=task.texts, tokens=tokens, mask=mask)
        atomic_save(blob, cache)
    task.tokens, task.mask = blob["tokens"], blob["mask"]
    return task
