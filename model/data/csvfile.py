"""The project's two CSV grammars, over one reader: no header, UTF-8, blank rows skipped.

Training takes ``<image_url>,<label>,<sha1>`` per row (``parse_csv``); labelling a list of
images takes ``<image_url>[,<label>][,<sha1>]`` (``parse_image_list``), so a training CSV
can be labelled as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from model.errors import CsvError
from store.hashing import is_sha1


@dataclass(frozen=True)
class Row:
    line: int
    source: str
    label: str
    sha1: str


def records(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """(record number, stripped fields) of each non-blank row; CsvError names what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvError("CSV is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    try:
        for n, fields in enumerate(reader, start=1):
            fields = [f.strip() for f in fields]
            if any(fields):
                yield n, fields
    except csv.Error as e:
        limit = csv.field_size_limit()
        reason = f"a field is longer than {limit} characters" if "field limit" in str(e) else str(e)
        raise CsvError(f"CSV line {reader.line_num}: {reason}") from None


def parse_csv(data: bytes, max_rows: int) -> list[Row]:
    """Rows of the training CSV; a malformed row fails the whole file with its line number."""
    rows: list[Row] = []
    for n, fields in records(data):
        _add_row(rows, n, fields, max_rows)
    labels = sorted({r.label for r in rows})
    if len(labels) < 2:
        raise CsvError(f"CSV needs at least 2 labels to train a classifier, got {len(labels)}")
    return rows


def _add_row(rows: list[Row], n: int, fields: list[str], max_rows: int) -> None:
    if len(fields) != 3:
        raise CsvError(f"CSV line {n}: expected 3 fields <image_url>,<label>,<sha1>, got {len(fields)}")
    source, label, sha1 = fields
    sha1 = sha1.lower()
    if not source:
        raise CsvError(f"CSV line {n}: empty image URL")
    if not label:
        raise CsvError(f"CSV line {n}: empty label")
    if not is_sha1(sha1):
        raise CsvError(f"CSV line {n}: {sha1!r} is not a sha1 (40 hex digits)")
    rows.append(Row(n, source, label, sha1))
    if len(rows) > max_rows:
        raise CsvError(f"CSV has more than {max_rows} rows (MAX_CSV_ROWS)")


@dataclass(frozen=True)
class ImageRow:
    line: int
    source: str
    label: str | None = None
    sha1: str | None = None


def parse_image_list(data: bytes, max_rows: int) -> Iterator[ImageRow]:
    """Rows of an image list: ``url``, ``url,label``, ``url,sha1`` or ``url,label,sha1``."""
    for count, (n, fields) in enumerate(records(data), start=1):
        if len(fields) > 3 or not fields[0]:
            raise CsvError(f"CSV line {n}: expected <image_url>[,<label>][,<sha1>], got {len(fields)} fields")
        sha1 = fields[-1].lower() if len(fields) > 1 and is_sha1(fields[-1].lower()) else None
        if len(fields) == 3 and sha1 is None:
            raise CsvError(f"CSV line {n}: {fields[2]!r} is not a sha1 (40 hex digits)")
        label = fields[1] if len(fields) == 3 or (len(fields) == 2 and sha1 is None) else None
        if count > max_rows:
            raise CsvError(f"CSV has more than {max_rows} rows (MAX_CSV_ROWS)")
        yield ImageRow(n, fields[0], label or None, sha1)
