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
    tf = tensorflow()
    dim = x.shape[1]
    w = tf.Variable(tf.zeros((dim, n_labels)))
    b = tf.Variable(tf.zeros((n_labels,)))
    opt_state = [tf.Variable(tf.zeros_like(v)) for v in (w, w, b, b)]  # m_w, v_w, m_b, v_b
    step = tf.Variable(0.0)
    beta1, beta2, eps = 0.9, 0.999, 1e-7
    xs = tf.constant(x)
    ys = tf.constant(np.eye(n_labels, dtype=np.float32)[y])

    @tf.function(jit_compile=False)
    def train_step(idx: Any) -> None:
        xb, yb = tf.gather(xs, idx), tf.gather(ys, idx)
        with tf.GradientTape() as tape:
            logits = tf.matmul(xb, w) + b
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(yb, logits)) + l2 * tf.reduce_sum(
                w * w
            )
        gw, gb = tape.gradient(loss, [w, b])
        step.assign_add(1.0)
        corr = tf.sqrt(1 - beta2**step) / (1 - beta1**step)
        for var, g, m, v in ((w, gw, opt_state[0], opt_state[1]), (b, gb, opt_state[2], opt_state[3])):
            m.assign(beta1 * m + (1 - beta1) * g)
            v.assign(beta2 * v + (1 - beta2) * g * g)
            var.assign_sub(lr * corr * m / (tf.sqrt(v) + eps))

    rng = np.random.Generator(np.random.PCG64(seed))
    n = len(x)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            train_step(tf.constant(order[start : start + batch], dtype=tf.int32))
        if on_epoch is not None:
            on_epoch()
    return w.numpy(), b.numpy()


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
