"""What a model's bits depend on, and a fingerprint of the machine that made them.

The numeric path (int8 base on LiteRT's XNNPACK kernels, float64 head with
fixed-order arithmetic) is part of a model's identity and goes into its
manifest. The machine (instruction set, library versions, host) does not
change the bits, so it goes into the run record only, where it helps explain
a difference if a test ever finds one.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from model.bases.litert import RUNTIME, THREADS
from model.head.train import HEAD_ARITHMETIC


def numeric_path() -> dict[str, Any]:
    """How features and weights are computed; identical on every machine by construction."""
    return {
        "base_runtime": RUNTIME,
        "base_kernels": "xnnpack (whole graph delegated; other kernels refused)",
        "head_arithmetic": HEAD_ARITHMETIC,
        "probabilities": HEAD_ARITHMETIC,
        "portable": True,
    }


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return [platform.processor() or "unknown"]


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def environment() -> dict[str, Any]:
    """The machine and libraries of one run; for the run record, never for an identity."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "ai-edge-litert": _version("ai-edge-litert"),
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
        "litert_threads": THREADS,
        "cpu_flags": _cpu_flags(),
    }
