"""One split's rows for the head, written as shard objects while the feature chunks finish.

The chunks give each image's integer features in image order; a ``ShardWriter`` per split turns
them into that split's (image, label) pairs, in pair order, and stores them in shards of
``shard_pairs(HEAD_SHARD_PAIRS)`` rows with the split's exact moments. No process holds every
image's features: the writer keeps only the images whose pairs are still to come, and the head
then reads the shards where the executor keeps them (``Executor.head_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from model.data.csvfile import Row
from model.head.linear import Moments
from model.head.products import Integers
from model.head.shards import SHARD_UNITS, shard_pairs, store_shard
from model.identity.tensors import load_tensors
from store import ObjectStore


@dataclass
class Examples:
    """Distinct (image, label) pairs of one split, each with the number of rows that list it."""

    image_index: np.ndarray  # (pairs,) row of the per-image feature matrix
    y: np.ndarray  # (pairs,) label index
    counts: np.ndarray  # (pairs,) rows

    @staticmethod
    def of(rows: list[Row], image_index: dict[str, int], labels: list[str]) -> Examples:
        """In the order of each pair's first row, so a CSV without repeats keeps its row order."""
        pairs: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row.sha1, row.label)
            pairs[key] = pairs.get(key, 0) + 1
        return Examples(
            np.array([image_index[s] for s, _ in pairs], np.int64),
            np.array([labels.index(lab) for _, lab in pairs], np.int64),
            np.array(list(pairs.values()), np.int64),
        )

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def per_row(self, values: np.ndarray) -> np.ndarray:
        """Per-pair values repeated once per row (metrics count rows, as the CSV lists them)."""
        return np.repeat(values, self.counts, axis=0)


@dataclass
class HeadRows:
    """A split's pairs, their shard objects (first row, sha1) and their exact moments."""

    examples: Examples
    shards: list[tuple[int, str]]
    moments: Moments
    bound: int  # |units| <= bound: 255 per view

    def __len__(self) -> int:
        return len(self.examples.y)

    def shard_units(self, store: ObjectStore) -> Iterator[Integers]:
        """Each shard's features in order, read (verified) one at a time."""
        for _start, sha1 in self.shards:
            yield Integers.of(load_tensors(store.get(sha1))[SHARD_UNITS], self.bound)

    def all_units(self, store: ObjectStore) -> Integers:
        """Every row's features in this process (the Adam head's random batches need them)."""
        parts = [u.values for u in self.shard_units(store)]
        values = np.concatenate(parts) if parts else np.zeros((0, len(self.moments.factor)))
        return Integers(values, self.bound)


class ShardWriter:
    """Takes image features in image order; stores the split's pairs in order, shard by shard."""

    def __init__(
        self,
        store: ObjectStore,
        examples: Examples,
        pairs: int,
        bound: int,
        on_shard: Callable[[str], None] = lambda _sha1: None,
    ) -> None:
        """``on_shard`` is told each shard's sha1 as it is stored (the job's ledger of them)."""
        self.store, self.examples, self.bound, self.on_shard = store, examples, bound, on_shard
        self.size = shard_pairs(pairs)
        self.last_use = {int(image): k for k, image in enumerate(examples.image_index)}
        self.pending: dict[int, np.ndarray] = {}  # image -> features, until its last pair is out
        self.arrived = 0
        self.next_pair = 0
        self.block: list[np.ndarray] = []
        self.shards: list[tuple[int, str]] = []
        self.moments: Moments | None = None
        self.factor: np.ndarray | None = None

    def add(self, image: int, units: np.ndarray, factor: np.ndarray) -> None:
        """The features of image ``image`` (images come in order: 0, 1, 2, ...)."""
        self.factor = factor
        if image in self.last_use:
            self.pending[image] = units
        self.arrived = image + 1
        order, n = self.examples.image_index, len(self.examples.y)
        while self.next_pair < n and order[self.next_pair] < self.arrived:
            wanted = int(order[self.next_pair])
            self.block.append(self.pending[wanted])
            if self.last_use[wanted] == self.next_pair:
                del self.pending[wanted]
            self.next_pair += 1
            if len(self.block) == self.size:
                self._flush()

    def _flush(self) -> None:
        if not self.block:
            return
        end = self.next_pair
        start = end - len(self.block)
        units = np.stack(self.block)
        assert self.factor is not None
        part = Moments.of(units, self.factor, self.examples.counts[start:end])
        self.moments = part if self.moments is None else self.moments + part
        sha1 = store_shard(self.store, units, self.examples.y[start:end])
        self.on_shard(sha1)
        self.shards.append((start, sha1))
        self.block = []

    def finish(self) -> HeadRows:
        """Store the last (shorter) shard; the split's rows. Every pair's image must have come."""
        self._flush()
        if self.next_pair != len(self.examples.y):
            raise AssertionError(f"{len(self.examples.y) - self.next_pair} pairs never got their features")
        assert self.factor is not None, "no image came"
        zeros = np.zeros(len(self.factor), np.int64)
        moments = self.moments or Moments(self.factor, zeros, zeros, 0)
        return HeadRows(self.examples, self.shards, moments, self.bound)
