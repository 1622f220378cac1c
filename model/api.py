"""The Python API, for notebooks and scripts: the same jobs, store and pipeline as ``stl``.

    >>> from model import api
    >>> m = api.train("example-data/train.csv", seed=1234)   # blocks; same recipe, same hash
    >>> m.sha1, m.validation_accuracy
    >>> m.predict(["example-data/infer/dots.png"])           # [{label: probability}, ...]
    >>> api.verify(m.sha1)["identical"]                      # rebuilt in a fresh process
    True

Every function takes ``store`` (a path or a store URI such as ``s3://bucket/prefix``;
by default STORE_URI, then DATA_DIR, then ./data) and reads the rest of its settings
from the environment once, as the CLI does. Errors are the pipeline's own types
(``model.errors``), raised with the one-line message the CLI would print.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.context import Context, StoreLike
from model.data.photo_csv import PhotoCsv, looks_like_image, store_photos
from model.data.photo_trees import HEAD_BYTES, open_photo_tree
from model.errors import DataError, PipelineError
from model.execution.choice import executor_for, on_cluster
from model.identity.recipe import Recipe
from model.jobs import state as jobs
from model.jobs.progress import tee
from model.training.pipeline import Progress, prepare_recipe, silent, train_model


def train_job(
    ctx: Context,
    csv: str | None,
    params: dict[str, Any],
    csv_sha1: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
    owner: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[Recipe, dict[str, Any]]:
    """Bind ``params`` to a recipe and run its job here (or wait for whoever runs it); the final status.

    ``csv`` may also be a folder of labelled photos, or a zip of one (``store_photo_source``)."""
    if csv and csv_sha1 is None and (photos := store_photo_source(ctx, csv)) is not None:
        csv, csv_sha1 = None, photos.csv_sha1
    if on_cluster(ctx.settings) and csv and os.path.exists(csv):
        csv = os.path.abspath(csv)  # Ray tasks resolve the rows' paths from another directory
    recipe = prepare_recipe(ctx, params, csv, csv_sha1)
    jobs.record_recipe(ctx.store, recipe, csv)
    bars = progress or silent

    def build(job_progress: Progress) -> dict[str, Any]:
        executor = executor_for(ctx.settings, ctx.store)  # EXECUTOR=ray: this process drives the cluster
        return train_model(ctx, recipe, csv, tee(bars, job_progress), executor)

    status = jobs.wait_or_run(
        ctx.store,
        recipe.sha1,
        owner or f"local-{os.getpid()}",
        ctx.settings.lease_ttl,
        build,
        ctx.settings.retry_backoff,
        force=force,
        on_wait=(lambda: on_wait(recipe.sha1)) if on_wait else None,
    )
    return recipe, status


def store_photo_source(ctx: Context, path: str) -> PhotoCsv | None:
    """A local folder of labelled photos (one subfolder per label), or a zip of one, stored as
    its training CSV; None for anything else (a CSV file, a URL)."""
    settings = ctx.settings
    tree = open_photo_tree(
        path, settings.max_download_bytes, settings.max_unzipped_bytes, settings.max_folder_entries
    )
    if tree is None:
        if _is_one_image(path):
            raise DataError(
                f"{path} is an image: training takes a CSV of <image>,<label>,<sha1> rows, a folder with "
                "one subfolder of images per label, or a zip of such a folder"
            )
        return None
    return store_photos(
        ctx.store,
        tree,
        settings.max_csv_rows,
        settings.min_free_bytes,
        max_entries=settings.max_folder_entries,
    )


def _is_one_image(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return looks_like_image(f.read(HEAD_BYTES))
    except OSError:
        return False  # not a local file: the fetcher says what it is


@dataclass
class Model:
    """A trained model in a store, by its hash. ``manifest`` says everything about how it was made."""

    sha1: str
    ctx: Context = field(repr=False)
    _predictor: Any = field(default=None, repr=False)

    @property
    def manifest(self) -> dict[str, Any]:
        from model.identity.manifest import load_manifest

        return load_manifest(self.ctx.store, self.sha1)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def validation_accuracy(self) -> float:
        return float(self.manifest["metrics"]["validation_accuracy"])

    def predict(self, images: Sequence[str | bytes]) -> list[dict[str, float]]:
        """``{label: probability}`` for each image, given as a path, a URL, ``sha1:<hex>`` or bytes."""
        from model.data.fetch import fetch_bytes
        from model.inference.predictor import Predictor

        if self._predictor is None:
            self._predictor = Predictor(self.ctx.store, self.ctx.settings)
        data = [
            i if isinstance(i, bytes) else fetch_bytes(i, self.ctx.policy, self.ctx.store) for i in images
        ]
        names = [f"image {n + 1}" if isinstance(i, bytes) else i for n, i in enumerate(images)]
        return self._predictor.predict(self.sha1, data, names)

    def label_csv(self, csv: str) -> Iterator[dict[str, Any]]:
        """Label every image a CSV lists (``model.inference.batch``): one result per row, in order, streamed."""
        from model.inference.batch import label_csv
        from model.inference.predictor import Predictor

        if self._predictor is None:
            self._predictor = Predictor(self.ctx.store, self.ctx.settings)
        return iter(
            label_csv(self._predictor, self.sha1, csv, self.ctx.policy, self.ctx.store, self.ctx.settings)
        )

    def export(self, path: str | os.PathLike[str], format: str = "tflite") -> str:
        """Write a self-contained model file (see ``model.lifecycle.export``); its sha1."""
        from model.lifecycle.export import export_model

        return export_model(self.ctx.store, self.sha1, path, format)


def train(
    csv: str,  # a CSV's path or URL, or a folder of labelled photos, or a zip of one
    *,
    store: StoreLike = None,
    csv_sha1: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    **recipe: Any,
) -> Model:
    """Train (or find) the model for ``csv`` and the recipe options; blocks until it is ready.

    ``recipe`` takes the API's ``metadata`` names: ``random_seed``, ``base``, ``views``,
    ``head``, ``l2``, ``calibrate``, ``train_percentage``, ``data_limit``, ``epochs`` … A
    failed job raises its PipelineError subclass's message as ``PipelineError``.
    """
    ctx = Context.open(store)
    recipe_obj, status = train_job(ctx, csv, dict(recipe), csv_sha1, progress, force)
    if status["status"] != "ready":
        raise PipelineError(status.get("message") or f"model {recipe_obj.sha1} is {status['status']}")
    return Model(recipe_obj.sha1, ctx)


def load(sha1: str, *, store: StoreLike = None) -> Model:
    """A trained model by hash (ModelNotFound if the store has no manifest for it)."""
    model = Model(sha1, Context.open(store))
    model.manifest  # noqa: B018 - fail now, not at the first predict
    return model


def verify(sha1: str, *, store: StoreLike = None) -> dict[str, Any]:
    """Rebuild the model from its stored inputs in a fresh process; the report (``identical``: bool)."""
    from model.lifecycle.verify import verify_model

    return verify_model(Context.open(store).store, sha1)


def models(*, store: StoreLike = None) -> list[dict[str, Any]]:
    """Every model the store knows, newest first: sha1, status, labels, accuracy, base, created time."""
    from model.lifecycle.catalog import model_rows

    return model_rows(Context.open(store).store)
