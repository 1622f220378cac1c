"""Label images with a trained model, found by its hash.

A ``Predictor`` keeps a bounded LRU of loaded heads and one feature extractor
per (base, image size), so a worker builds the base network once and never
re-reads a model it already holds. Nothing it caches affects correctness: a
model is always resolved through the store by hash.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from store import ObjectStore

from .config import Settings
from .features import FeatureExtractor, average_views, build_extractor, view_of, views_for
from .images import decode_image
from .manifest import load_manifest
from .recipe import Recipe
from .tensors import load_tensors
from .train import Head


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

    def extractor(self, recipe: Recipe) -> FeatureExtractor:
        key = (recipe.base, recipe.base_sha1, recipe.image_size)
        with self._lock:
            found = self._extractors.get(key)
        if found is None:
            found = build_extractor(self.store, recipe)
            with self._lock:
                found = self._extractors.setdefault(key, found)
        return found

    def predict(
        self, model_sha1: str, images: list[bytes], names: list[str] | None = None
    ) -> list[dict[str, float]]:
        """``{label: probability}`` over all labels, one dict per image."""
        model = self.load(model_sha1)
        recipe = model.recipe
        names = names or [f"image {i + 1}" for i in range(len(images))]
        pixels = [
            decode_image(b, recipe.image_size, self.settings.max_image_pixels, n)
            for b, n in zip(images, names, strict=True)
        ]
        views = views_for(recipe.flip)
        batch = np.stack([view_of(p, v) for p in pixels for v in views])
        feats = average_views(
            self.extractor(recipe).features(batch).reshape(len(pixels), len(views), -1).swapaxes(0, 1)
        )
        probs = model.head.probabilities(feats)
        return [{label: float(p[i]) for i, label in enumerate(model.labels)} for p in probs]


def top_label(probabilities: dict[str, Any]) -> str:
    return max(probabilities, key=lambda k: probabilities[k])
