"""Where a folder of labelled photos comes from: a directory, or a zip of one.

Both are read the same way (``PhotoTree``: relative POSIX paths, the first bytes of a file,
its whole bytes), and both refuse what would reach outside them before anything is read:
a symlink out of the folder, a zip entry with ``..`` or an absolute path, a zip entry that
inflates past its stated size or past the limits (a zip bomb).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from model.errors import DataError
from store import ObjectStore

#: Bytes read to tell an image from anything else.
HEAD_BYTES = 16

ZIP_MAGIC = b"PK\x03\x04"
#: How an archive with no entries begins: its end record alone.
EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def looks_like_zip(head: bytes) -> bool:
    """A zip archive by its first four bytes: an entry, or (empty) its end record."""
    return head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC))


class PhotoTree(Protocol):
    #: How messages name it (the folder's or the zip's path).
    name: str

    def files(self) -> Iterator[str]:
        """Relative POSIX paths of its regular files, in no particular order."""
        ...

    def head(self, path: str) -> bytes:
        """The file's first HEAD_BYTES bytes."""
        ...

    def read(self, path: str) -> bytes:
        """The file's bytes (each within the tree's per-file limit)."""
        ...

    def new_bytes(self, path: str) -> int:
        """The bytes storing the file would add at most (0 where it is in the store already)."""
        ...

    def store_file(self, store: ObjectStore, path: str) -> str:
        """Have the file in ``store``; its sha1."""
        ...


class FolderTree:
    """A directory on this machine. A linked file is read only if it stays inside the folder."""

    def __init__(self, root: str | os.PathLike[str], max_file_bytes: int) -> None:
        self.name = os.fspath(root)
        self._root = Path(root).resolve()
        self._max = max_file_bytes

    def _inside(self, path: Path, rel: str) -> Path:
        target = path.resolve()
        if target != self._root and self._root not in target.parents:
            raise DataError(f"{self.name}: {rel} is a symlink out of the folder (to {target})")
        return target

    def files(self) -> Iterator[str]:
        # Linked folders are not walked (inside, they repeat what is there; outside, refused). A
        # stack, not os.walk, whose recursion (Python 3.11) ended a folder 1,100 deep in a traceback.
        todo = [(str(self._root), "")]
        while todo:
            folder, prefix = todo.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as e:
                raise DataError(f"{self.name}: cannot read {prefix or '.'}: {e.strerror}") from None
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_symlink():
                    self._inside(Path(entry.path), rel)
                if entry.is_dir(follow_symlinks=False):
                    todo.append((entry.path, rel + "/"))
                elif entry.is_file():
                    yield rel

    def _path(self, rel: str) -> Path:
        return self._root / PurePosixPath(rel)

    def head(self, path: str) -> bytes:
        with open(self._path(path), "rb") as f:
            return f.read(HEAD_BYTES)

    def new_bytes(self, path: str) -> int:
        return self._path(path).stat().st_size

    def read(self, path: str) -> bytes:
        with open(self._path(path), "rb") as f:
            data = f.read(self._max + 1)
        if len(data) > self._max:
            raise DataError(f"{self.name}: {path} is larger than {self._max} bytes (MAX_DOWNLOAD_BYTES)")
        return data

    def store_file(self, store: ObjectStore, path: str) -> str:
        return store.put(self.read(path))


class ZipTree:
    """A zip archive's files, checked entry by entry before any is read.

    Archives made by zipping the photo folder itself hold one top folder around the label
    folders; it is not a label, so it is looked through (``photos/cats/1.jpg`` is ``cats/1.jpg``,
    as if the folder had been given).
    """

    def __init__(
        self,
        source: bytes | str | os.PathLike[str],
        name: str,
        max_file_bytes: int,
        max_total_bytes: int,
        max_entries: int,
    ) -> None:
        self.name = name
        try:
            with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as f:
                starts_like_zip = looks_like_zip(f.read(len(ZIP_MAGIC)))
                stated = stated_entries(f)
        except OSError as e:
            raise DataError(f"{name} is not a readable zip archive: {e}") from None
        # One rule for the CLI (which tells a zip by its first bytes) and the API: a PNG with a zip
        # appended is a PNG, never unpacked.
        if not starts_like_zip:
            raise DataError(f"{name} is not a zip archive: it does not begin with a zip entry")
        # Refused by the count its end record states, before the central directory is parsed (500,000
        # entries cost a worker 1.5 GB); a directory that holds more than it states, after.
        if stated is not None and stated > max_entries:
            raise _too_many(name, stated, max_entries)
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DataError(f"{name} is not a readable zip archive: {e}") from None
        if len(infos) > max_entries:
            raise _too_many(name, len(infos), max_entries)
        self._max = max_file_bytes
        entries: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            self._check(info)
            total += info.file_size
            if total > max_total_bytes:
                raise DataError(f"{name} unpacks to more than {max_total_bytes} bytes (MAX_UNZIPPED_BYTES)")
            if info.filename in entries:  # which copy an unzipper keeps is its own choice
                raise DataError(f"{name}: entry {info.filename!r} appears twice")
            entries[info.filename] = info
        prefix = _single_top_folder([e for e in entries if not is_hidden(e)])
        self._paths = {e.removeprefix(prefix): info for e, info in entries.items()}

    def _check(self, info: zipfile.ZipInfo) -> None:
        entry = info.filename
        if not is_relative_inside(entry):
            raise DataError(f"{self.name}: entry {entry!r} points outside the archive's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{self.name}: entry {entry!r} is a symlink")
        if info.flag_bits & 0x1:
            raise DataError(f"{self.name}: entry {entry!r} is encrypted")
        if info.file_size > self._max:
            raise DataError(
                f"{self.name}: entry {entry!r} is larger than {self._max} bytes (MAX_DOWNLOAD_BYTES)"
            )

    def files(self) -> Iterator[str]:
        yield from self._paths

    def new_bytes(self, path: str) -> int:
        return self._paths[path].file_size  # what it states; reading never inflates past it

    def _read(self, path: str, n: int) -> bytes:
        try:
            with self._zip.open(self._paths[path]) as f:
                return f.read(n)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{self.name}: entry {self._paths[path].filename!r} is corrupt: {e}") from None

    def head(self, path: str) -> bytes:
        return self._read(path, HEAD_BYTES)

    def read(self, path: str) -> bytes:
        info = self._paths[path]
        data = self._read(path, info.file_size + 1)  # zipfile stops at the size the header states
        if len(data) != info.file_size:
            raise DataError(f"{self.name}: entry {info.filename!r} does not unpack to its stated size")
        return data

    def store_file(self, store: ObjectStore, path: str) -> str:
        return store.put(self.read(path))


