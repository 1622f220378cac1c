"""Label images with a trained model, found by its hash.

A ``Predictor`` keeps a bounded LRU of loaded heads and one feature extractor
per (base, image size), so a worker builds the base network once and never
re-reads a model it already holds. Nothing it caches affects correctness: a
model is always resolved through the store by hash.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.bases.litert import UNIT_BOUND, dequantise
from model.config import Settings
from model.data.images import decode_squares
from model.errors import ImageError
from model.features.cache import FeatureExtractor, average_views, build_extractor, sum_views
from model.head.linear import Head
from model.head.products import Integers
from model.identity.manifest import load_manifest
from model.identity.recipe import Recipe
from model.identity.tensors import load_tensors
from model.identity.views import CROPS, crop_source_size, view_of
from store import ObjectStore


@dataclass(frozen=True)
class LoadedModel:
    model_sha1: str
    recipe: Recipe
    labels: list[str]
    head: Head


class Predictor:
    def __init__(self, store: ObjectStore, settings: Settings, cache_size: int | None = None) -> None:
        self.store, self.settings = store, settings
        self._size = max(1, cache_size or settings.model_cache_size)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._extractors: dict[tuple[str, str, int], FeatureExtractor] = {}
        self._lock = threading.Lock()

    def load(self, model_sha1: str) -> LoadedModel:
        """The model for ``model_sha1`` (ModelNotFound if it has no manifest)."""
        with self._lock:
            if model_sha1 in self._models:
                self._models.move_to_end(model_sha1)
                return self._models[model_sha1]
        manifest = load_manifest(self.store, model_sha1)
        weights = load_tensors(self.store.get(manifest["outputs"]["weights"]["sha1"]))
        model = LoadedModel(
            model_sha1,
            Recipe.from_dict(manifest["recipe"]),
            list(manifest["labels"]),
            Head.from_tensors(weights, manifest["metrics"].get("l2", 0.0)),
        )
        with self._lock:
            self._models[model_sha1] = model
            while len(self._models) > self._size:
                self._models.popitem(last=False)
        return model

    def extractor(self, name: str, int8_sha1: str, size: int) -> FeatureExtractor:
        key = (name, int8_sha1, size)
        with self._lock:
            found = self._extractors.get(key)
        if found is None:
            found = build_extractor(self.store, name, int8_sha1)
            with self._lock:
                found = self._extractors.setdefault(key, found)
        return found

    def predict(
        self,
        model_sha1: str,
        images: Sequence[bytes | Callable[[], bytes]],
        names: list[str] | None = None,
    ) -> list[dict[str, float]]:
        """``{label: probability}`` over all labels, one dict per image.

        An image may be given as a function that reads it: images are then read, checked and
        decoded one at a time, so a request holds one image's bytes at once, not all of them."""
        model = self.load(model_sha1)
        recipe = model.recipe
        names = names or [f"image {i + 1}" for i in range(len(images))]
        views, size = recipe.views, recipe.image_size
        limit = self.settings.max_image_pixels
        crops = any(v in CROPS for v in views)
        flat = any(v not in CROPS for v in views)
        sizes = ((size,) if flat else ()) + ((crop_source_size(size),) if crops else ())
        count = RequestPixels(self.settings.max_request_pixels)
        pixels: list[np.ndarray | None] = []
        larger: list[np.ndarray | None] = []
        for image, name in zip(images, names, strict=True):
            data = image() if callable(image) else image
            squares = decode_squares(data, sizes, limit, name, count)
            del data
            pixels.append(squares[0] if flat else None)
            larger.append(squares[-1] if crops else None)
        batch = np.stack([view_of(v, size, p, q) for p, q in zip(pixels, larger, strict=True) for v in views])
        blocks = []
        for name, sha1 in recipe.bases():
            extractor = self.extractor(name, sha1, size)
            per_view = extractor.units(batch).reshape(len(pixels), len(views), -1).swapaxes(0, 1)
            if model.head.on_units:
                blocks.append(sum_views(per_view))
            else:  # a head on float features (stl-3): the float view means it was trained on
                blocks.append(average_views(dequantise(per_view, extractor.scale)))
        feats = np.concatenate(blocks, axis=1)
        head = model.head
        probs = head.probabilities(Integers.of(feats, UNIT_BOUND * len(views)) if head.on_units else feats)
        return [{label: float(p[i]) for i, label in enumerate(model.labels)} for p in probs]


class RequestPixels:
    """The pixels one request may have decoded in all (MAX_REQUEST_PIXELS): 64 photos of 40 M
    pixels each are 200 s of decoding for one request."""

    def __init__(self, limit: int) -> None:
        self._limit, self._seen = limit, 0

    def __call__(self, pixels: int, name: str) -> None:
        self._seen += pixels
        if self._seen > self._limit:
            raise ImageError(
                f"{name} brings the request to {self._seen:,} pixels, over MAX_REQUEST_PIXELS ({self._limit:,})"
            )


def top_label(probabilities: dict[str, Any]) -> str:
    return max(probabilities, key=lambda k: probabilities[k])
