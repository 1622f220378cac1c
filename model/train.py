"""Train the classification head on cached features, deterministically.

The head is softmax regression on standardised features: W, b start at zero
(a convex problem needs no random init), mini-batches come from a seeded
permutation per epoch, and Adam runs as TensorFlow ops under op determinism
with pinned threads. When the recipe asks for it (l2 < 0) the L2 strength is
chosen by k-fold cross-validation on the training split only, so validation
accuracy stays an honest estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from .runtime import tensorflow

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
CV_FOLDS = 3


@dataclass
class Head:
    kernel: np.ndarray  # (dim, labels) float32
    bias: np.ndarray  # (labels,) float32
    mean: np.ndarray  # (dim,) float32, feature standardisation
    scale: np.ndarray  # (dim,) float32
    l2: float
    cv_accuracy: dict[str, float] = field(default_factory=dict)

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "kernel": self.kernel,
            "bias": self.bias,
            "feature_mean": self.mean,
            "feature_scale": self.scale,
        }

    @staticmethod
    def from_tensors(t: dict[str, np.ndarray], l2: float = 0.0) -> Head:
        return Head(t["kernel"], t["bias"], t["feature_mean"], t["feature_scale"], l2)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) * self.scale) @ self.kernel + self.bias
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre each feature, but scale all by one number.

    Per-feature scaling would blow up features that barely vary in training, so
    that at test time noise in them dominates the logits; one global scale
    keeps the features' relative sizes and only sets the optimiser's units.
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    rms = float(np.sqrt(((x64 - mean) ** 2).mean()))
    scale = np.full(x.shape[1], 1.0 / max(rms, 1e-6))
    return mean.astype(np.float32), scale.astype(np.float32)


@cache
def _epoch_function() -> Any:
    """Compiled epochs of mini-batch Adam on softmax regression, shared by every fit.

    Gradients are written out (softmax regression has a closed form), so the
    graph holds no tape and no variables and can be traced once per process.
    """
    tf = tensorflow()
    beta1, beta2, eps = 0.9, 0.999, 1e-7

    @tf.function(jit_compile=False, reduce_retracing=True)
    def epochs(x, y, perms, batch, lr, l2, state):  # type: ignore[no-untyped-def]
        w, b, mw, vw, mb, vb, t = state
        n = tf.shape(x)[0]
        for e in tf.range(tf.shape(perms)[0]):
            for start in tf.range(0, n, batch):
                idx = perms[e, start : start + batch]
                xb, yb = tf.gather(x, idx), tf.gather(y, idx)
                m = tf.cast(tf.shape(idx)[0], tf.float32)
                g = (tf.nn.softmax(tf.matmul(xb, w) + b) - yb) / m
                gw = tf.matmul(xb, g, transpose_a=True) + 2.0 * l2 * w
                gb = tf.reduce_sum(g, axis=0)
                t = t + 1.0
                corr = lr * tf.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                mw = beta1 * mw + (1.0 - beta1) * gw
                vw = beta2 * vw + (1.0 - beta2) * gw * gw
                mb = beta1 * mb + (1.0 - beta1) * gb
                vb = beta2 * vb + (1.0 - beta2) * gb * gb
                w = w - corr * mw / (tf.sqrt(vw) + eps)
                b = b - corr * mb / (tf.sqrt(vb) + eps)
        return w, b, mw, vw, mb, vb, t

    return epochs


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
) -> tuple[np.ndarray, np.ndarray]:
    """Mini-batch Adam from zeros; loss = mean cross-entropy + l2 * |W|^2."""
    tf = tensorflow()
    run_epochs = _epoch_function()
    zw, zb = np.zeros((x.shape[1], n_labels), np.float32), np.zeros(n_labels, np.float32)
    state = tuple(tf.constant(a) for a in (zw, zb, zw, zw, zb, zb, np.float32(0)))
    xs, ys = tf.constant(x), tf.constant(np.eye(n_labels, dtype=np.float32)[y])
    args = (tf.constant(batch), tf.constant(np.float32(lr)), tf.constant(np.float32(l2)))
    rng = np.random.Generator(np.random.PCG64(seed))
    perms = np.stack([rng.permutation(len(x)) for _ in range(epochs)]).astype(np.int32)
    # One graph call for all epochs, or one per epoch when someone shows progress.
    for chunk in [perms] if on_epoch is None else np.split(perms, epochs):
        state = run_epochs(xs, ys, tf.constant(chunk), *args, state)
        if on_epoch is not None:
            on_epoch()
    return state[0].numpy(), state[1].numpy()


def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified fold assignment: each label's items dealt round-robin after a seeded shuffle."""
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    fold = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = np.arange(len(idx)) % k
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
) -> Head:
    """Fit the head on (x, y); choose l2 by cross-validation when ``l2 < 0``."""
    mean, scale = standardisation(x)
    xs = ((x - mean) * scale).astype(np.float32)
    cv: dict[str, float] = {}
    if l2 < 0:
        folds = _folds(y, CV_FOLDS, seed)
        for candidate in L2_GRID:
            correct = 0
            for held in folds:
                fit_idx = np.setdiff1d(np.arange(len(y)), held)
                w, b = _fit(
                    xs[fit_idx], y[fit_idx], n_labels, candidate, seed, epochs, batch_size, learning_rate
                )
                correct += int(((xs[held] @ w + b).argmax(axis=1) == y[held]).sum())
            cv[f"{candidate:g}"] = correct / len(y)
        # Highest CV accuracy; ties go to the stronger penalty (simpler model).
        l2 = max(L2_GRID, key=lambda c: (cv[f"{c:g}"], c))
    w, b = _fit(xs, y, n_labels, l2, seed, epochs, batch_size, learning_rate, on_epoch)
    return Head(w, b, mean, scale, l2, cv)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> list[list[int]]:
    m = np.zeros((n_labels, n_labels), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m.tolist()
