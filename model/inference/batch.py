"""Label a CSV of images: streamed in chunks, fetched in parallel, one JSON result per row, in order.

The CSV lists one image per row: ``<image_url>``, optionally with its label and/or
its sha1 (the training CSV's ``<image_url>,<label>,<sha1>`` works as it is). A
given sha1 verifies the fetched bytes; a given label is reported as ``expected``,
so a held-out CSV gives its accuracy. Rows are read, fetched and labelled a chunk
at a time, so memory does not grow with the CSV. A row that fails (unreachable,
not an image, wrong sha1) gets an ``error`` line and the others go on.

Probabilities are those of labelling each image alone: the base's features do not
depend on their batch-mates (``tests/test_portable_bits.py``) and the head is exact
per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model.config import Settings
from model.data.csvfile import ImageRow, parse_image_list
from model.data.fetch import FetchPolicy, fetch_bytes, resolve_source
from model.errors import PipelineError
from model.execution.local import Executor, chunked
from model.inference.predictor import Predictor, top_label
from store import ObjectStore, StoreError

LABEL_CHUNK = 32


def label_chunk(
    predictor: Predictor, model_sha1: str, chunk: list[ImageRow], data: list[bytes | Exception]
) -> list[dict[str, Any]]:
    """The result lines of one chunk of rows, given each row's bytes (or why it has none)."""
    results: dict[int, dict[str, Any] | Exception] = {}
    good = [(r, d) for r, d in zip(chunk, data, strict=True) if isinstance(d, bytes)]
    try:
        probabilities = predictor.predict(
            model_sha1, [d for _r, d in good], [f"CSV line {r.line} ({r.source})" for r, _d in good]
        )
        results.update({r.line: p for (r, _d), p in zip(good, probabilities, strict=True)})
    except PipelineError:
        # One bad image fails the batch call: label them one by one to find it.
        for r, d in good:
            try:
                results[r.line] = predictor.predict(model_sha1, [d], [f"CSV line {r.line} ({r.source})"])[0]
            except PipelineError as e:
                results[r.line] = e
    out = []
    for row, d in zip(chunk, data, strict=True):
        outcome = d if isinstance(d, Exception) else results[row.line]
        record: dict[str, Any] = {"line": row.line, "image": row.source}
        if isinstance(outcome, Exception):
            record["error"] = str(outcome)
        else:
            record["label"] = top_label(outcome)
            record["probabilities"] = outcome
        if row.label is not None:
            record["expected"] = row.label
        out.append(record)
    return out


def row_fetcher(csv: str, policy: FetchPolicy, store: ObjectStore) -> Callable[[ImageRow], bytes]:
    """Fetches a row's image, its path relative to the CSV at ``csv``, verified if it gives a sha1."""
    return lambda row: fetch_bytes(resolve_source(row.source, csv), policy, store, expected_sha1=row.sha1)


def label_rows(
    predictor: Predictor,
    model_sha1: str,
    rows: Iterable[ImageRow],
    fetch: Callable[[ImageRow], bytes],
    pool_size: int = 8,
    chunk_rows: int = LABEL_CHUNK,
) -> Iterator[dict[str, Any]]:
    """One result per row, in the CSV's order: label and probabilities, or the row's error."""
    predictor.load(model_sha1)  # an unknown model fails before any image is fetched

    def fetched(row: ImageRow) -> bytes | Exception:
        try:
            return fetch(row)
        except (PipelineError, StoreError, OSError) as e:  # this row's fault or its source's: say so
            return e

    with ThreadPoolExecutor(max(1, pool_size)) as pool:
        for chunk in chunked(rows, chunk_rows):
            yield from label_chunk(predictor, model_sha1, chunk, list(pool.map(fetched, chunk)))


_predictors: dict[int, Predictor] = {}


def label_chunk_task(
    store: ObjectStore,
    chunk: list[ImageRow],
    model_sha1: str,
    csv: str,
    policy: FetchPolicy,
    settings: Settings,
) -> list[dict[str, Any]]:
    """One chunk as a task of its own (EXECUTOR=ray): fetch its rows, label them, with this
    process's Predictor (its models and bases stay loaded for the next chunk)."""
    if id(store) not in _predictors:  # one per store handle, which ray_executor.store_for keeps
        _predictors[id(store)] = Predictor(store, settings)
    predictor = _predictors[id(store)]
    fetch = row_fetcher(csv, policy, store)
    return list(label_rows(predictor, model_sha1, chunk, fetch, settings.download_pool_size, len(chunk)))


class CsvLabelling:
    """The records of a CSV's rows, in order, as they are labelled; ``total`` rows in all."""

    def __init__(self, total: int, records: Iterator[dict[str, Any]]) -> None:
        self.total = total
        self._records = records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._records


def label_csv(
    predictor: Predictor,
    model_sha1: str,
    csv: str,
    policy: FetchPolicy,
    store: ObjectStore,
    settings: Settings,
    executor: Executor | None = None,
) -> CsvLabelling:
    """``label_rows`` over the CSV at ``csv`` (a path, URL or ``sha1:``); rows' paths are relative to it.

    The whole CSV is parsed first (a bad row fails before any line is written, and the count is
    known for a progress bar). On Ray (``executor``) each chunk is a task that fetches and labels
    its rows wherever it runs; the lines come back in CSV order all the same."""
    rows = list(parse_image_list(fetch_bytes(csv, policy, store), settings.max_csv_rows))
    if executor is not None and not executor.in_process:
        predictor.load(model_sha1)  # an unknown model fails here, before any task starts
        records: Iterator[dict[str, Any]] = (
            record
            for lines in executor.map(
                label_chunk_task, chunked(rows, LABEL_CHUNK), model_sha1, csv, policy, settings
            )
            for record in lines
        )
    else:
        records = label_rows(
            predictor, model_sha1, rows, row_fetcher(csv, policy, store), settings.download_pool_size
        )
    return CsvLabelling(len(rows), iter(records))
