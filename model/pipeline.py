"""The training pipeline: CSV -> images -> tensors -> features -> head -> manifest.

Images stream through in chunks, so memory holds one chunk of decoded pixels
and the (small) feature matrix, never the whole data set decoded. Every
intermediate goes into the store under its hash; the model's weights and
manifest are written last, so a failed or killed run leaves nothing under the
model's name.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from store import ObjectStore
from store.hashing import is_sha1, sha1_bytes, sha256_bytes

from .bases.registry import ensure_base
from .config import Settings
from .csvfile import Row, parse_csv
from .errors import ChecksumMismatch, DataError, InvalidRequest
from .features import (
    FeatureExtractor,
    FeatureKey,
    TensorKey,
    average_views,
    build_extractor,
    cached,
    load_features,
    load_tensor,
    store_features,
    store_tensor,
    view_of,
    views_for,
)
from .fetch import FetchPolicy, fetch_bytes, resolve_source
from .images import decode_image
from .manifest import FORMAT, save_manifest
from .recipe import Recipe, make_recipe, parse_hyperparameters
from .split import split_rows
from .tensors import dump_tensors

CHUNK_ROWS = 64
MAX_LISTED_ROWS = 10


class Tracker(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


#: progress(stage, total) -> a tracker; the CLI passes tqdm, the service nothing.
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
    store: ObjectStore,
    settings: Settings,
    params: dict[str, Any],
    csv_source: str | None,
    csv_sha1: str | None,
    policy: FetchPolicy,
) -> Recipe:
    """Validate a request and bind it to content hashes (CSV, base weights).

    Cheap: no TensorFlow. If ``csv_sha1`` is not given the CSV is fetched and
    stored to learn it.
    """
    hyper = parse_hyperparameters(params, settings)
    spec, base_sha1 = ensure_base(store, hyper["base"], settings.base_cache or None)
    if csv_sha1 is None:
        if not csv_source:
            raise InvalidRequest("the CSV needs a url or a sha1")
        csv_sha1 = store.put(fetch_bytes(csv_source, policy, store))
    elif not is_sha1(csv_sha1):
        raise InvalidRequest(f"csv sha1 must be 40 lowercase hex digits, got {csv_sha1!r}")
    return make_recipe(hyper, csv_sha1, base_sha1, spec.native_size)


def load_csv(store: ObjectStore, recipe: Recipe, csv_source: str | None, policy: FetchPolicy) -> bytes:
    if store.has(recipe.csv_sha1):
        return store.get(recipe.csv_sha1)
    if not csv_source:
        raise DataError(f"CSV {recipe.csv_sha1} is not in the store and no URL was given")
    data = fetch_bytes(csv_source, policy, store, expected_sha1=recipe.csv_sha1)
    store.put(data)
    return data


def fetch_images(
    store: ObjectStore,
    rows: list[Row],
    csv_source: str | None,
    settings: Settings,
    policy: FetchPolicy,
    progress: Progress,
) -> None:
    """Put every row's image into the store, verified against the CSV's sha1.

    All rows are tried so a mismatch report lists every offending row at once.
    """
    missing = [r for r in rows if not store.has(r.sha1)]

    def fetch(row: Row) -> tuple[Row, str | None]:
        source = resolve_source(row.source, csv_source)
        data = fetch_bytes(source, policy, store)
        if sha1_bytes(data) != row.sha1:
            return row, sha1_bytes(data)
        store.put(data)
        return row, None

    mismatches: list[tuple[Row, str]] = []
    with (
        _tracking(progress, "download", len(missing)) as bar,
        ThreadPoolExecutor(max(1, settings.download_pool_size)) as pool,
    ):
        for row, actual in pool.map(fetch, missing):
            if actual is not None:
                mismatches.append((row, actual))
            bar.update(1)
    if mismatches:
        listed = "; ".join(
            f"line {r.line} ({r.source}) has sha1 {a}, CSV says {r.sha1}"
            for r, a in mismatches[:MAX_LISTED_ROWS]
        )
        more = f"; and {len(mismatches) - MAX_LISTED_ROWS} more" if len(mismatches) > MAX_LISTED_ROWS else ""
        raise ChecksumMismatch(f"{len(mismatches)} image(s) do not match their CSV sha1: {listed}{more}")


def extract_features(
    store: ObjectStore,
    rows: list[Row],
    recipe: Recipe,
    settings: Settings,
    progress: Progress,
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, int]]:
    """Features for ``rows`` (views averaged), per-image records, and cache statistics."""
    views = views_for(recipe.flip)
    extractor: FeatureExtractor | None = None  # built only when some feature is missing
    features: np.ndarray | None = None
    records: list[dict[str, Any]] = []
    stats = {"decoded": 0, "tensor_cache_hits": 0, "base_forward": 0, "feature_cache_hits": 0}
    with _tracking(progress, "features", len(rows)) as bar:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            keys = [
                [FeatureKey(r.sha1, recipe.image_size, recipe.base_sha1, v) for v in views] for r in chunk
            ]
            found = [[cached(store, k.ref) for k in ks] for ks in keys]
            todo: list[tuple[int, int, np.ndarray]] = []  # (row in chunk, view index, pixels)
            tensor_sha1s: list[str | None] = []
            for i, row in enumerate(chunk):
                tkey = TensorKey(row.sha1, recipe.image_size)
                tsha1 = cached(store, tkey.ref)
                tensor_sha1s.append(tsha1)
                if all(found[i]):
                    stats["feature_cache_hits"] += len(views)
                    continue
                if tsha1 is not None:
                    stats["tensor_cache_hits"] += 1
                    pixels = load_tensor(store, tsha1)
                else:
                    stats["decoded"] += 1
                    name = f"CSV line {row.line} ({row.source})"
                    pixels = decode_image(
                        store.get(row.sha1), recipe.image_size, settings.max_image_pixels, name
                    )
                    tensor_sha1s[-1] = store_tensor(store, tkey, pixels)
                todo.extend((i, j, view_of(pixels, v)) for j, v in enumerate(views) if found[i][j] is None)
            if todo:
                extractor = extractor or build_extractor(store, recipe)
                out = extractor.features(np.stack([p for _, _, p in todo]))
                stats["base_forward"] += len(todo)
                for (i, j, _), vector in zip(todo, out, strict=True):
                    found[i][j] = store_features(store, keys[i][j], vector)
            for i, row in enumerate(chunk):
                per_view = np.stack([load_features(store, s) for s in found[i]])  # type: ignore[arg-type]
                mean = average_views(per_view)
                if features is None:
                    features = np.empty((len(rows), mean.shape[0]), np.float32)
                features[start + i] = mean
                records.append(
                    {
                        "line": row.line,
                        "source": row.source,
                        "label": row.label,
                        "image_sha1": row.sha1,
                        "tensor_sha1": tensor_sha1s[i],
                        "features_sha1": list(found[i]),
                    }
                )
            bar.update(len(chunk))
    assert features is not None
    return features, records, stats


def train_model(
    store: ObjectStore,
    recipe: Recipe,
    csv_source: str | None,
    settings: Settings,
    policy: FetchPolicy,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the model for ``recipe``; return the ready-status fields (manifest and artifact sha1s)."""
    from .runtime import environment, numeric_path
    from .train import confusion_matrix, train_head

    progress = progress or silent
    started = time.time()
    timings: dict[str, float] = {}
    csv_bytes = load_csv(store, recipe, csv_source, policy)
    rows = parse_csv(csv_bytes, settings.max_csv_rows)
    train_rows, val_rows = split_rows(rows, recipe.random_seed, recipe.train_percentage, recipe.data_limit)
    used = sorted(train_rows + val_rows, key=lambda r: r.line)
    labels = sorted({r.label for r in used})
    fetch_images(store, used, csv_source, settings, policy, progress)
    timings["fetch"] = time.time() - started

    t = time.time()
    features, records, stats = extract_features(store, used, recipe, settings, progress)
    timings["features"] = time.time() - t
    in_train = {r.line for r in train_rows}
    for rec in records:
        rec["split"] = "train" if rec["line"] in in_train else "validation"
    y = np.array([labels.index(r.label) for r in used], dtype=np.int64)
    is_train = np.array([r.line in in_train for r in used])

    t = time.time()
    with _tracking(progress, "epochs", recipe.epochs) as bar:
        head = train_head(
            features[is_train],
            y[is_train],
            len(labels),
            seed=recipe.random_seed,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            l2=recipe.l2,
            on_epoch=lambda: bar.update(1),
        )
    timings["train"] = time.time() - t
    predicted = head.probabilities(features[~is_train]).argmax(axis=1)  # argmax is exact
    val_accuracy = float((predicted == y[~is_train]).mean())
    train_accuracy = float((head.probabilities(features[is_train]).argmax(axis=1) == y[is_train]).mean())

    weights = dump_tensors(head.tensors())
    weights_sha1 = store.put(weights)
    base_weights = store.get(recipe.base_sha1)
    manifest = {
        "format": FORMAT,
        "model_sha1": recipe.sha1,
        "recipe": recipe.to_dict(),
        "labels": labels,
        "inputs": {
            "csv": {"sha1": recipe.csv_sha1, "sha256": sha256_bytes(csv_bytes), "rows": len(rows)},
            "base": {
                "name": recipe.base,
                "weights_sha1": recipe.base_sha1,
                "weights_sha256": sha256_bytes(base_weights),
            },
            "images": records,
        },
        "outputs": {
            "weights": {
                "sha1": weights_sha1,
                "sha256": sha256_bytes(weights),
                "format": "safetensors",
                "tensors": {k: list(v.shape) for k, v in sorted(head.tensors().items())},
            }
        },
        "metrics": {
            "validation_accuracy": round(val_accuracy, 6),
            "train_accuracy": round(train_accuracy, 6),
            "confusion_matrix": confusion_matrix(y[~is_train], predicted, len(labels)),
            "confusion_matrix_axes": "rows: true label, columns: predicted label, in label order",
            "train_images": int(is_train.sum()),
            "validation_images": int((~is_train).sum()),
            "l2": head.l2,
            "l2_cross_validation_accuracy": head.cv_accuracy,
        },
        "numeric_path": numeric_path(),
    }
    manifest_sha1 = save_manifest(store, manifest)
    timings["total"] = time.time() - started
    record_run(store, recipe.sha1, manifest_sha1, csv_source, timings, stats, environment())
    return {
        "manifest_sha1": manifest_sha1,
        "weights_sha1": weights_sha1,
        "labels": labels,
        "validation_accuracy": manifest["metrics"]["validation_accuracy"],
        "cache": stats,
    }


def record_run(
    store: ObjectStore,
    model_sha1: str,
    manifest_sha1: str,
    csv_source: str | None,
    timings: dict[str, float],
    stats: dict[str, int],
    environment: dict[str, Any],
) -> str:
    """Store what is true of this run but not of the model: when, where, how long, on what."""
    run = {
        "model_sha1": model_sha1,
        "manifest_sha1": manifest_sha1,
        "csv_source": csv_source,
        "finished_at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "cache": stats,
        "environment": environment,
    }
    sha1 = store.put(json.dumps(run, sort_keys=True).encode())
    store.set_ref(f"models/{model_sha1}/runs/{int(run['finished_at'] * 1000)}-{sha1[:8]}", sha1.encode())
    return sha1
