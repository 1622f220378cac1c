"""Silence what native libraries print straight to file descriptors 1 and 2.

TensorFlow's converter and LiteRT's delegate announce themselves from C++,
past Python's sys.stdout/sys.stderr and past any logging setting; in the CLI
that text would corrupt the JSON on stdout or break the progress bars.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def silenced(*fds: int) -> Iterator[None]:
    """Point ``fds`` (1: stdout, 2: stderr) at /dev/null for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(fds, saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
