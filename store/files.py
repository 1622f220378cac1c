"""The one atomic write-and-rename: stage a copy beside the destination, fsync it, then rename.

A reader sees either nothing or the whole file: rename is atomic within a
filesystem, and the fsync before it means a crash cannot leave a renamed file
with missing bytes. The local transport publishes objects and refs this way,
and ``ObjectStore.get_to_file`` writes a caller's file this way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .hashing import CHUNK_SIZE


class Staged:
    """A fsynced temporary copy, to be renamed or linked into place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.moved = False

    def rename_to(self, dest: Path) -> None:
        """Replace ``dest`` atomically (whatever was there)."""
        os.replace(self.path, dest)
        self.moved = True
        fsync_dir(dest.parent)

    def link_to(self, dest: Path) -> bool:
        """Create ``dest`` only if it does not exist; False if it does. link() is the atomic test."""
        try:
            os.link(self.path, dest)
        except FileExistsError:
            return False
        fsync_dir(dest.parent)
        return True


#: What ``staged_copy`` names its files: a process killed mid-copy leaves one behind.
STAGED_PREFIX = "tmp-"


def stale_staged(directory: str | os.PathLike[str], older_than: float) -> list[tuple[Path, int]]:
    """The staged copies in ``directory`` last written before ``older_than`` (seconds since the
    epoch), with their sizes: left by a process killed while it wrote them. A live copy is
    written start to end in one go, so its time is never far behind."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(STAGED_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                    stat = entry.stat(follow_symlinks=False)
                    if stat.st_mtime < older_than:
                        found.append((Path(entry.path), stat.st_size))
    return found


@contextlib.contextmanager
def staged_copy(src: BinaryIO, directory: Path) -> Iterator[Staged]:
    """Copy ``src`` into a fsynced temp file in ``directory``; removed on exit unless renamed away."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=STAGED_PREFIX)
    staged = Staged(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK_SIZE)
            out.flush()
            os.fsync(out.fileno())
        yield staged
    finally:
        if not staged.moved:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_atomically(src: BinaryIO, dest: str | os.PathLike[str], mode: int | None = None) -> None:
    """Write ``src`` to ``dest`` so that ``dest`` is either untouched or complete.

    The staged copy is private (0600, as ``mkstemp`` makes it); ``mode`` is what ``dest`` gets
    instead (a file for people to share, such as an export)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with staged_copy(src, dest.parent) as staged:
        if mode is not None:
            os.chmod(staged.path, mode)
        staged.rename_to(dest)


def fsync_dir(path: Path) -> None:
    """Make a rename or link durable: the directory entry is data too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
