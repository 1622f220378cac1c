"""Preprocessed tensors and base-network features, cached in the store.

Both are derived data keyed by what determines them: a tensor by (image sha1,
size, resize method, code version); a feature vector additionally by the base
model's sha1, the runtime that ran it and the view (original or mirrored).
The key maps, through a ref, to the object holding the bytes, so a second
training with another seed or head setting skips decoding and the base
network entirely.

Features come from the int8 base run one image at a time (``bases.litert``),
so an image's features never depend on which images shared its batch, on the
cache state, or on the CPU. They are kept as the base's integers (``q - zero
point``, int16) with the base's output scale: the head works on the integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.bases.litert import RUNTIME, Int8Base
from model.bases.registry import load_base
from model.data.images import RESIZE_METHOD
from model.identity.canonical import CODE_VERSION, canonical_json
from model.identity.refs import features_cache_ref, tensor_cache_ref
from model.identity.tensors import dump_tensors, load_tensors
from store import ObjectStore
from store.hashing import sha1_bytes


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
        return tensor_cache_ref(self.sha1)


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
                    "runtime": RUNTIME,
                    "code": CODE_VERSION,
                }
            )
        )

    @property
    def ref(self) -> str:
        return features_cache_ref(self.sha1)


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


#: What extracts features: (n, s, s, 3) uint8 pixels -> (n, dim) int16 units (and a scale).
FeatureExtractor = Int8Base


def build_extractor(store: ObjectStore, name: str, int8_sha1: str) -> FeatureExtractor:
    """One of the recipe's base networks, loaded (verified) from the store, ready to run."""
    return load_base(store, name, int8_sha1)


def sum_views(per_view: np.ndarray) -> np.ndarray:
    """Sum over the views axis (0) of (views, ..., dim) integer units: exact, as int16."""
    return np.sum(np.asarray(per_view, np.int32), axis=0).astype(np.int16)


def average_views(per_view: np.ndarray) -> np.ndarray:
    """Mean over the views axis (0) of (views, ..., dim) float32: in order, one division.
    What heads on float features (code version stl-3) were trained and are served on."""
    total = per_view[0].astype(np.float32)
    for view in per_view[1:]:
        total = np.add(total, view)
    return np.divide(total, np.float32(len(per_view)))


def store_features(store: ObjectStore, key: FeatureKey, units: np.ndarray, scale: np.float32) -> str:
    """One view's integer units (int16) and the base's output scale, under the key's ref."""
    tensors = {"units": np.asarray(units, np.int16), "scale": np.array([scale], np.float32)}
    sha1 = store.put(dump_tensors(tensors))
    store.set_ref(key.ref, sha1.encode())
    return sha1


def load_features(store: ObjectStore, sha1: str) -> tuple[np.ndarray, np.float32]:
    """(units, scale) of a features object."""
    tensors = load_tensors(store.get(sha1))
    return tensors["units"], np.float32(tensors["scale"][0])
