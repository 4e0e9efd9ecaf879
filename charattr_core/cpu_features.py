"""What this CPU can do fast: the instruction-set features that decide the CLIP inference path.

Read from the kernel's `/proc/cpuinfo` flags (Linux), with PyTorch's own dispatch level as a
fallback elsewhere, and never assumed: machines of one kind differ (some AVX2-only, some with
AVX-512 bf16 and VNNI), and bf16 on a CPU without native bf16 runs ~10x slower than fp32.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# The flags that matter here, in the order a reader wants them.
_INTERESTING = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and the flags of `_INTERESTING` that it has."""

    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix instructions (AVX-512 BF16 or AMX): bf16 runs ~2x fp32 instead of ~10x slower."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def int8_dot_product(self) -> bool:
        """VNNI (AVX-512 or AVX) or AMX int8: what makes int8 inference pay."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    def describe(self) -> str:
        """`AMD EPYC (avx2, avx512f, avx512_bf16, avx512_vnni)`: for benchmark tables and logs."""
        shown = [flag for flag in _INTERESTING if flag in self.flags]
        return f"{self.model} ({', '.join(shown) if shown else 'no AVX2'})"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from `/proc/cpuinfo` text."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split()) & frozenset(_INTERESTING)
    return CpuFeatures(model=model, flags=flags)


# oneDNN's ONEDNN_MAX_CPU_ISA caps the instruction set of PyTorch's and OpenVINO's oneDNN kernels;
# the features it leaves usable, per value (oneDNN's names). Unknown values cap nothing.
_AVX2 = {"avx2", "fma"}
_AVX512 = _AVX2 | {"avx512f"}
_ISA_LIMITS = {
    "SSE41": set(), "AVX": set(), "AVX2": _AVX2, "AVX2_VNNI": _AVX2 | {"avx_vnni"},
    "AVX2_VNNI_2": _AVX2 | {"avx_vnni"}, "AVX512_CORE": _AVX512,
    "AVX512_CORE_VNNI": _AVX512 | {"avx512_vnni"},
    "AVX512_CORE_BF16": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "AVX512_CORE_FP16": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "AVX10_1_512": _AVX512 | {"avx512_vnni", "avx512_bf16"},
}
ISA_LIMIT_ENV = "ONEDNN_MAX_CPU_ISA"


def limit_features(features: CpuFeatures, isa_limit: str | None) -> CpuFeatures:
    """`features` without what an `ONEDNN_MAX_CPU_ISA` value forbids: the plan then matches the
    kernels that will run (an `AVX2` cap on an AVX-512 BF16 CPU plans as on an AVX2-only one)."""
    allowed = _ISA_LIMITS.get((isa_limit or "").strip().upper())
    if allowed is None:
        return features
    return CpuFeatures(model=f"{features.model}, {ISA_LIMIT_ENV}={isa_limit.strip().upper()}",
                       flags=features.flags & frozenset(allowed))


@functools.lru_cache(maxsize=1)
def read_cpu_features() -> CpuFeatures:
    """This machine's CPU features (read once per process), capped by `ONEDNN_MAX_CPU_ISA` if set."""
    return limit_features(_read_machine_features(), os.environ.get(ISA_LIMIT_ENV))


def _read_machine_features() -> CpuFeatures:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        pass
    # Not Linux: PyTorch's dispatch level says at least which vector width it uses.
    flags: set[str] = set()
    try:
        import torch

        level = torch.backends.cpu.get_cpu_capability()
        if level in ("AVX2", "AVX512"):
            flags.add("avx2")
        if level == "AVX512":
            flags.add("avx512f")
    except Exception:  # noqa: BLE001 - no torch, or an old one: no claims
        pass
    return CpuFeatures(model=platform.processor() or platform.machine(), flags=frozenset(flags))
