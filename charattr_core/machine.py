"""The machine a measurement ran on: CPU model, usable cores, memory, Python, torch and the GPU.

Shared by the benchmarks (benchmarks/common.py) and the web app's Benchmark tab, so both describe
the machine the same way.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """`lscpu`'s model name (falls back to /proc/cpuinfo, then to `platform.processor()`)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(*, with_torch: bool = True) -> dict[str, Any]:
    """Where the numbers came from: CPU model, cores, memory, Python, torch and the GPU if any."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": usable_cores(), "python": platform.python_version(),
                            "platform": platform.platform(terse=True), "load_average_1m": load_average()}
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if with_torch:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def describe_machine(info: dict[str, Any]) -> str:
    parts = [f"{info['cpu']}, {info['cores']} cores"]
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']} GiB")
    if info.get("torch"):
        parts.append(f"torch {info['torch']}")
    parts.append(f"Python {info['python']}")
    if info.get("cuda"):
        parts.append(f"GPU {info['cuda']}")
    if info.get("load_average_1m") is not None:
        parts.append(f"load {info['load_average_1m']}")
    return ", ".join(parts)
