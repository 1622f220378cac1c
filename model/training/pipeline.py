"""The training pipeline: CSV -> images -> tensors -> features -> head -> manifest.

Images go through in chunks (``model.features.chunks``) on an executor (in this process, or
Ray tasks: ``model.execution.local``), so memory holds one chunk of decoded pixels, never the
whole data set decoded; the features go straight into the splits' head shards in the store
(``model.training.head_rows``), which the head reads where the executor keeps them. Every
intermediate goes into the store under its hash; the model's weights and
manifest are written last, so a failed or killed run leaves nothing under the
model's name.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from model.bases.litert import UNIT_BOUND
from model.bases.registry import ensure_base_with
from model.config import Settings
from model.context import Context
from model.data.csvfile import Row, check_labels, complete, parse_csv
from model.data.fetch import FetchPolicy, fetch_bytes, is_url, resolve_source
from model.data.split import split_rows
from model.errors import ChecksumMismatch, CsvError, DataError, FetchError, InvalidRequest, StoreChanged
from model.execution.local import Executor, LocalExecutor, chunked
from model.features.chunks import Image, Mismatch, features_chunk, fetch_chunk
from model.head.shards import Rows
from model.identity.manifest import encode_rows, missing_objects, save_manifest
from model.identity.recipe import Recipe, make_recipe, parse_hyperparameters
from model.identity.tensors import dump_tensors
from model.jobs import fence as gc_fence
from model.jobs import state as jobs
from model.jobs.in_flight import HeadShardLedger
from model.training.fit import fit_head, head_steps
from model.training.head_rows import Examples, HeadRows, ShardWriter
from model.training.record import model_manifest, record_run, row_table, weights_and_metrics
from store import ObjectStore
from store.hashing import is_sha1, sha1_bytes

#: Images per features chunk (one Ray task each): big enough that a task's overhead is small next
#: to its ~64 base forward passes, small enough that a killed task loses little.
FEATURE_CHUNK = 64
#: Images per fetch chunk: fetched by DOWNLOAD_POOL_SIZE threads within the chunk.
FETCH_CHUNK = 256
MAX_LISTED_ROWS = 10


class Tracker(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


#: progress(stage, total) -> a tracker, for the stages fetch, features and head (one step per
#: epoch, or per l2 strength of the logistic head); the CLI passes tqdm bars, jobs ``model.jobs.progress``.
Progress = Callable[[str, int], Tracker]


class _Silent:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def silent(stage: str, total: int) -> Tracker:
    return _Silent()


@contextmanager
def _tracking(progress: Progress, stage: str, total: int) -> Iterator[Tracker]:
    tracker = progress(stage, total)
    try:
        yield tracker
    finally:
        tracker.close()


def prepare_recipe(
    ctx: Context, params: dict[str, Any], csv_source: str | None, csv_sha1: str | None
) -> Recipe:
    """Validate a request and bind it to content hashes (CSV, base weights).

    Cheap: no TensorFlow. If ``csv_sha1`` is not given the CSV is fetched and
    stored to learn it.
    """
    store, settings, policy = ctx.store, ctx.settings, ctx.policy
    hyper = parse_hyperparameters(params, settings)
    spec, base_sha1 = ensure_base_with(settings, store, hyper["base"])
    extra_sha1 = ensure_base_with(settings, store, hyper["extra_base"])[1] if hyper["extra_base"] else ""
    if csv_sha1 is None:
        if not csv_source:
            raise InvalidRequest("the CSV needs a url or a sha1")
        csv_sha1 = store_csv(
            store, fetch_bytes(csv_source, policy, store), csv_source, policy, settings.max_csv_rows
        )
    elif not is_sha1(csv_sha1):
        raise InvalidRequest(f"csv sha1 must be 40 lowercase hex digits, got {csv_sha1!r}")
    recipe = make_recipe(hyper, csv_sha1, base_sha1, spec.native_size, extra_sha1)
    # Parsed here, once, so that a CSV that cannot train gets no job; not on a poll of a model it
    # already made (the 2019 contract: the same request again answers ready).
    if store.has(csv_sha1) and jobs.ready_status(store, recipe.sha1) is None:
        rows = parse_csv(store.get(csv_sha1), settings.max_csv_rows)
        check_labels(rows, settings.allow_conflicting_labels, settings.max_labels)
    return recipe


def store_csv(store: ObjectStore, data: bytes, source: str | None, policy: FetchPolicy, max_rows: int) -> str:
    """Complete a training CSV (the sha1s it leaves out, of local files) and store it; its sha1.
    ``prepare_recipe`` parses what is stored, before any job is recorded; a CSV over ``max_rows``
    is refused at its first row past them, before anything is stored."""

    def sha1_of(line: int, image: str) -> str:
        resolved = resolve_source(image, source)
        if resolved.startswith("sha1:") or is_url(resolved):
            raise CsvError(
                f"CSV line {line}: no sha1 for {image} (an image URL needs one; a local file's is computed)"
            )
        try:
            return store.put(fetch_bytes(resolved, policy, store))
        except FetchError as e:
            raise type(e)(f"CSV line {line}: {e}") from None

    data = complete(data, sha1_of, max_rows)
    sha1 = sha1_bytes(data)
    if not store.has(sha1):  # held already: nothing to write (a read-only store polls)
        store.put(data)
    return sha1


def load_csv(store: ObjectStore, recipe: Recipe, csv_source: str | None, policy: FetchPolicy) -> bytes:
    if store.has(recipe.csv_sha1):
        return store.get(recipe.csv_sha1)
    if not csv_source:
        raise DataError(f"CSV {recipe.csv_sha1} is not in the store and no URL was given")
    data = fetch_bytes(csv_source, policy, store, expected_sha1=recipe.csv_sha1)
    store.put(data)
    return data


def distinct_images(rows: list[Row]) -> list[Image]:
    """Each image once, in the order of the rows that first list it."""
    seen: dict[str, Image] = {}
    for row in rows:
        if row.sha1 not in seen:
            seen[row.sha1] = Image(row.sha1, row.source, row.line)
    return list(seen.values())


def fetch_images(
    executor: Executor,
    images: list[Image],
    csv_source: str | None,
    settings: Settings,
    policy: FetchPolicy,
    progress: Progress,
) -> None:
    """Put every image into the store, verified against the CSV's sha1.

    All images are tried so a mismatch report lists every offending row at once.
    """
    mismatches: list[Mismatch] = []
    chunks = list(chunked(images, FETCH_CHUNK))
    with _tracking(progress, "fetch", len(images)) as bar:
        results = executor.map(fetch_chunk, chunks, csv_source, settings, policy, tick=lambda: bar.update(0))
        for chunk, found in zip(chunks, results, strict=True):
            mismatches.extend(found)
            bar.update(len(chunk))
    if mismatches:
        listed = "; ".join(
            f"line {m.image.line} ({m.image.source}) has sha1 {m.actual_sha1}, CSV says {m.image.sha1}"
            for m in mismatches[:MAX_LISTED_ROWS]
        )
        more = f"; and {len(mismatches) - MAX_LISTED_ROWS} more" if len(mismatches) > MAX_LISTED_ROWS else ""
        raise ChecksumMismatch(f"{len(mismatches)} image(s) do not match their CSV sha1: {listed}{more}")


def extract_features(
    executor: Executor,
    images: list[Image],
    recipe: Recipe,
    settings: Settings,
    progress: Progress,
    writers: list[ShardWriter],
) -> tuple[dict[str, dict[str, Any]], dict[str, int], list[str]]:
    """Each image's view-summed integer features, handed to the splits' shard writers as the
    chunks finish (in image order); the images' cache records, cache statistics, and the
    processes (host:pid) that ran the chunks."""
    records: dict[str, dict[str, Any]] = {}
    stats = {"decoded": 0, "tensor_cache_hits": 0, "base_forward": 0, "feature_cache_hits": 0}
    done = 0
    workers: set[str] = set()
    with _tracking(progress, "features", len(images)) as bar:
        chunks = chunked(images, FEATURE_CHUNK)
        for result in executor.map(features_chunk, chunks, recipe, settings, tick=lambda: bar.update(0)):
            n = len(result.records)
            for i in range(n):
                for writer in writers:
                    writer.add(done + i, result.units[i], result.factor)
            records.update((r["image_sha1"], r) for r in result.records)
            for k, v in result.stats.items():
                stats[k] += v
            done += n
            workers.add(result.worker)
            bar.update(n)
    return records, stats, sorted(workers)


#: Builds of one job when a gc keeps sweeping what it read: then a transient error, retried later.
COMMIT_ATTEMPTS = 3


@dataclass
class Built:
    """A model ready to commit: its manifest (objects stored, manifest ref not yet written)."""

    manifest: dict[str, Any]
    weights_sha1: str
    timings: dict[str, float]
    stats: dict[str, int]
    workers: list[str]


def build_model(
    ctx: Context, recipe: Recipe, csv_source: str | None, progress: Progress, executor: Executor
) -> Built:
    """Every stage of the training; stores every object the manifest names, but not its ref."""
    store, settings, policy = ctx.store, ctx.settings, ctx.policy
    started = time.time()
    timings: dict[str, float] = {}
    csv_bytes = load_csv(store, recipe, csv_source, policy)
    rows = parse_csv(csv_bytes, settings.max_csv_rows)
    train_rows, val_rows = split_rows(rows, recipe.random_seed, recipe.train_percentage, recipe.data_limit)
    used = sorted(train_rows + val_rows, key=lambda r: r.line)
    labels = sorted({r.label for r in used})
    images = distinct_images(used)
    fetch_images(executor, images, csv_source, settings, policy, progress)
    timings["fetch"] = time.time() - started

    in_train = {r.line for r in train_rows}
    # The features go straight into each split's head shards, which the ledger names as they are
    # stored: gc keeps them while the fit runs, however long it takes.
    with HeadShardLedger(store, recipe.sha1) as ledger:
        t = time.time()
        image_index = {image.sha1: i for i, image in enumerate(images)}
        bound = UNIT_BOUND * len(recipe.views)
        writers = [
            ShardWriter(
                store,
                Examples.of([r for r in used if (r.line in in_train) == side], image_index, labels),
                settings.head_shard_pairs,
                bound,
                ledger.add,
            )
            for side in (True, False)
        ]
        image_records, stats, workers = extract_features(
            executor, images, recipe, settings, progress, writers
        )
        train, held = (w.finish() for w in writers)
        timings["features"] = time.time() - t

        t = time.time()
        with _tracking(progress, "head", head_steps(recipe)) as bar:
            # The solvers run here; the logistic head's rows are where the executor keeps them (on Ray,
            # in shards its workers hold). A step is an Adam epoch or an l2 strength tried; every
            # solver round beats (a cancel check).
            def place(rows: HeadRows) -> Rows:
                return executor.head_rows(rows.shards, rows.bound)

            fitted = fit_head(
                recipe, labels, store, train, held, place, lambda: bar.update(1), lambda: bar.update(0)
            )
        timings["train"] = time.time() - t
    head = fitted.head

    weights = dump_tensors(head.tensors())
    weights_sha1 = store.put(weights)
    table = encode_rows(row_table(used, in_train, image_records))
    rows_sha1 = store.put(table)
    base_weights = store.get(recipe.base_sha1)
    extra_weights = store.get(recipe.extra_base_sha1) if recipe.extra_base else None
    manifest = model_manifest(
        recipe,
        labels,
        csv_bytes,
        len(rows),
        base_weights,
        extra_weights,
        table,
        rows_sha1,
        len(used),
        len(images),
    ) | weights_and_metrics(head, weights, weights_sha1, fitted, train.examples.rows, held.examples.rows)
    return Built(manifest, weights_sha1, timings, stats, workers)


def commit_model(store: ObjectStore, built: Built, progress: Progress) -> tuple[str, int] | None:
    """Write the manifest ref if every object it names is in the store, inside gc's fence
    (``model.jobs.fence``); its sha1 and the gc epoch it was checked at, or None if a gc swept some."""
    owner = f"commit-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with _tracking(progress, "commit", 1) as bar:
        with gc_fence.commit_window(store, owner, on_wait=lambda: bar.update(0)) as epoch:
            if missing_objects(store, built.manifest):
                return None
            manifest_sha1 = save_manifest(store, built.manifest)
        bar.update(1)
    return manifest_sha1, epoch


def train_model(
    ctx: Context,
    recipe: Recipe,
    csv_source: str | None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Build the model for ``recipe``; return the ready-status fields (manifest and artifact sha1s).

    Memory follows the distinct images, not the rows: each image is fetched, run
    through the base and held once however many rows list it, and the head
    trains on distinct (image, label) pairs weighted by their row counts. If a gc
    deleted something the build read before it could commit, the build runs again:
    what is still stored is a cache hit, what went is made afresh.
    """
    from model.training.runtime import environment

    store = ctx.store
    progress = progress or silent
    executor = executor or LocalExecutor(store)
    started = time.time()
    for _attempt in range(COMMIT_ATTEMPTS):
        built = build_model(ctx, recipe, csv_source, progress, executor)
        committed = commit_model(store, built, progress)
        if committed is not None:
            break
    else:
        raise StoreChanged(
            "objects this training read were deleted by gc before it could finish "
            f"({COMMIT_ATTEMPTS} times); send the request again"
        )
    manifest_sha1, epoch = committed
    timings = {**built.timings, "total": time.time() - started}
    record_run(
        store,
        recipe.sha1,
        manifest_sha1,
        csv_source,
        timings,
        built.stats,
        {**environment(), "executor": executor.name, "feature_workers": built.workers},
    )
    return {
        "manifest_sha1": manifest_sha1,
        "weights_sha1": built.weights_sha1,
        "labels": built.manifest["labels"],
        "validation_accuracy": built.manifest["metrics"]["validation_accuracy"],
        "cache": built.stats,
        "gc_epoch": epoch,
    }
