"""A clean CPU-dispatch environment for runs on an emulated CPU.

Machines and CI images export variables that force a library's kernels or CPU
features (``OPENBLAS_CORETYPE=Haswell`` is common). Handed to a process that runs
under ``qemu-x86_64 -cpu Westmere``, such a variable makes numpy's bundled
OpenBLAS load AVX2 code on a CPU without AVX, and the process dies of an illegal
instruction before our code runs. An emulated run must see the CPU it emulates,
so every run on one starts from ``clean_dispatch_env``; a test that wants a
forcing variable sets it on purpose, after the clean-up.

Also a command: ``python tests/dispatch_env.py CMD ARG...`` runs CMD with the
cleaned environment (``bench/cross_check_aarch64.sh`` uses it for its chroot).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: Variables that force kernels, CPU features or what a BLAS prints at load.
DISPATCH_VARIABLES = frozenset(
    {
        "OPENBLAS_CORETYPE",
        "OPENBLAS_VERBOSE",  # 2 prints "Core: ..." at load, onto the JSON a run prints
        "OPENBLAS_L2_SIZE",
        "GOTOBLAS_CORETYPE",
        "NPY_DISABLE_CPU_FEATURES",
        "NPY_ENABLE_CPU_FEATURES",
        "TF_ENABLE_ONEDNN_OPTS",
        "QEMU_CPU",  # the emulated CPU is the one the caller names with -cpu
    }
)
#: Whole families of switches: MKL's and oneDNN's (old and new names) dispatch settings.
DISPATCH_PREFIXES = ("MKL_", "ONEDNN_", "DNNL_")


def is_dispatch_variable(name: str) -> bool:
    return name in DISPATCH_VARIABLES or name.startswith(DISPATCH_PREFIXES)


def clean_dispatch_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) without any variable that forces a kernel or CPU feature."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not is_dispatch_variable(k)}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tests/dispatch_env.py CMD [ARG...]", file=sys.stderr)
        return 2
    os.execvpe(argv[0], argv, clean_dispatch_env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
