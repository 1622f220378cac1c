"""Fitting the recipe's head on a training split's rows and measuring it on the held-out split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.head import logistic
from model.head.linear import IntegerFeatures
from model.head.metrics import summary
from model.head.shards import Rows
from model.head.train import train_head, train_logistic_on
from model.identity.recipe import Recipe
from model.training.head_rows import HeadRows
from store import ObjectStore


@dataclass
class FittedHead:
    head: Any  # model.head.linear.Head
    training: dict[str, Any]  # the manifest's training block
    validation: dict[str, Any]  # the manifest's validation metrics
    train_accuracy: float


def _probabilities(store: ObjectStore, head: Any, rows: HeadRows) -> np.ndarray:
    """The head's probabilities for every pair of a split, one shard at a time."""
    parts = [head.probabilities(units) for units in rows.shard_units(store)]
    return np.concatenate(parts) if parts else np.zeros((0, len(head.bias)))


def head_steps(recipe: Recipe) -> int:
    """The head's units of work, for a progress bar: the Adam head's epochs, or the logistic
    head's l2 strengths (cross-validated over its grid, or the one given)."""
    if recipe.head != "logistic":
        return recipe.epochs
    return len(logistic.L2_GRID) if recipe.l2 < 0 else 1


def fit_head(
    recipe: Recipe,
    labels: list[str],
    store: ObjectStore,
    train: HeadRows,
    held: HeadRows,
    place: Callable[[HeadRows], Rows],
    on_step: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> FittedHead:
    """Train the recipe's head on the training pairs and measure it.

    ``place`` says where the logistic head's rows are while it fits (in this process, or held
    by workers), which changes no bit. ``on_step`` counts ``head_steps``; ``tick`` is called
    once per logistic solver round (a cancel check)."""
    pairs = train.examples
    training: dict[str, Any] = {"head": recipe.head}
    if recipe.head == "logistic":
        fitted = train_logistic_on(
            place(train),
            train.moments,
            pairs.y,
            len(labels),
            seed=recipe.random_seed,
            l2=recipe.l2,
            calibrate=recipe.calibrate,
            counts=pairs.counts,
            tick=tick,
            on_step=on_step,
        )
        head = fitted.head
        training.update(
            solver=logistic.SOLVER,
            iterations=fitted.iterations,
            converged=fitted.converged,
            cross_validation_folds=fitted.folds,
            temperature=head.temperature,
        )
    else:  # random mini-batches over every row: the rows are read into this process
        head = train_head(
            IntegerFeatures(train.all_units(store), train.moments.factor),
            pairs.y,
            len(labels),
            seed=recipe.random_seed,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            l2=recipe.l2,
            on_epoch=on_step,
            counts=pairs.counts,
        )
    if held.examples.rows:
        probabilities = _probabilities(store, head, held)
        validation = summary(
            held.examples.per_row(probabilities), held.examples.per_row(held.examples.y), labels
        )
        validation["validation_source"] = "holdout split"
    else:  # every photo trained the head: each is judged by the fold model that did not see it
        # (the recipe allows no holdout only for the logistic head, which has folds)
        assert recipe.head == "logistic"
        probabilities = head.calibrated(fitted.out_of_fold_logits)
        validation = summary(pairs.per_row(probabilities), pairs.per_row(pairs.y), labels)
        validation["validation_source"] = f"{fitted.folds}-fold cross-validation on the training photos"
    right = _probabilities(store, head, train).argmax(axis=1) == pairs.y
    return FittedHead(head, training, validation, int(pairs.counts[right].sum()) / pairs.rows)