def _too_many(name: str, entries: int, max_entries: int) -> DataError:
    return DataError(
        f"{name} has {entries:,} entries, over the limit of {max_entries:,} (MAX_FOLDER_ENTRIES)"
    )


# The end records' layouts (little-endian, as the zip format writes them):
# signature, disk numbers, entries here, entries in all, directory size, its offset, comment length;
_EOCD = struct.Struct("<4s4H2LH")
# signature, disk, offset of the zip64 end record, disks;
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
# signature, record size, versions, disk numbers, entries here, entries in all, directory size, offset.
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def stated_entries(f: BinaryIO) -> int | None:
    """The entry count a zip's end record states (its zip64 record's where it has one); None if
    there is no end record (then zipfile says what is wrong)."""
    size = f.seek(0, os.SEEK_END)
    start = max(0, size - _EOCD.size - 0xFFFF)  # the record ends the file, but for a comment
    f.seek(start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return None
    entries = _EOCD.unpack_from(tail, at)[4]
    if entries != 0xFFFF or at < _ZIP64_LOCATOR.size:
        return entries
    signature, _disk, offset, _disks = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
    if signature != b"PK\x06\x07" or offset + _ZIP64_EOCD.size > size:
        return entries
    f.seek(offset)
    record = f.read(_ZIP64_EOCD.size)
    if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
        return entries
    return _ZIP64_EOCD.unpack(record)[7]


def _single_top_folder(entries: list[str]) -> str:
    """``"top/"`` when every entry lies in one top folder that holds folders, else ``""``."""
    parts = [PurePosixPath(e).parts for e in entries]
    tops = {p[0] for p in parts if len(p) > 1}
    inside = all(len(p) > 1 for p in parts) and any(len(p) > 2 for p in parts)
    return f"{tops.pop()}/" if len(tops) == 1 and inside else ""


def is_relative_inside(path: str) -> bool:
    """A relative POSIX path that cannot leave its folder: no ``..``, no root, no drive, no ``\\``."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not ("\\" in path or path.startswith("/") or ".." in parts or ":" in parts[0])


def is_hidden(path: str) -> bool:
    """A dot file or folder, or the resource forks macOS adds to the zips it makes."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(path).parts)


class StoredTree:
    """Files already uploaded to the store, by the paths they had in a folder (a browser's
    folder upload). Nothing is read whole: an upload was hashed as it was stored, a file is
    judged an image by its first bytes, and training reads and verifies each image once, by
    its sha1. (Reading each entry whole, four times, made 1,000 entries naming one 50 MB
    object a 177 s request.)"""

    def __init__(self, store: ObjectStore, files: Iterable[tuple[str, str]], name: str) -> None:
        self.name = name
        self._store = store
        self._files: dict[str, str] = {}
        held: set[str] = set()
        for path, sha1 in files:
            if not is_relative_inside(path):
                raise DataError(f"{name}: {path!r} is not a path inside the folder")
            if path in self._files:
                raise DataError(f"{name}: {path!r} is listed twice")
            if sha1 not in held:
                if not store.has(sha1):
                    raise DataError(
                        f"{name}: {path} ({sha1}) is not in the store; upload it to /objects first"
                    )
                held.add(sha1)
            self._files[path] = sha1
        self._heads: dict[str, bytes] = {}

    def files(self) -> Iterator[str]:
        yield from self._files

    def head(self, path: str) -> bytes:
        sha1 = self._files[path]
        if sha1 not in self._heads:  # a hint: training verifies what it reads
            self._heads[sha1] = self._store.peek(sha1, HEAD_BYTES) or b""
        return self._heads[sha1]

    def new_bytes(self, path: str) -> int:
        return 0

    def read(self, path: str) -> bytes:
        return self._store.get(self._files[path])

    def store_file(self, store: ObjectStore, path: str) -> str:
        return self._files[path]


def open_photo_tree(
    path: str, max_file_bytes: int, max_total_bytes: int, max_entries: int
) -> PhotoTree | None:
    """The photo tree at a local ``path`` (a folder, or a zip file by its first bytes); None for
    anything else (a CSV). A file that only ends like a zip (a PNG with a zip appended) is refused
    as ``ZipTree`` refuses it through the API."""
    if os.path.isdir(path):
        return FolderTree(path, max_file_bytes)
    try:
        with open(path, "rb") as f:
            is_zip = looks_like_zip(f.read(len(ZIP_MAGIC))) or stated_entries(f) is not None
    except OSError:
        return None  # not a local file: the fetcher says what it is
    return ZipTree(path, path, max_file_bytes, max_total_bytes, max_entries) if is_zip else None
