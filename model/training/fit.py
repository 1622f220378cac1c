"""Fitting the recipe's head on the features and measuring it: pure, so any process (a Ray task) may run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.data.csvfile import Row
from model.head import logistic
from model.head.linear import IntegerFeatures
from model.head.products import Integers
from model.head.shards import Rows
from model.identity.recipe import Recipe


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
class FittedHead:
    head: Any  # model.head.linear.Head
    training: dict[str, Any]  # the manifest's training block
    validation: dict[str, Any]  # the manifest's validation metrics
    train_accuracy: float


def fit_head(
    recipe: Recipe,
    labels: list[str],
    features: IntegerFeatures,
    train: Examples,
    held: Examples,
    on_epoch: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
    rows: Callable[[Integers, np.ndarray], Rows] | None = None,
) -> FittedHead:
    """Train the recipe's head on the training pairs and measure it: pure, so any process may run it.

    ``features`` has one row per distinct image; the pairs index into it. ``on_epoch`` counts the
    Adam head's epochs; ``tick`` is called once per logistic solver round (a cancel check);
    ``rows`` says where the logistic head's training rows are kept while it fits (default: in
    this process, one shard), which changes no bit.
    """
    from model.head.metrics import summary
    from model.head.train import train_head, train_logistic

    x_train = features.rows(train.image_index)
    training: dict[str, Any] = {"head": recipe.head}
    if recipe.head == "logistic":
        fitted = train_logistic(
            x_train,
            train.y,
            len(labels),
            seed=recipe.random_seed,
            l2=recipe.l2,
            calibrate=recipe.calibrate,
            counts=train.counts,
            tick=tick,
            rows=rows,
        )
        head = fitted.head
        training.update(
            solver=logistic.SOLVER,
            iterations=fitted.iterations,
            converged=fitted.converged,
            cross_validation_folds=fitted.folds,
            temperature=head.temperature,
        )
    else:
        head = train_head(
            x_train,
            train.y,
            len(labels),
            seed=recipe.random_seed,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            l2=recipe.l2,
            on_epoch=on_epoch,
            counts=train.counts,
        )
    if held.rows:
        probabilities = head.probabilities(features.units.rows(held.image_index))
        validation = summary(held.per_row(probabilities), held.per_row(held.y), labels)
        validation["validation_source"] = "holdout split"
    else:  # every photo trained the head: each is judged by the fold model that did not see it
        # (the recipe allows no holdout only for the logistic head, which has folds)
        assert recipe.head == "logistic"
        probabilities = head.calibrated(fitted.out_of_fold_logits)
        validation = summary(train.per_row(probabilities), train.per_row(train.y), labels)
        validation["validation_source"] = f"{fitted.folds}-fold cross-validation on the training photos"
    right = head.probabilities(x_train.units).argmax(axis=1) == train.y
    return FittedHead(head, training, validation, int(train.counts[right].sum()) / train.rows)
