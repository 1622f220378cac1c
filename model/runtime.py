"""TensorFlow set up for bit-reproducible runs, and a fingerprint of the machine.

TensorFlow sizes its thread pools from the core count, and a different thread
count can change how a matmul is blocked and so its bits; the project pins the
counts instead. Op determinism is on and XLA is off. What remains
machine-dependent (the CPU's instruction set picks the kernels) is recorded in
every manifest so a difference elsewhere can be explained.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

#: Intra-op threads in every deterministic stage, whatever the machine has.
DETERMINISTIC_THREADS = 2
INTER_OP_THREADS = 1


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hide the C++ banner TensorFlow prints at load time, which no env var silences."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@cache
def tensorflow() -> Any:
    """Import and configure TensorFlow once per process; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep stderr for our progress bars
    os.environ["TF_DETERMINISTIC_OPS"] = "1"
    with _quiet_native_stderr():
        import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(DETERMINISTIC_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
    except RuntimeError:
        # Already initialised by someone else: acceptable only if they pinned the same.
        if tf.config.threading.get_intra_op_parallelism_threads() != DETERMINISTIC_THREADS:
            raise
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_jit(False)
    return tf


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return [platform.processor() or "unknown"]


def environment() -> dict[str, Any]:
    """What the bits may depend on beyond the recipe: libraries, settings, instruction set."""
    import keras
    import numpy
    import PIL

    tf = tensorflow()
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "intra_op_threads": DETERMINISTIC_THREADS,
        "inter_op_threads": INTER_OP_THREADS,
        "op_determinism": True,
        "jit_compile": False,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "cpu_flags": _cpu_flags(),
    }
