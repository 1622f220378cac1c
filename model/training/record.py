"""What a training writes besides the weights: the manifest's fields, the row table, the run record.

The manifest says what made the model (inputs by hash, recipe, metrics) and so is part of
its identity; the run record says what is true of one run only (when, where, how long).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from model.data.csvfile import Row
from model.identity.manifest import FORMAT, ROWS_FORMAT
from model.identity.recipe import Recipe
from model.identity.refs import run_ref
from model.training.fit import FittedHead
from model.training.runtime import numeric_path
from store import ObjectStore
from store.hashing import sha256_bytes


def row_table(
    rows: list[Row], in_train: set[int], images: dict[str, dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """One record per used CSV row, in CSV order: where it came from, its split and cache objects."""
    for row in rows:
        yield {
            "line": row.line,
            "source": row.source,
            "label": row.label,
            **images[row.sha1],
            "split": "train" if row.line in in_train else "validation",
        }


def model_manifest(
    recipe: Recipe,
    labels: list[str],
    csv_bytes: bytes,
    csv_rows: int,
    base_weights: bytes,
    extra_weights: bytes | None,
    table: bytes,
    rows_sha1: str,
    used_rows: int,
    images: int,
) -> dict[str, Any]:
    """The manifest's identity and inputs: recipe, labels, and every input by sha1 and sha256."""
    return {
        "format": FORMAT,
        "model_sha1": recipe.sha1,
        "recipe": recipe.to_dict(),
        "labels": labels,
        "inputs": {
            "csv": {"sha1": recipe.csv_sha1, "sha256": sha256_bytes(csv_bytes), "rows": csv_rows},
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
                        "weights_sha256": sha256_bytes(extra_weights or b""),
                    }
                }
                if recipe.extra_base
                else {}
            ),
            "rows": {
                "sha1": rows_sha1,
                "sha256": sha256_bytes(table),
                "format": ROWS_FORMAT,
                "rows": used_rows,
                "images": images,
            },
        },
    }


def weights_and_metrics(
    head: Any, weights: bytes, weights_sha1: str, fitted: FittedHead, train_rows: int, held_rows: int
) -> dict[str, Any]:
    """The manifest's outputs, metrics, training block and numeric path."""
    return {
        "outputs": {
            "weights": {
                "sha1": weights_sha1,
                "sha256": sha256_bytes(weights),
                "format": "safetensors",
                "tensors": {k: list(v.shape) for k, v in sorted(head.tensors().items())},
            }
        },
        "metrics": {
            **fitted.validation,
            "train_accuracy": round(fitted.train_accuracy, 6),
            "train_images": train_rows,
            "validation_images": held_rows,
            "l2": head.l2,
            "l2_cross_validation_accuracy": head.cv_accuracy,
        },
        "training": fitted.training,
        "numeric_path": numeric_path(),
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
    store.set_ref(run_ref(model_sha1, run["finished_at"], sha1), sha1.encode())
    return sha1
