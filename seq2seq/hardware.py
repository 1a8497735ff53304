"""The machine a measurement ran on, named by what decides the speed of each compute dtype (the key of
``dtype: auto``'s cache, :mod:`seq2seq.precision`)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Mapping

import torch

CPUINFO = Path("/proc/cpuinfo")

#: the CPU flags that decide the speed of fp32 and bf16 matmuls (native bf16 dot products, AMX tiles, AVX-512)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_tile",
               "amx_bf16", "amx_fp16")
#: environment variables that keep torch's kernels (ATen, oneDNN, MKL) below the instructions the CPU has: with
#: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` an AVX-512 host computes bf16
#: by emulation, as a host without AVX-512 does, so the same CPU under other limits is another machine
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_name(device: torch.device) -> str:
    """What the speed of each dtype depends on: the GPU's name and compute capability; the CPU's model name,
    family / model / stepping, speed-relevant ISA flags (:data:`SPEED_FLAGS`), core count and the instruction
    limits this process runs under (:func:`isa_limits`). Two hosts a virtual machine calls alike ("AMD EPYC") can
    differ in all of these, and in which dtype is faster."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    try:
        cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    limits = isa_limits(os.environ)
    return f"{cpu_identity(cpuinfo)}, {os.cpu_count()} cores" + (f", limited to {limits}" if limits else "")


def isa_limits(environ: Mapping[str, str]) -> str:
    """The instruction-set limits among ``environ`` (:data:`ISA_LIMITS`) as ``NAME=value ...``, or ``""``."""
    values = {name: environ.get(name, "").strip() for name in ISA_LIMITS}
    return " ".join(f"{name}={value}" for name, value in values.items() if value)


def cpu_identity(cpuinfo: str) -> str:
    """The first processor of ``/proc/cpuinfo`` text as ``model name (vendor family F model M stepping S; flags)``
    (the platform's processor name where there is no cpuinfo)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor only: every core of a host is alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if not fields:
        return name
    flags = set(fields.get("flags", "").split())
    present = " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none of " + " ".join(SPEED_FLAGS[:3])
    return (f"{name} ({fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')} stepping {fields.get('stepping', '?')}; {present})")
