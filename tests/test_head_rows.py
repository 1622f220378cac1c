"""A split's rows written as shard objects while the images' features arrive in image order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.head.linear import Moments
from model.training.head_rows import Examples, ShardWriter
from store import LocalStore


def test_pairs_come_out_in_pair_order_whatever_order_their_images_arrive(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_images, dim = 9000, 6
    units = rng.integers(0, 511, (n_images, dim)).astype(np.int16)
    factor = np.full(dim, 0.01)
    # Pairs in pair order that reach back to early images (an image listed again, with another
    # label, much later) and skip some images (they belong to the other split).
    image_index = np.concatenate([np.arange(0, 8000, 2), [3, 1, 5], np.arange(8000, 9000)])
    examples = Examples(image_index, image_index % 3, (image_index % 4) + 1)
    writer = ShardWriter(LocalStore(tmp_path), examples, pairs=1, bound=510)  # 1 -> one 4,096-row block
    for image in range(n_images):
        writer.add(image, units[image], factor)
        assert (
            len(writer.pending) <= 4
        )  # only images whose pairs are still to come: 1, 3, 5 (and one in hand)
    rows = writer.finish()
    assert [start for start, _ in rows.shards] == [0, 4096]
    store = LocalStore(tmp_path)
    assert np.array_equal(rows.all_units(store).values, units[image_index].astype(np.float64))
    whole = Moments.of(units[image_index], factor, examples.counts)
    assert np.array_equal(rows.moments.sums, whole.sums) and np.array_equal(
        rows.moments.squares, whole.squares
    )
    assert (
        rows.moments.total == whole.total and rows.moments.standardisation()[1] == whole.standardisation()[1]
    )
