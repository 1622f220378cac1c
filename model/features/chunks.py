"""The per-chunk work of a training: fetch a chunk's images, then preprocess them and run the base.

Each function takes a store and a list of distinct images and touches nothing
else, so any process that reaches the store can run it: the local executor in
the job's own thread, or a Ray task on another machine (``model.execution.local``).
Everything it writes is content-addressed and written atomically, so a chunk
that dies half-way leaves only whole objects behind, and running a chunk twice
(a retried task) writes the same bytes again. An image's features never depend
on its chunk-mates (the int8 base runs one image at a time), so chunking does
not change a bit of the result.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.config import Settings
from model.data.fetch import FetchPolicy, fetch_bytes, resolve_source
from model.data.images import decode_image
from model.errors import FetchError
from model.features.cache import (
    FeatureExtractor,
    FeatureKey,
    TensorKey,
    build_extractor,
    cached,
    load_features,
    load_tensor,
    store_features,
    store_tensor,
    sum_views,
)
from model.identity.recipe import Recipe
from model.identity.views import CROPS, tensor_sizes, view_of
from store import ObjectStore
from store.hashing import sha1_bytes

#: A job's beat within a chunk (progress, cancel); it changes nothing computed.
Tick = Callable[[], None]


@dataclass(frozen=True)
class Image:
    """One distinct image of a CSV, named by the first row that lists it."""

    sha1: str
    source: str
    line: int

    @property
    def name(self) -> str:
        return f"CSV line {self.line} ({self.source})"


@dataclass(frozen=True)
class Mismatch:
    """An image whose fetched bytes do not hash to the sha1 its CSV row gives."""

    image: Image
    actual_sha1: str


def fetch_chunk(
    store: ObjectStore,
    images: list[Image],
    csv_source: str | None,
    settings: Settings,
    policy: FetchPolicy,
    tick: Tick | None = None,
) -> list[Mismatch]:
    """Put each image not yet in the store into it, verified; the ones whose bytes were wrong.

    ``tick`` is called as each fetch ends (a job's cancel check: what it raises stops the rest)."""
    missing = [i for i in images if not store.has(i.sha1)]

    def fetch(image: Image) -> Mismatch | None:
        try:
            data = fetch_bytes(resolve_source(image.source, csv_source), policy, store)
        except FetchError as e:  # which row: a 404 among thousands of rows is otherwise a hunt
            raise type(e)(f"CSV line {image.line}: {e}") from None
        actual = sha1_bytes(data)
        if actual != image.sha1:
            return Mismatch(image, actual)
        store.put(data)
        return None

    if not missing:
        return []
    pool = ThreadPoolExecutor(max(1, min(settings.download_pool_size, len(missing))))
    found: list[Mismatch] = []
    try:
        for mismatch in pool.map(fetch, missing):
            if mismatch is not None:
                found.append(mismatch)
            if tick is not None:
                tick()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a cancel starts no further fetch
    return found


@dataclass
class ChunkFeatures:
    """What a features chunk gives back: per image its cache records and its view-summed units."""

    records: list[dict[str, Any]]  # image_sha1, tensor_sha1[, crop_tensor_sha1], features_sha1
    units: np.ndarray  # (images, dim) int16 view sums, in the chunk's order
    factor: np.ndarray  # (dim,) float64: float feature = factor * units (base scale / views)
    stats: dict[str, int]
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # who ran it


_local = threading.local()


def _extractor(store: ObjectStore, name: str, sha1: str) -> FeatureExtractor:
    """The base network ``sha1``, loaded once per thread (an interpreter is not thread-safe)."""
    cache: dict[str, FeatureExtractor] = _local.__dict__.setdefault("extractors", {})
    if sha1 not in cache:  # the key is the verified content hash, so any store's copy will do
        cache[sha1] = build_extractor(store, name, sha1)
    return cache[sha1]


def features_chunk(
    store: ObjectStore, images: list[Image], recipe: Recipe, settings: Settings, tick: Tick | None = None
) -> ChunkFeatures:
    """Tensors and features for ``images`` (cached ones read back, the rest computed and stored).

    ``tick`` is called after each decode and each base run (a job's cancel check: it may raise)."""
    beat = tick or (lambda: None)
    views = recipe.views
    bases = recipe.bases()
    # One feature per (base, view), in that order; each base's views are averaged, then the bases
    # concatenated.
    slots = [(b, v) for b in range(len(bases)) for v in views]
    stats = {"decoded": 0, "tensor_cache_hits": 0, "base_forward": 0, "feature_cache_hits": 0}
    sizes = tensor_sizes(recipe.image_size, views)

    def tensor(image: Image, size: int) -> tuple[str, np.ndarray]:
        tkey = TensorKey(image.sha1, size)
        tsha1 = cached(store, tkey.ref)
        if tsha1 is not None:
            stats["tensor_cache_hits"] += 1
            return tsha1, load_tensor(store, tsha1)
        stats["decoded"] += 1
        pixels = decode_image(store.get(image.sha1), size, settings.max_image_pixels, image.name)
        beat()
        return store_tensor(store, tkey, pixels), pixels

    keys = [[FeatureKey(i.sha1, recipe.image_size, bases[b][1], v) for b, v in slots] for i in images]
    found = [[cached(store, k.ref) for k in ks] for ks in keys]
    todo: list[tuple[int, int, np.ndarray]] = []  # (image in chunk, slot, pixels)
    tensor_sha1s: list[list[str]] = []
    for i, image in enumerate(images):
        needed = [v for j, (_b, v) in enumerate(slots) if found[i][j] is None]
        stats["feature_cache_hits"] += len(slots) - len(needed)
        pixels: list[np.ndarray | None] = [None] * len(sizes)
        shas: list[str] = []
        for k, size in enumerate(sizes):
            crop_size = k == 1
            # The row table names every tensor: one that gc dropped is made again, so that a
            # model's manifest is the same bytes whatever the cache held.
            known = (
                None
                if any((v in CROPS) == crop_size for v in needed)
                else cached(store, TensorKey(image.sha1, size).ref)
            )
            if known is None:
                known, pixels[k] = tensor(image, size)
            shas.append(known)
        tensor_sha1s.append(shas)
        if not needed:
            continue
        todo.extend(
            (i, j, view_of(v, recipe.image_size, pixels[0], pixels[-1]))
            for j, (_b, v) in enumerate(slots)
            if found[i][j] is None
        )
    for b, (name, sha1) in enumerate(bases):
        mine = [t for t in todo if slots[t[1]][0] == b]
        if not mine:
            continue
        extractor = _extractor(store, name, sha1)
        out = extractor.units(np.stack([p for _, _, p in mine]), beat)
        stats["base_forward"] += len(mine)
        for (i, j, _), units in zip(mine, out, strict=True):
            found[i][j] = store_features(store, keys[i][j], units, extractor.scale)
    records: list[dict[str, Any]] = []
    summed: list[np.ndarray] = []
    factor: list[np.ndarray] = []
    for i, image in enumerate(images):
        per_slot = [load_features(store, s) for s in found[i]]  # type: ignore[arg-type]
        blocks = [per_slot[b * len(views) : (b + 1) * len(views)] for b in range(len(bases))]
        summed.append(np.concatenate([sum_views(np.stack([u for u, _ in block])) for block in blocks]))
        factor = [np.full(len(block[0][0]), np.float64(block[0][1]) / len(views)) for block in blocks]
        records.append(
            {
                "image_sha1": image.sha1,
                "tensor_sha1": tensor_sha1s[i][0],
                **({"crop_tensor_sha1": tensor_sha1s[i][1]} if len(sizes) > 1 else {}),
                "features_sha1": list(found[i]),
            }
        )
    return ChunkFeatures(records, np.stack(summed), np.concatenate(factor), stats)
