"""Parse the training CSV: ``<image_url>,<label>,<sha1>`` per row, no header."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from model.errors import CsvError
from store.hashing import is_sha1


@dataclass(frozen=True)
class Row:
    line: int
    source: str
    label: str
    sha1: str


def parse_csv(data: bytes, max_rows: int) -> list[Row]:
    """Rows of the CSV; a malformed row fails the whole file with its line number."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvError("CSV is not UTF-8 text") from None
    rows: list[Row] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for n, fields in enumerate(reader, start=1):
            _add_row(rows, n, fields, max_rows)
    except csv.Error as e:
        limit = csv.field_size_limit()
        reason = f"a field is longer than {limit} characters" if "field limit" in str(e) else str(e)
        raise CsvError(f"CSV line {reader.line_num}: {reason}") from None
    labels = sorted({r.label for r in rows})
    if len(labels) < 2:
        raise CsvError(f"CSV needs at least 2 labels to train a classifier, got {len(labels)}")
    return rows


def _add_row(rows: list[Row], n: int, fields: list[str], max_rows: int) -> None:
    if not fields or all(not f.strip() for f in fields):
        return
    if len(fields) != 3:
        raise CsvError(f"CSV line {n}: expected 3 fields <image_url>,<label>,<sha1>, got {len(fields)}")
    source, label, sha1 = (f.strip() for f in fields)
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
