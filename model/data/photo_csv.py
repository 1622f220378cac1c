"""A folder of labelled photos (or a zip of one) as the training CSV it stands for.

The layout every peer takes: one subfolder per label, its images inside (nested folders
too). The CSV is a pure function of the names and bytes: ``<path>,<label>,<sha1>`` per image,
sorted by label, then path, as a person would write it next to the folder. So a folder and
its hand-written CSV name the same model, and the same folder on any machine gives the same
CSV bytes. Hidden files, files outside a label folder and non-images (by their first bytes)
are skipped and counted; everything is listed and checked before the first image is stored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from model.data.csvfile import has_control_character
from model.data.photo_trees import PhotoTree, is_hidden
from model.errors import CsvError, DataError
from model.identity.refs import photo_csv_cache_ref
from store import ObjectStore
from store.errors import StoreUnwritable
from store.hashing import is_sha1, sha1_bytes

#: The first bytes of the photo formats the decoder reads (WebP: "RIFF", a size, then "WEBP";
#: AVIF: a box size, then "ftypavif" or "ftypavis").
IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def looks_like_image(head: bytes) -> bool:
    return (
        head.startswith(IMAGE_SIGNATURES)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head[4:12] in (b"ftypavif", b"ftypavis")
    )


@dataclass(frozen=True)
class Listing:
    """The images of a photo tree as (path, label), in CSV order, and what was skipped, by reason."""

    rows: tuple[tuple[str, str], ...]
    skipped: dict[str, int]

    @property
    def labels(self) -> list[str]:
        return sorted({label for _, label in self.rows})


def list_photos(tree: PhotoTree, max_rows: int, max_entries: int) -> Listing:
    """The images to train on; DataError if they cannot make a classifier (none, one label).
    Every file counts towards ``max_entries`` (MAX_FOLDER_ENTRIES), skipped or not: a tree of
    100,000 non-images costs as much to list as one of images."""
    rows: list[tuple[str, str]] = []
    skipped: Counter[str] = Counter()
    for count, path in enumerate(tree.files(), start=1):
        if count > max_entries:
            raise DataError(f"{tree.name} has more than {max_entries:,} files (MAX_FOLDER_ENTRIES)")
        parts = PurePosixPath(path).parts
        if is_hidden(path):
            skipped["hidden"] += 1
        elif len(parts) < 2:
            skipped["not in a label folder"] += 1
        elif not looks_like_image(tree.head(path)):
            skipped["not an image"] += 1
        else:
            check_label_path(tree.name, path, parts[0])
            rows.append((path, parts[0]))
            if len(rows) > max_rows:
                raise CsvError(f"{tree.name} has more than {max_rows} images (MAX_CSV_ROWS)")
    rows.sort(key=lambda row: (row[1], row[0]))
    listing = Listing(tuple(rows), dict(sorted(skipped.items())))
    said = f"; skipped {describe_skipped(listing.skipped)}" if skipped else ""
    if not rows:
        raise DataError(
            f"{tree.name} has no images in label folders (expected <label>/<image> inside it){said}"
        )
    if len(listing.labels) < 2:
        raise DataError(
            f"{tree.name} has one label folder ({listing.labels[0]}): a classifier needs at least two{said}"
        )
    return listing


def check_label_path(tree: str, path: str, label: str) -> None:
    """Refuse, before anything is stored, a photo path with a control character (it would reach
    a terminal and the CSV raw) or a label folder with white space at either end (the CSV reader
    strips it, so ``cats `` would silently join ``cats``)."""
    if has_control_character(path):
        raise DataError(f"{tree}: {path!r} has a control character")
    if label != label.strip():
        raise DataError(f"{tree}: label folder {label!r} has white space at its start or end ({path!r})")


def describe_skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items())


def photo_csv(listing: Listing, sha1s: list[str]) -> bytes:
    """The training CSV of ``listing``, whose images have ``sha1s`` (in its order)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for (path, label), sha1 in zip(listing.rows, sha1s, strict=True):
        writer.writerow([path, label, sha1])
    return out.getvalue().encode()


@dataclass(frozen=True)
class PhotoCsv:
    """What a photo tree became in the store: its training CSV, and what it held."""

    csv_sha1: str
    listing: Listing

    def summary(self) -> dict[str, object]:
        return {
            "csv_sha1": self.csv_sha1,
            "images": len(self.listing.rows),
            "labels": self.listing.labels,
            "skipped": self.listing.skipped,
        }


def store_photos(
    store: ObjectStore, tree: PhotoTree, max_rows: int, min_free_bytes: int = 0, *, max_entries: int
) -> PhotoCsv:
    """Store each image of ``tree`` and then its training CSV (listed and checked first).

    StoreUnwritable, with nothing stored, when the images would leave the store's disk with less
    than ``min_free_bytes`` free (a zip's stated sizes count: ten 50 MB entries in 0.5 MB)."""
    listing = list_photos(tree, max_rows, max_entries)
    need = sum(tree.new_bytes(path) for path, _label in listing.rows)
    free = store.free_bytes() if need else None
    if free is not None and need > free - min_free_bytes:
        raise StoreUnwritable(
            f"{tree.name} holds {need:,} bytes of photos; the store's disk has {free:,} bytes free "
            f"and keeps MIN_FREE_BYTES ({min_free_bytes:,}) free"
        )
    sha1s = [tree.store_file(store, path) for path, _label in listing.rows]
    return PhotoCsv(store.put(photo_csv(listing, sha1s)), listing)


#: Part of every cache key below: a change to how a tree becomes its CSV (what is skipped, the
#: CSV's form) must not be answered from what an older version remembered.
LISTING_VERSION = 1


def photo_csv_key(kind: str, source: object) -> str:
    """The cache key of a request's photos: ``("zip", sha1)`` or ``("folder", [[path, sha1], ...])``."""
    return sha1_bytes(json.dumps([LISTING_VERSION, kind, source], separators=(",", ":")).encode())


def remembered_csv(store: ObjectStore, key: str) -> str | None:
    """The CSV a zip or folder became before (a poll re-sends the same body), if it is still held:
    answered from the store, with nothing unpacked or read again."""
    raw = store.get_ref(photo_csv_cache_ref(key))
    sha1 = raw.decode("ascii", "replace") if raw else ""
    return sha1 if is_sha1(sha1) and store.has(sha1) else None


def remember_csv(store: ObjectStore, key: str, csv_sha1: str) -> None:
    """A cache entry (gc drops it with the CSV when no model names it): losing it costs one unpack."""
    with contextlib.suppress(StoreUnwritable):  # a read-only store: every poll unpacks, as before
        store.set_ref(photo_csv_cache_ref(key), csv_sha1.encode())
