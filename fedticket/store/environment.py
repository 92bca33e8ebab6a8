"""The machine and packages a run ran on, recorded in its ``config.json``.

CPU kernels differ between machines (the default run ends at 0.5941 on one and 0.5807 on
another with the same seed), so every figure is labelled with where it was measured.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

PACKAGES = ("fedticket", "flwr", "torch", "numpy", "pandas", "pyarrow", "grpcio")


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what Python's platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_environment() -> dict[str, object]:
    """Python, OS, CPU model and usable cores, and the versions of the packages that compute."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": cores,
        "packages": {name: package_version(name) for name in PACKAGES},
    }
