"""Train the classification head on the base's integer features, with bit-reproducible arithmetic.

Two heads share one form, softmax regression on standardised features
(``model.head.linear``; the logistic head adds a temperature).
``train_logistic`` minimises the convex loss to convergence
(``model.head.logistic``). ``train_head``, the Adam head: W, b start at zero (a
convex problem needs no random init), mini-batches come from a seeded
permutation per epoch, and Adam updates the weights. Products over rows are
exact (``model.head.products``); everything else is a correctly rounded float64
operation or a fixed-order sum (``model.head.exact``), so the weights' bytes are
a function of the features and the recipe alone, on any CPU and any BLAS. When
the recipe asks for it (l2 < 0) the L2 strength is chosen by k-fold
cross-validation on the training split only, so validation accuracy stays an
honest estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.head import exact, logistic, products
from model.head.linear import (
    Head,
    IntegerFeatures,
    LinearMap,
    Moments,
    linear_gradient,
    linear_logits,
    row_counts,
)
from model.head.shards import InMemory, Rows

ADAM_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
ADAM_CV_FOLDS = 3
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-7
#: Names the arithmetic in manifests; change it (and CODE_VERSION) when the bits change.
HEAD_ARITHMETIC = "integer-features-exact-products-float64-ieee-v2"


def _fit(
    features: IntegerFeatures,
    linear: LinearMap,
    y: np.ndarray,
    n_labels: int,
    l2: float,
    seed: int,
    epochs: int,
    batch: int,
    lr: float,
    on_epoch: Callable[[], None] | None = None,
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mini-batch Adam from zeros on loss = mean cross-entropy + l2 * |W|^2.

    Batches deal rows; row i's terms weigh ``counts[i]`` (the photos it stands for)."""
    n, dim = len(y), features.units.dim
    counts = row_counts(n, counts)
    onehot = np.eye(n_labels, dtype=np.float64)[y]
    w, b = np.zeros((dim, n_labels)), np.zeros(n_labels)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    b1t = b2t = 1.0  # beta**t by repeated multiplication: pow is not correctly rounded
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(epochs):
        perm = rng.permutation(n)
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            units = features.units.rows(idx)
            p = exact.softmax(linear_logits(units, linear, w, b))
            weight = counts[idx]
            total = int(weight.sum())
            partial = products.transposed_times(units, np.subtract(p, onehot[idx]), weight, total)
            gw, gb = linear_gradient(partial, linear)
            gw = np.add(np.divide(gw, float(total)), np.multiply(w, 2.0 * l2))
            gb = np.divide(gb, float(total))
            b1t *= ADAM_BETA1
            b2t *= ADAM_BETA2
            corr = lr * math.sqrt(1.0 - b2t) / (1.0 - b1t)
            mw = np.add(np.multiply(mw, ADAM_BETA1), np.multiply(gw, 1.0 - ADAM_BETA1))
            vw = np.add(np.multiply(vw, ADAM_BETA2), np.multiply(np.multiply(gw, gw), 1.0 - ADAM_BETA2))
            mb = np.add(np.multiply(mb, ADAM_BETA1), np.multiply(gb, 1.0 - ADAM_BETA1))
            vb = np.add(np.multiply(vb, ADAM_BETA2), np.multiply(np.multiply(gb, gb), 1.0 - ADAM_BETA2))
            w = np.subtract(w, np.divide(np.multiply(mw, corr), np.add(np.sqrt(vw), ADAM_EPS)))
            b = np.subtract(b, np.divide(np.multiply(mb, corr), np.add(np.sqrt(vb), ADAM_EPS)))
        if on_epoch is not None:
            on_epoch()
    return w, b


def _standardised(features: IntegerFeatures, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, LinearMap]:
    mean, scale = Moments.of(features.units.values, features.factor, counts).standardisation()
    scales = np.full(features.units.dim, scale)
    return mean, scales, LinearMap.of(features.factor, mean, scales)


