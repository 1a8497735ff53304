"""The machine named by what decides the speed of each compute dtype (:mod:`seq2seq.hardware`)."""

from __future__ import annotations

import torch

from seq2seq import hardware


def cpuinfo(family: int, model: int, stepping: int, flags: str, name: str = "AMD EPYC", mhz: float = 2400.0) -> str:
    """Two processors of /proc/cpuinfo as a Linux guest shows them."""
    one = (f"processor\t: {{}}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n"
           f"model name\t: {name}\nstepping\t: {stepping}\ncpu MHz\t\t: {mhz}\nflags\t\t: fpu sse2 {flags}\n\n")
    return one.format(0) + one.format(1)


#: two hosts of one machine kind, both called "AMD EPYC": one with native bf16, one without AVX-512
FAST_BF16 = cpuinfo(26, 2, 1, "avx avx2 fma avx512f avx512_bf16 avx512_vnni")
NO_AVX512 = cpuinfo(23, 49, 0, "avx avx2 fma")


def test_the_cpu_is_named_by_what_decides_its_speed():
    fast, slow = hardware.cpu_identity(FAST_BF16), hardware.cpu_identity(NO_AVX512)
    assert fast != slow and fast.startswith("AMD EPYC") and slow.startswith("AMD EPYC")
    assert "family 26 model 2 stepping 1" in fast and "avx512_bf16" in fast and "avx512" not in slow
    assert hardware.cpu_identity(cpuinfo(26, 2, 1, "avx avx2 fma avx512f avx512_bf16 avx512_vnni", mhz=3100.5)) == fast
    assert hardware.cpu_identity(cpuinfo(26, 2, 2, "avx avx2 fma avx512f avx512_bf16 avx512_vnni")) != fast


def test_instruction_limits_name_another_machine(monkeypatch):
    """The same CPU with torch's kernels held to AVX2 computes bf16 by emulation: its dtype measurement must not be
    served from the unlimited CPU's cache entry (nor the other way round)."""
    for name in hardware.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    cpu = torch.device("cpu")
    plain = hardware.machine_name(cpu)
    assert "limited" not in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    limited = hardware.machine_name(cpu)
    assert limited == f"{plain}, limited to ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", " ")  # set but empty: no limit
    assert hardware.machine_name(cpu) == f"{plain}, limited to ONEDNN_MAX_CPU_ISA=AVX2"
