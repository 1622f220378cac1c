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

from . import logistic
from .bases.registry import ensure_base
from .config import Settings
from .csvfile import Row, parse_csv
from .errors import ChecksumMismatch, DataError, InvalidRequest
from .features import (
    CROPS,
    FeatureExtractor,
    FeatureKey,
    TensorKey,
    average_views,
    build_extractor,
    cached,
    crop_source_size,
    load_features,
    load_tensor,
    store_features,
    store_tensor,
    view_of,
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


#: progress(stage, total) -> a tracker, for the stages fetch, features and head (one step per
#: epoch, or one for the logistic head); the CLI passes tqdm bars, jobs ``model.progress``.
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
    extra_sha1 = (
        ensure_base(store, hyper["extra_base"], settings.base_cache or None)[1] if hyper["extra_base"] else ""
    )
    if csv_sha1 is None:
        if not csv_source:
            raise InvalidRequest("the CSV needs a url or a sha1")
        csv_sha1 = store.put(fetch_bytes(csv_source, policy, store))
    elif not is_sha1(csv_sha1):
        raise InvalidRequest(f"csv sha1 must be 40 lowercase hex digits, got {csv_sha1!r}")
    return make_recipe(hyper, csv_sha1, base_sha1, spec.native_size, extra_sha1)


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
        _tracking(progress, "fetch", len(missing)) as bar,
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
    views = recipe.views
    bases = recipe.bases()
    # One feature per (base, view), in that order; each base's views are averaged, then the bases
    # concatenated.
    slots = [(b, v) for b in range(len(bases)) for v in views]
    extractors: dict[int, FeatureExtractor] = {}  # built only when some feature is missing
    features: np.ndarray | None = None
    records: list[dict[str, Any]] = []
    stats = {"decoded": 0, "tensor_cache_hits": 0, "base_forward": 0, "feature_cache_hits": 0}
    sizes = [recipe.image_size]
    if any(v in CROPS for v in views):
        sizes.append(crop_source_size(recipe.image_size))

    def tensor(row: Row, size: int) -> tuple[str, np.ndarray]:
        tkey = TensorKey(row.sha1, size)
        tsha1 = cached(store, tkey.ref)
        if tsha1 is not None:
            stats["tensor_cache_hits"] += 1
            return tsha1, load_tensor(store, tsha1)
        stats["decoded"] += 1
        name = f"CSV line {row.line} ({row.source})"
        pixels = decode_image(store.get(row.sha1), size, settings.max_image_pixels, name)
        return store_tensor(store, tkey, pixels), pixels

    with _tracking(progress, "features", len(rows)) as bar:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            keys = [[FeatureKey(r.sha1, recipe.image_size, bases[b][1], v) for b, v in slots] for r in chunk]
            found = [[cached(store, k.ref) for k in ks] for ks in keys]
            todo: list[tuple[int, int, np.ndarray]] = []  # (row in chunk, view index, pixels)
            tensor_sha1s: list[list[str | None]] = []
            for i, row in enumerate(chunk):
                if all(found[i]):
                    stats["feature_cache_hits"] += len(slots)
                    tensor_sha1s.append([cached(store, TensorKey(row.sha1, s).ref) for s in sizes])
                    continue
                needed = [v for j, (_b, v) in enumerate(slots) if found[i][j] is None]
                pixels: list[np.ndarray | None] = [None] * len(sizes)
                shas: list[str | None] = [None] * len(sizes)
                for k, size in enumerate(sizes):
                    crop_size = k == 1
                    if any((v in CROPS) == crop_size for v in needed):
                        shas[k], pixels[k] = tensor(row, size)
                    else:
                        shas[k] = cached(store, TensorKey(row.sha1, size).ref)
                tensor_sha1s.append(shas)
                todo.extend(
                    (i, j, view_of(v, recipe.image_size, pixels[0], pixels[-1]))
                    for j, (_b, v) in enumerate(slots)
                    if found[i][j] is None
                )
            for b, (name, sha1) in enumerate(bases):
                mine = [t for t in todo if slots[t[1]][0] == b]
                if not mine:
                    continue
                if b not in extractors:
                    extractors[b] = build_extractor(store, name, sha1)
                out = extractors[b].features(np.stack([p for _, _, p in mine]))
                stats["base_forward"] += len(mine)
                for (i, j, _), vector in zip(mine, out, strict=True):
                    found[i][j] = store_features(store, keys[i][j], vector)
            for i, row in enumerate(chunk):
                vectors = [load_features(store, s) for s in found[i]]  # type: ignore[arg-type]
                mean = np.concatenate(
                    [
                        average_views(np.stack(vectors[b * len(views) : (b + 1) * len(views)]))
                        for b in range(len(bases))
                    ]
                )
                if features is None:
                    features = np.empty((len(rows), mean.shape[0]), np.float32)
                features[start + i] = mean
                records.append(
                    {
                        "line": row.line,
                        "source": row.source,
                        "label": row.label,
                        "image_sha1": row.sha1,
                        "tensor_sha1": tensor_sha1s[i][0],
                        **({"crop_tensor_sha1": tensor_sha1s[i][1]} if len(sizes) > 1 else {}),
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
    from .metrics import summary
    from .runtime import environment, numeric_path
    from .train import train_head, train_logistic

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
    training: dict[str, Any] = {"head": recipe.head}
    if recipe.head == "logistic":
        with _tracking(progress, "head", 1) as bar:
            fitted = train_logistic(
                features[is_train],
                y[is_train],
                len(labels),
                seed=recipe.random_seed,
                l2=recipe.l2,
                calibrate=recipe.calibrate,
            )
            bar.update(1)
        head = fitted.head
        training.update(
            solver=logistic.SOLVER,
            iterations=fitted.iterations,
            converged=fitted.converged,
            cross_validation_folds=fitted.folds,
            temperature=head.temperature,
        )
    else:
        with _tracking(progress, "head", recipe.epochs) as bar:
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
    if (~is_train).any():
        validation = summary(head.probabilities(features[~is_train]), y[~is_train], labels)
        validation["validation_source"] = "holdout split"
    else:  # every photo trained the head: each is judged by the fold model that did not see it
        validation = summary(head.calibrated(fitted.out_of_fold_logits), y[is_train], labels)
        validation["validation_source"] = f"{fitted.folds}-fold cross-validation on the training photos"
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
            **(
                {
                    "extra_base": {
                        "name": recipe.extra_base,
                        "weights_sha1": recipe.extra_base_sha1,
                        "weights_sha256": sha256_bytes(store.get(recipe.extra_base_sha1)),
                    }
                }
                if recipe.extra_base
                else {}
            ),
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
            **validation,
            "train_accuracy": round(train_accuracy, 6),
            "train_images": int(is_train.sum()),
            "validation_images": int((~is_train).sum()),
            "l2": head.l2,
            "l2_cross_validation_accuracy": head.cv_accuracy,
        },
        "training": training,
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