def train_head(
    features: IntegerFeatures,
    y: np.ndarray,
    n_labels: int,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    l2: float,
    on_epoch: Callable[[], None] | None = None,
    counts: np.ndarray | None = None,
) -> Head:
    """Fit the head on (features, y), row i standing for ``counts[i]`` photos; l2 by CV when < 0."""
    counts = row_counts(len(y), counts)
    mean, scales, linear = _standardised(features, counts)
    cv: dict[str, float] = {}
    if l2 < 0:
        fold = logistic.stratified_folds(y, ADAM_CV_FOLDS, seed)
        for candidate in ADAM_L2_GRID:
            correct = 0
            for i in range(ADAM_CV_FOLDS):
                fit_idx, held = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
                w, b = _fit(
                    features.rows(fit_idx),
                    linear,
                    y[fit_idx],
                    n_labels,
                    candidate,
                    seed,
                    epochs,
                    batch_size,
                    learning_rate,
                    counts=counts[fit_idx],
                )
                logits = linear_logits(features.units.rows(held), linear, w, b)
                correct += int(counts[held][logits.argmax(axis=1) == y[held]].sum())
            cv[f"{candidate:g}"] = correct / int(counts.sum())
        # Highest CV accuracy; ties go to the stronger penalty (simpler model).
        l2 = max(ADAM_L2_GRID, key=lambda c: (cv[f"{c:g}"], c))
    w, b = _fit(features, linear, y, n_labels, l2, seed, epochs, batch_size, learning_rate, on_epoch, counts)
    return Head(w, b, mean, scales, l2, cv, factor=features.factor)


@dataclass
class LogisticResult:
    head: Head
    #: Each training photo's logits from the fold model that did not see it (at the chosen l2).
    out_of_fold_logits: np.ndarray
    folds: int
    iterations: int
    converged: bool


def train_logistic(
    features: IntegerFeatures,
    y: np.ndarray,
    n_labels: int,
    *,
    seed: int,
    l2: float,
    calibrate: bool,
    counts: np.ndarray | None = None,
    tick: logistic.Tick | None = None,
) -> LogisticResult:
    """``train_logistic_on`` features held in this process, in one shard."""
    counts = row_counts(len(y), counts)
    moments = Moments.of(features.units.values, features.factor, counts)
    return train_logistic_on(
        InMemory(features.units),
        moments,
        y,
        n_labels,
        seed=seed,
        l2=l2,
        calibrate=calibrate,
        counts=counts,
        tick=tick,
    )


def train_logistic_on(
    rows: Rows,
    moments: Moments,
    y: np.ndarray,
    n_labels: int,
    *,
    seed: int,
    l2: float,
    calibrate: bool,
    counts: np.ndarray | None = None,
    tick: logistic.Tick | None = None,
    on_step: logistic.Tick | None = None,
) -> LogisticResult:
    """The converged head: l2 by k-fold CV when ``l2 < 0``, then a temperature from the folds.

    ``rows`` are the training rows wherever they are (in shards: which changes no bit) and
    ``moments`` their exact sums (the standardisation). Row i stands for ``counts[i]`` identical
    photos (a CSV that lists an image many times); ``tick`` is called once per round of
    products (a job's cancel check), ``on_step`` once per l2 strength tried."""
    counts = row_counts(len(y), counts)
    mean, scale = moments.standardisation()
    scales = np.full(len(moments.factor), scale)
    linear = LinearMap.of(moments.factor, mean, scales)
    grid = logistic.L2_GRID if l2 < 0 else (l2,)
    cv = logistic.cross_validate(
        rows, y, n_labels, linear, seed, grid=grid, counts=counts, tick=tick, on_step=on_step
    )
    final = cv.final
    temperature = logistic.fit_temperature(cv.out_of_fold_logits, y, counts) if calibrate else 1.0
    accuracy = cv.accuracy if l2 < 0 else {}
    head = Head(final.kernel, final.bias, mean, scales, cv.l2, accuracy, temperature, moments.factor)
    return LogisticResult(head, cv.out_of_fold_logits, cv.folds, final.iterations, final.converged)
