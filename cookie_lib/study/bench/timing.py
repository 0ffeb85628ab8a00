"""Timing helpers and the benchmark's tidy result rows.

Rows carry structured columns (device, n_images, n_captions, mode, variant) next to a readable
``setting`` label, so readers filter on columns instead of parsing strings.
"""
from __future__ import annotations

import csv
import io
import time

import torch

COLUMNS = ["benchmark", "setting", "device", "n_images", "n_captions", "mode", "variant", "metric", "value",
           "unit", "note"]
_STRUCTURED = ("device", "n_images", "n_captions", "mode", "variant")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall-clock timings cover the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1, warmup: int = 0) -> list[float]:
    """Wall seconds of ``repeats`` calls of fn() after ``warmup`` calls (device-synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def extrapolate_linear(seconds: float, measured: int, total: int | float) -> float:
    """Seconds for ``total`` items given ``seconds`` for ``measured`` items (cost linear in the count)."""
    if measured <= 0:
        raise ValueError(f"measured must be positive, got {measured}")
    return seconds * total / measured


def matmul_ceiling(device: torch.device, n: int, dtype: torch.dtype = torch.float32, repeats: int = 5,
                   clock: str = "wall") -> float:
    """FLOP/s 2 n^3 / s of an n x n x n matmul in ``dtype`` (best of ``repeats`` after 2 warm-up calls): the
    practical ceiling on these threads. bfloat16 inputs run the kernel a bf16-autocast matmul runs (on a
    CPU with AMX, several times the float32 ceiling). ``clock="cpu"`` (CPU device only) times process CPU
    seconds instead of wall seconds: on cores that other processes share, the wall-clock best can still
    include their time slices; at one thread CPU seconds are the matmul's own."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if clock == "wall":
        secs = min(timed(lambda: a @ b, device, repeats=repeats, warmup=2))
    elif clock == "cpu" and device.type == "cpu":
        a @ b, a @ b
        secs = []
        for _ in range(repeats):  # 4 products per sample: well above the CPU clock's granularity
            t0 = time.process_time()
            a @ b, a @ b, a @ b, a @ b
            secs.append((time.process_time() - t0) / 4)
        secs = min(secs)
    else:
        raise ValueError(f"matmul_ceiling: clock must be 'wall' or 'cpu' (CPU device only), got {clock!r} on {device}")
    return 2 * n ** 3 / secs


def count_flops(fn) -> int:
    """FLOPs of fn() by FlopCounterMode, with convolution_backward re-estimated as 2 x the forward conv FLOPs.

    In this torch version FlopCounterMode overcounts the backward of grouped (depthwise) convolutions
    about 10-20x (MobileNetV2 at 64 px: 49 MFLOP forward, 953 MFLOP counted for backward); a convolution's
    backward (grad input + grad weight) costs about twice its forward, which is what is used instead.
    """
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    counts = {str(k): v for k, v in fc.get_flop_counts().get("Global", {}).items()}
    total = fc.get_total_flops()
    if "aten.convolution_backward" in counts:
        total += 2 * counts.get("aten.convolution", 0) - counts["aten.convolution_backward"]
    return int(total)


def fmt(v: float) -> str:
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


class Rows:
    """Tidy result rows (columns :data:`COLUMNS`); ``add`` also prints a line of the report.

    ``add(benchmark, setting, metric, value, unit, note, device=, n_images=, n_captions=, mode=, variant=)``:
    the keyword columns are left empty where they do not apply.
    """

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, benchmark, setting, metric, value, unit, note="", show=True, **cols):
        bad = set(cols) - set(_STRUCTURED)
        if bad:
            raise ValueError(f"Rows.add: unknown column(s) {sorted(bad)}; known: {list(_STRUCTURED)}")
        row = dict(benchmark=benchmark, setting=setting, metric=metric, value=float(value), unit=unit, note=note)
        row.update({c: cols.get(c, "") for c in _STRUCTURED})
        self.rows.append(row)
        if show:
            print(f"  {benchmark:10s} {setting:34s} {metric:26s} {fmt(value):>12s} {unit}")

    def get(self, benchmark, setting, metric) -> float:
        for r in self.rows:
            if (r["benchmark"], r["setting"], r["metric"]) == (benchmark, setting, metric):
                return r["value"]
        raise KeyError((benchmark, setting, metric))

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS)
        w.writeheader()
        for r in self.rows:
            w.writerow({**r, "value": f"{r['value']:.6g}"})
        return buf.getvalue()
