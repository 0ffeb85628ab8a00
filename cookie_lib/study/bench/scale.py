"""Evaluation at scale: :func:`cookie_lib.metrics.cross_modal_retrieval` over N images x 5N captions,
timed with its peak memory in a fresh subprocess, next to the floor: the bare N x 5N matrix product
(computed in 1,024-row chunks into one reused buffer, so its own memory is one chunk)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from ...config import project_root
from ...metrics import cross_modal_retrieval
from .shapes import CAPS_PER_IMAGE
from .timing import Rows


def matmul_floor(img: torch.Tensor, txt: torch.Tensor, chunk: int = 1024) -> float:
    """Seconds of the bare product img [N, D] @ txt.T [D, M], chunked over rows into one reused
    [chunk, M] buffer (best of 2): the least any exact evaluation of one direction can cost."""
    buf = torch.empty(min(chunk, img.shape[0]), txt.shape[0])
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for s in range(0, img.shape[0], chunk):
            rows = img[s:s + chunk]
            torch.mm(rows, txt.T, out=buf[:rows.shape[0]])
        best = min(best, time.perf_counter() - t0)
    return best


def eval_scale_child(n: int, caps: int, d: int) -> None:
    """Run in a fresh process by :func:`eval_benchmark`: time cross_modal_retrieval on random unit
    embeddings (N x caps*N, D=d), sampling the RSS every 2 ms during the call, then the matmul floor;
    print one JSON line."""
    import resource
    import threading

    try:
        import psutil
        proc = psutil.Process()
    except ImportError:
        proc = None
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(n * caps, d, generator=g), dim=1)
    t2i = torch.arange(n).repeat_interleave(caps)
    cross_modal_retrieval(img[:64], txt[:320], t2i[:320] % 64)  # warm-up (lazy imports, thread pool)

    def rss() -> int:
        return proc.memory_info().rss if proc else 0

    peak, done = [rss()], []

    def sample():
        while not done:
            peak.append(rss())
            time.sleep(0.002)

    before_rss = rss()
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    th = threading.Thread(target=sample, daemon=True)
    if proc:
        th.start()
    t0 = time.perf_counter()
    res = cross_modal_retrieval(img, txt, t2i)
    secs = time.perf_counter() - t0
    done.append(True)
    if proc:
        th.join()
    after_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    floor = matmul_floor(img, txt)
    mib = 1 / 2**20
    print(json.dumps({"seconds": secs, "matmul_floor_s": floor, "threads": torch.get_num_threads(),
                      "rsum": res["rsum"], "psutil": proc is not None,
                      "psutil_peak_delta_mib": (max(peak) - before_rss) * mib,
                      "ru_maxrss_delta_mib": (after_max - before_max) * mib,
                      "ru_maxrss_mib": after_max * mib,
                      "rss_before_mib": before_rss * mib}))


def eval_benchmark(rows: Rows, n_images: int, dim: int = 256, threads: int = 0) -> dict:
    m = n_images * CAPS_PER_IMAGE
    print(f"\n[4] cross_modal_retrieval at scale: {n_images} x {m}, D={dim} (fresh subprocess)")
    env = {**os.environ, "PYTHONPATH": str(project_root()) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    pre = f"import torch; torch.set_num_threads({threads}); " if threads else ""
    code = (f"{pre}from cookie_lib.study.bench.scale import eval_scale_child; "
            f"eval_scale_child({n_images}, {CAPS_PER_IMAGE}, {dim})")
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, cwd=project_root(), env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation subprocess failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    setting = f"cpu {n_images}x{m} D={dim}"
    cols = dict(device="cpu", n_images=n_images, n_captions=m)
    rows.add("eval_scale", setting, "seconds", res["seconds"], "s",
             f"cross_modal_retrieval, both directions, random unit embeddings, {res['threads']} threads", **cols)
    rows.add("eval_scale", setting, "matmul_floor_s", res["matmul_floor_s"], "s",
             "bare N x 5N product, chunked into a reused buffer (one direction; the evaluation computes two)",
             **cols)
    if res["psutil"]:
        rows.add("eval_scale", setting, "peak_rss_delta_mib", max(res["psutil_peak_delta_mib"], 0.0), "MiB",
                 "psutil RSS sampled every 2 ms during the call (fresh subprocess), minus RSS before it", **cols)
    rows.add("eval_scale", setting, "ru_maxrss_delta_mib", max(res["ru_maxrss_delta_mib"], 0.0), "MiB",
             "resource.getrusage ru_maxrss after minus before the call, fresh subprocess "
             "(0 when the call stays below the process's earlier peak)", **cols)
    rows.add("eval_scale", setting, "ru_maxrss_mib", res["ru_maxrss_mib"], "MiB",
             "whole-process peak RSS incl. torch import", **cols)
    res["delta_mib"] = res["psutil_peak_delta_mib"] if res["psutil"] else res["ru_maxrss_delta_mib"]
    return res
