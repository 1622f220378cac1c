"""Train the classification head on cached features, with bit-reproducible arithmetic.

Two heads share one form, softmax regression on standardised features (and,
for the logistic head, a temperature). ``train_logistic`` minimises the convex
loss to convergence (``model.head.logistic``). ``train_head``, the Adam head: W, b start at zero
(a convex problem needs no random init), mini-batches come from a seeded
permutation per epoch, and Adam updates the weights. Every operation is a
float64 IEEE operation from ``model.head.exact`` (correctly rounded + - * / sqrt,
fixed-order tree sums, an exp built from those), so the weights' bytes are a
function of the features and the recipe alone, on any CPU. When the recipe asks
for it (l2 < 0) the L2 strength is chosen by k-fold cross-validation on the
training split only, so validation accuracy stays an honest estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model.head import exact, logistic

ADAM_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
ADAM_CV_FOLDS = 3
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-7
#: Names the arithmetic in manifests; change it (and CODE_VERSION) when the bits change.
HEAD_ARITHMETIC = "float64-ieee-tree-sum-v1"


@dataclass
class Head:
    kernel: np.ndarray  # (dim, labels) float64
    bias: np.ndarray  # (labels,) float64
    mean: np.ndarray  # (dim,) float64, feature standardisation
    scale: np.ndarray  # (dim,) float64
    l2: float
    cv_accuracy: dict[str, float] = field(default_factory=dict)
    #: Logits are divided by it before the softmax; None for the Adam head (which has none).
    temperature: float | None = None

    def tensors(self) -> dict[str, np.ndarray]:
        out = {
            "kernel": self.kernel,
            "bias": self.bias,
            "feature_mean": self.mean,
            "feature_scale": self.scale,
        }
        if self.temperature is not None:
            out["temperature"] = np.array([self.temperature], np.float64)
        return out

    @staticmethod
    def from_tensors(t: dict[str, np.ndarray], l2: float = 0.0) -> Head:
        f64 = {k: np.asarray(v, np.float64) for k, v in t.items()}
        temperature = float(f64["temperature"][0]) if "temperature" in f64 else None
        return Head(
            f64["kernel"], f64["bias"], f64["feature_mean"], f64["feature_scale"], l2, temperature=temperature
        )

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return np.multiply(np.subtract(np.asarray(features, np.float64), self.mean), self.scale)

    def logits(self, standardised: np.ndarray) -> np.ndarray:
        return np.add(exact.matmul(standardised, self.kernel), self.bias)

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities from logits, through the temperature if the head has one."""
        if self.temperature is not None:
            logits = np.divide(logits, self.temperature)
        return exact.softmax(logits)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, dim) features -> (n, labels) float64 probabilities, identical bits on every CPU."""
        return self.calibrated(self.logits(self.standardise(features)))


def standardisation(x: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre each feature, but scale all by one number (row i weighing ``counts[i]`` photos).

    Per-feature scaling would blow up features that barely vary in training, so
    that at test time noise in them dominates the logits; one global scale
    keeps the features' relative sizes and only sets the optimiser's units.
    """
    x64 = np.asarray(x, np.float64)
    counts = logistic.row_counts(len(x64), counts)
    weight = counts.astype(np.float64)
    total = float(counts.sum())
    mean = np.divide(exact.tree_sum(np.multiply(x64, weight[:, None]), axis=0), total)
    centred = np.subtract(x64, mean)
    squares = np.multiply(centred, centred)
    ms = np.divide(
        exact.tree_sum(np.multiply(exact.tree_sum(squares, axis=1), weight), axis=0), total * x64.shape[1]
    )
    rms = math.sqrt(float(ms))  # sqrt is correctly rounded
    return mean, np.full(x64.shape[1], 1.0 / max(rms, 1e-6))


