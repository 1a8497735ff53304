"""The machine being measured: its GEMM peak (best ``torch.matmul`` GFLOP/s per compute dtype, the yardstick for
achieved training FLOP/s), its CPU's name, and the device sync that every timing brackets its work with."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_peak(device: torch.device, dtype: torch.dtype, size: int, reps: int) -> float:
    """GFLOP/s of a ``size`` x ``size`` matmul (best of ``reps`` after two warmup runs)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for rep in range(reps + 2):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        if rep >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def cpu_name() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        return next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
