"""Preprocessed tensors and base-network features, cached in the store.

Both are derived data keyed by what determines them: a tensor by (image sha1,
size, resize method, code version); a feature vector additionally by the base
weights' sha1 and the view (original or mirrored). The key maps, through a ref,
to the object holding the bytes, so a second training with another seed or
head setting skips decoding and the base network entirely.

The base network always runs on batches of exactly ``FEATURE_BATCH`` images
(the last one padded): the kernels TensorFlow picks depend on the batch size,
so a fixed size makes an image's features independent of which other images
shared its batch — and so independent of cache state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from store import ObjectStore
from store.hashing import sha1_bytes

from .bases.registry import build_feature_model
from .images import RESIZE_METHOD
from .recipe import CODE_VERSION, Recipe, canonical_json
from .tensors import dump_tensors, load_tensors

FEATURE_BATCH = 16
VIEWS = ("original", "mirrored")


@dataclass(frozen=True)
class TensorKey:
    image_sha1: str
    size: int

    @property
    def sha1(self) -> str:
        return sha1_bytes(
            canonical_json(
                {"image": self.image_sha1, "size": self.size, "resize": RESIZE_METHOD, "code": CODE_VERSION}
            )
        )

    @property
    def ref(self) -> str:
        return f"cache/tensor/{self.sha1}"


@dataclass(frozen=True)
class FeatureKey:
    image_sha1: str
    size: int
    base_sha1: str
    view: str

    @property
    def sha1(self) -> str:
        return sha1_bytes(
            canonical_json(
                {
                    "tensor": TensorKey(self.image_sha1, self.size).sha1,
                    "base": self.base_sha1,
                    "view": self.view,
                    "batch": FEATURE_BATCH,
                    "code": CODE_VERSION,
                }
            )
        )

    @property
    def ref(self) -> str:
        return f"cache/features/{self.sha1}"


def cached(store: ObjectStore, ref: str) -> str | None:
    """The object sha1 a cache ref points at, if both exist."""
    raw = store.get_ref(ref)
    if raw is None:
        return None
    sha1 = raw.decode()
    return sha1 if store.has(sha1) else None


def store_tensor(store: ObjectStore, key: TensorKey, pixels: np.ndarray) -> str:
    sha1 = store.put(dump_tensors({"image": pixels}))
    store.set_ref(key.ref, sha1.encode())
    return sha1


def load_tensor(store: ObjectStore, sha1: str) -> np.ndarray:
    return load_tensors(store.get(sha1))["image"]


def views_for(flip: bool) -> tuple[str, ...]:
    """The views whose features are averaged: the image, and its mirror when ``flip``."""
    return VIEWS if flip else VIEWS[:1]


def view_of(array: np.ndarray, view: str) -> np.ndarray:
    return array[:, ::-1, :] if view == "mirrored" else array


class FeatureExtractor:
    """Runs a base network in fixed-size batches; one per (base, image size) per process."""

    def __init__(self, keras_model: Any, image_size: int) -> None:
        from .runtime import tensorflow

        tf = tensorflow()
        self.image_size = image_size
        self.dim = int(keras_model.output_shape[-1])
        spec = tf.TensorSpec((FEATURE_BATCH, image_size, image_size, 3), tf.float32)
        any_batch = tf.TensorSpec((None, image_size, image_size, 3), tf.float32)
        self._forward, self._forward_any = (
            tf.function(lambda x: keras_model(x, training=False), input_signature=[s], jit_compile=False)
            for s in (spec, any_batch)
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(n, s, s, 3) uint8 -> (n, dim) float32, computed FEATURE_BATCH at a time."""
        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, FEATURE_BATCH):
            chunk = images[start : start + FEATURE_BATCH].astype(np.float32)
            pad = FEATURE_BATCH - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            out[start : start + FEATURE_BATCH] = self._forward(chunk).numpy()[: FEATURE_BATCH - pad]
        return out

    def single(self, images: np.ndarray) -> np.ndarray:
        """Unpadded forward pass for inference, where latency matters more than batch-invariance."""
        return self._forward_any(images.astype(np.float32)).numpy()


def build_extractor(store: ObjectStore, recipe: Recipe) -> FeatureExtractor:
    """The recipe's base network, loaded from the store, ready to run."""
    model = build_feature_model(store, recipe.base, recipe.base_sha1, recipe.image_size)
    return FeatureExtractor(model, recipe.image_size)


def store_features(store: ObjectStore, key: FeatureKey, vector: np.ndarray) -> str:
    sha1 = store.put(dump_tensors({"features": vector}))
    store.set_ref(key.ref, sha1.encode())
    return sha1


def load_features(store: ObjectStore, sha1: str) -> np.ndarray:
    return load_tensors(store.get(sha1))["features"]
