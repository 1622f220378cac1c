"""A seeded, stable per-label train/validation split.

Each image's place is decided by hashing (seed, image sha1), so the split does
not depend on row order or on the other images, and a given seed always puts
the same image on the same side.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from model.data.csvfile import Row
from model.errors import CsvError


def _rank(seed: int, row: Row) -> str:
    return hashlib.sha1(f"{seed}:{row.sha1}:{row.line}".encode()).hexdigest()


def split_rows(
    rows: list[Row], seed: int, train_percentage: int, data_limit: int
) -> tuple[list[Row], list[Row]]:
    """Return (train, validation); below 100%, every label gets at least one image on each side.

    ``data_limit``: at most that many images per label; 0 no limit; -1 every
    label down to the smallest label's count (the 2019 ``DATA_LIMIT=0``).
    """
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    if data_limit < 0:
        data_limit = min(len(v) for v in by_label.values())
    train: list[Row] = []
    val: list[Row] = []
    for label in sorted(by_label):
        ranked = sorted(by_label[label], key=lambda r: _rank(seed, r))
        if data_limit:
            ranked = ranked[:data_limit]
        if len(ranked) < 2:
            raise CsvError(f"label {label!r} has {len(ranked)} image(s); at least 2 are needed to split")
        # Rows of one photo are one example to the head (weighted), and its folds need two.
        distinct = len({r.sha1 for r in ranked})
        if distinct < 2:
            raise CsvError(
                f"label {label!r} has {len(ranked)} rows but {distinct} distinct photo: "
                f"a classifier needs at least 2 different photos per label"
            )
        if train_percentage == 100:  # validation comes from the head's cross-validation folds
            train.extend(ranked)
            continue
        n_train = min(max(round(len(ranked) * train_percentage / 100), 1), len(ranked) - 1)
        train.extend(ranked[:n_train])
        val.extend(ranked[n_train:])
    return train, val
