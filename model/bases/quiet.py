"""Silence what native libraries print straight to file descriptors 1 and 2.

TensorFlow's converter and LiteRT's delegate announce themselves from C++,
past Python's sys.stdout/sys.stderr and past any logging setting; in the CLI
that text would corrupt the JSON on stdout or break the progress bars.

Pointing a descriptor at /dev/null is process-wide, so it is off unless the
entry point turns it on: the CLI does; a web worker does not, since there it
would swallow every other thread's log lines for the duration. One exception,
``silenced_first``: LiteRT says its line once per process, so the first
interpreter is made with stderr pointed away everywhere (a few milliseconds,
as a worker starts), and the line never reaches a server's log or a notebook.
Nested and concurrent uses share one
redirection, counted per descriptor: a second thread must never save
/dev/null as "the original" and restore it last, leaving the process mute.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_enabled = False
_depth: dict[int, int] = {}
_saved: dict[int, int] = {}


def silence_native_output(enabled: bool = True) -> None:
    """Let :func:`silenced` redirect descriptors in this process (for single-user entry points)."""
    global _enabled
    _enabled = enabled


def _enter(fds: tuple[int, ...]) -> None:
    with _lock:
        for fd in fds:
            if _depth.get(fd, 0) == 0:
                (sys.stdout if fd == 1 else sys.stderr).flush()
                _saved[fd] = os.dup(fd)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            _depth[fd] = _depth.get(fd, 0) + 1


def _leave(fds: tuple[int, ...]) -> None:
    with _lock:
        for fd in fds:
            _depth[fd] -= 1
            if _depth[fd] == 0:
                (sys.stdout if fd == 1 else sys.stderr).flush()
                os.dup2(_saved[fd], fd)
                os.close(_saved.pop(fd))


_first_done = False


@contextlib.contextmanager
def silenced_first(*fds: int) -> Iterator[None]:
    """As :func:`silenced`, and the first time in a process even where not enabled: for native
    code that announces itself once per process (LiteRT's "Created TensorFlow Lite XNNPACK
    delegate for CPU.", printed once from C++), so that nothing else is ever muted for it."""
    global _first_done
    with _lock:
        first, _first_done = not _first_done, True
    with silenced(*fds, force=first):
        yield


@contextlib.contextmanager
def silenced(*fds: int, force: bool = False) -> Iterator[None]:
    """Point ``fds`` (1: stdout, 2: stderr) at /dev/null for the duration, if enabled (or forced)."""
    if not (_enabled or force):
        yield
        return
    _enter(fds)
    try:
        yield
    finally:
        _leave(fds)
