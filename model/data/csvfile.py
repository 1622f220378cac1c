"""The project's two CSV grammars, over one reader: UTF-8, blank rows skipped.

Training takes ``<image_url>,<label>,<sha1>`` per row (``parse_csv``), or the columns a header
row names (``path,label,sha1``, as people write them; ``header_of`` says which names count);
labelling a list of images takes ``<image_url>[,<label>][,<sha1>]`` (``parse_image_list``),
so a training CSV can be labelled as it is. ``complete`` fills in the sha1s a CSV leaves out,
from a function the caller gives (a local file's bytes), so that the stored CSV, which the
recipe names, is complete.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from model.errors import CsvError
from store.hashing import is_sha1


@dataclass(frozen=True)
class Row:
    line: int
    source: str
    label: str
    sha1: str


def _lines(data: bytes) -> io.TextIOWrapper:
    """The text of ``data``, decoded as it is read (a CSV past the row limit is never decoded
    whole); lines end at ``\n`` only, as ``csv`` wants them."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="\n")


def _raw_records(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """(record number, fields as written) of each row, blank ones included."""
    reader = csv.reader(_lines(data))
    try:
        yield from enumerate(reader, start=1)
    except UnicodeDecodeError:
        raise CsvError("CSV is not UTF-8 text") from None
    except csv.Error as e:
        limit = csv.field_size_limit()
        reason = f"a field is longer than {limit} characters" if "field limit" in str(e) else str(e)
        raise CsvError(f"CSV line {reader.line_num}: {reason}") from None


def records(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """(record number, stripped fields) of each non-blank row; CsvError names what is wrong.
    Lazy: a caller that stops at a row limit never reads (or decodes) the rest."""
    for n, fields in _raw_records(data):
        fields = [f.strip() for f in fields]
        if any(fields):
            yield n, fields


def _over_limit(max_rows: int) -> CsvError:
    return CsvError(f"CSV has more than {max_rows} rows (MAX_CSV_ROWS)")


#: Header names, lowercased: which column holds the image, which the label, which the sha1.
SOURCE_NAMES = ("path", "url", "image", "image_url", "file", "filename", "source")
LABEL_NAMES = ("label", "class", "category")
SHA1_NAMES = ("sha1",)


@dataclass(frozen=True)
class Columns:
    """Where a training CSV's fields are: the plain three, or as a header row names them."""

    source: int
    label: int
    sha1: int | None
    names: tuple[str, ...] = ()  # the header's names; () for the plain form

    @property
    def width(self) -> int:
        return len(self.names) or 3


PLAIN = Columns(0, 1, 2)


def header_of(fields: list[str]) -> Columns | None:
    """The columns a header row names, or None if ``fields`` is not one (every field a known name:
    one image column, one label column, at most one sha1 column)."""
    names = [f.lower() for f in fields]
    picks = [
        [i for i, n in enumerate(names) if n in kind] for kind in (SOURCE_NAMES, LABEL_NAMES, SHA1_NAMES)
    ]
    source, label, sha1 = picks
    if len(source) != 1 or len(label) != 1 or len(sha1) > 1 or sum(map(len, picks)) != len(names):
        return None
    return Columns(source[0], label[0], sha1[0] if sha1 else None, tuple(names))


def parse_csv(data: bytes, max_rows: int) -> list[Row]:
    """Rows of the training CSV; a malformed row fails the whole file with its line number."""
    rows: list[Row] = []
    columns: Columns | None = None
    for n, fields in records(data):
        if columns is None:
            columns = header_of(fields)
            if columns is not None:
                continue
            columns = PLAIN
        _add_row(rows, n, fields, columns, max_rows)
    labels = sorted({r.label for r in rows})
    if len(labels) < 2:
        raise CsvError(f"CSV needs at least 2 labels to train a classifier, got {len(labels)}")
    return rows


def check_labels(rows: list[Row], allow_conflicts: bool = False, max_labels: int = 1000) -> None:
    """Refuse a CSV that contradicts itself: one image (by sha1) under two labels (unless
    ``allow_conflicts``: ALLOW_CONFLICTING_LABELS), or two labels that are one text in two Unicode
    spellings (NFC ``café`` and NFD ``café``), which would train as two classes; and one with more
    than ``max_labels`` labels (MAX_LABELS), whose head would outgrow memory (the solvers' state
    grows with labels x features x folds). Checked when a request comes in, never on a stored CSV
    (gc, a rebuild): it changes no bit of any model."""
    labels = {row.label for row in rows}
    if len(labels) > max_labels:
        raise CsvError(f"CSV has {len(labels)} labels, over the limit of {max_labels} (MAX_LABELS)")
    if not allow_conflicts:
        first: dict[str, Row] = {}
        for row in rows:
            seen = first.setdefault(row.sha1, row)
            if seen.label != row.label:
                raise CsvError(
                    f"CSV lines {seen.line} and {row.line} give one image ({row.sha1}) two labels, "
                    f"{seen.label!r} and {row.label!r} (ALLOW_CONFLICTING_LABELS=1 trains on both)"
                )
    spelled: dict[str, Row] = {}
    for row in rows:
        key = unicodedata.normalize("NFC", row.label)
        other = spelled.setdefault(key, row)
        if other.label != row.label:
            raise CsvError(
                f"CSV lines {other.line} and {row.line} spell one label two ways ({other.label!a} and "
                f"{row.label!a}: the same text in Unicode's composed and decomposed forms); write one"
            )


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control or DEL: raw on a terminal, or a CSV Python 3.10 refuses."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def _add_row(rows: list[Row], n: int, fields: list[str], columns: Columns, max_rows: int) -> None:
    if len(fields) != columns.width:
        expected = ",".join(columns.names) if columns.names else "<image_url>,<label>,<sha1>"
        raise CsvError(f"CSV line {n}: expected {columns.width} fields {expected}, got {len(fields)}")
    source, label = fields[columns.source], fields[columns.label]
    if not source:
        raise CsvError(f"CSV line {n}: empty image URL")
    if not label:
        raise CsvError(f"CSV line {n}: empty label")
    if has_control_character(label):
        raise CsvError(f"CSV line {n}: label {label!r} has a control character")
    if columns.sha1 is None:
        raise CsvError(
            f"CSV line {n}: no sha1 for {source} (an image URL needs one; a local file's is computed)"
        )
    sha1 = fields[columns.sha1].lower()
    if not is_sha1(sha1):
        raise CsvError(f"CSV line {n}: {sha1!r} is not a sha1 (40 hex digits)")
    if len(rows) == max_rows:
        raise _over_limit(max_rows)
    rows.append(Row(n, source, label, sha1))


def complete(data: bytes, sha1_of: Callable[[int, str], str], max_rows: int) -> bytes:
    """The CSV with each missing sha1 filled in by ``sha1_of(line, image)``: a plain row of two
    fields gets a third, a header without a sha1 column gets one. ``data`` itself when nothing
    is missing; otherwise every other byte of meaning (rows, order, blank lines) is kept. A CSV
    of more than ``max_rows`` rows is refused at the first row past them."""
    table: list[list[str]] = []
    columns: Columns | None = None
    changed = False
    count = 0
    for n, raw in _raw_records(data):
        table.append(raw)
        fields = [f.strip() for f in raw]
        if not any(fields):
            continue
        if columns is None:
            columns = header_of(fields)
            if columns is not None:
                if columns.sha1 is None:
                    raw.append("sha1")
                    changed = True
                continue
            columns = PLAIN
        count += 1
        if count > max_rows:
            raise _over_limit(max_rows)
        missing = (
            (len(fields) == 2)
            if columns is PLAIN
            else (columns.sha1 is None and len(fields) == columns.width)
        )
        if missing and fields[columns.source]:
            raw.append(sha1_of(n, fields[columns.source]))
            changed = True
    if not changed:
        return data
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue().encode()


@dataclass(frozen=True)
class ImageRow:
    line: int
    source: str
    label: str | None = None
    sha1: str | None = None


def parse_image_list(data: bytes, max_rows: int) -> Iterator[ImageRow]:
    """Rows of an image list: ``url``, ``url,label``, ``url,sha1`` or ``url,label,sha1``, or the
    columns a header row names."""
    rows = records(data)
    for count, (n, fields) in enumerate(rows, start=1):
        if count == 1 and (columns := header_of(fields)) is not None:
            yield from _named_image_rows(rows, columns, max_rows)
            return
        if len(fields) > 3 or not fields[0]:
            raise CsvError(f"CSV line {n}: expected <image_url>[,<label>][,<sha1>], got {len(fields)} fields")
        sha1 = fields[-1].lower() if len(fields) > 1 and is_sha1(fields[-1].lower()) else None
        if len(fields) == 3 and sha1 is None:
            raise CsvError(f"CSV line {n}: {fields[2]!r} is not a sha1 (40 hex digits)")
        label = fields[1] if len(fields) == 3 or (len(fields) == 2 and sha1 is None) else None
        if count > max_rows:
            raise _over_limit(max_rows)
        yield ImageRow(n, fields[0], label or None, sha1)


def _named_image_rows(
    rows: Iterator[tuple[int, list[str]]], columns: Columns, max_rows: int
) -> Iterator[ImageRow]:
    for count, (n, fields) in enumerate(rows, start=1):
        if len(fields) != columns.width or not fields[columns.source]:
            raise CsvError(
                f"CSV line {n}: expected {columns.width} fields {','.join(columns.names)}, got {len(fields)}"
            )
        sha1 = fields[columns.sha1].lower() if columns.sha1 is not None else None
        if sha1 is not None and not is_sha1(sha1):
            raise CsvError(f"CSV line {n}: {sha1!r} is not a sha1 (40 hex digits)")
        if count > max_rows:
            raise _over_limit(max_rows)
        yield ImageRow(n, fields[columns.source], fields[columns.label] or None, sha1)