def _fit(
    x: np.ndarray,
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
    n, dim = x.shape
    counts = logistic.row_counts(n, counts)
    weight = counts.astype(np.float64)[:, None]
    onehot = np.eye(n_labels, dtype=np.float64)[y]
    w, b = np.zeros((dim, n_labels)), np.zeros(n_labels)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    b1t = b2t = 1.0  # beta**t by repeated multiplication: pow is not correctly rounded
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(epochs):
        perm = rng.permutation(n)
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            xb = x[idx]
            p = exact.softmax(np.add(exact.matmul(xb, w), b))
            g = np.divide(np.multiply(np.subtract(p, onehot[idx]), weight[idx]), float(counts[idx].sum()))
            gw = np.add(exact.matmul_tn(xb, g), np.multiply(w, 2.0 * l2))
            gb = exact.tree_sum(g, axis=0)
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


def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The items of each stratified fold (the same assignment as the logistic head's)."""
    fold = logistic.stratified_folds(y, k, seed)
    return [np.flatnonzero(fold == i) for i in range(k)]


def train_head(
    x: np.ndarray,
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
    """Fit the head on (x, y), row i standing for ``counts[i]`` photos; l2 by cross-validation when < 0."""
    counts = logistic.row_counts(len(y), counts)
    mean, scale = standardisation(x, counts)
    probe = Head(np.zeros((x.shape[1], n_labels)), np.zeros(n_labels), mean, scale, l2)
    xs = probe.standardise(x)
    cv: dict[str, float] = {}
    if l2 < 0:
        folds = _folds(y, ADAM_CV_FOLDS, seed)
        for candidate in ADAM_L2_GRID:
            correct = 0
            for held in folds:
                fit_idx = np.setdiff1d(np.arange(len(y)), held)
                w, b = _fit(
                    xs[fit_idx],
                    y[fit_idx],
                    n_labels,
                    candidate,
                    seed,
                    epochs,
                    batch_size,
                    learning_rate,
                    counts=counts[fit_idx],
                )
                logits = np.add(exact.matmul(xs[held], w), b)
                correct += int(counts[held][logits.argmax(axis=1) == y[held]].sum())
            cv[f"{candidate:g}"] = correct / int(counts.sum())
        # Highest CV accuracy; ties go to the stronger penalty (simpler model).
        l2 = max(ADAM_L2_GRID, key=lambda c: (cv[f"{c:g}"], c))
    w, b = _fit(xs, y, n_labels, l2, seed, epochs, batch_size, learning_rate, on_epoch, counts)
    return Head(w, b, mean, scale, l2, cv)


@dataclass
class LogisticResult:
    head: Head
    #: Each training photo's logits from the fold model that did not see it (at the chosen l2).
    out_of_fold_logits: np.ndarray
    folds: int
    iterations: int
    converged: bool


def train_logistic(
    x: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    *,
    seed: int,
    l2: float,
    calibrate: bool,
    counts: np.ndarray | None = None,
    tick: logistic.Tick | None = None,
) -> LogisticResult:
    """The converged head: l2 by k-fold CV when ``l2 < 0``, then a temperature from the folds.

    Row i stands for ``counts[i]`` identical photos (a CSV that lists an image many times);
    ``tick`` is called once per solver iteration (a job's cancel check)."""
    counts = logistic.row_counts(len(y), counts)
    mean, scale = standardisation(x, counts)
    xs = np.multiply(np.subtract(np.asarray(x, np.float64), mean), scale)
    grid = logistic.L2_GRID if l2 < 0 else (l2,)
    cv = logistic.cross_validate(xs, y, n_labels, seed, grid=grid, counts=counts, tick=tick)
    fit, _ = logistic.fit(xs, y, n_labels, cv.l2, gram_matrix=cv.gram, counts=counts, tick=tick)
    temperature = logistic.fit_temperature(cv.out_of_fold_logits, y, counts) if calibrate else 1.0
    head = Head(fit.kernel, fit.bias, mean, scale, cv.l2, cv.accuracy if l2 < 0 else {}, temperature)
    return LogisticResult(head, cv.out_of_fold_logits, cv.folds, fit.iterations, fit.converged)
