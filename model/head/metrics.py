"""What a model's validation predictions say: accuracy, per-label precision and recall, calibration.

Everything here is a pure function of integer counts and of probabilities
summed by ``exact.tree_sum``, so the manifest that records it has the same
bytes on every CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.head import exact

#: Equal-width confidence bins for the expected calibration error.
ECE_BINS = 10
DIGITS = 6


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> list[list[int]]:
    m = np.zeros((n_labels, n_labels), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m.tolist()


def per_label(confusion: list[list[int]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Precision and recall of each label (None where nothing was predicted or present)."""
    out: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(labels):
        hit = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        present = sum(confusion[i])
        out[label] = {
            "precision": round(hit / predicted, DIGITS) if predicted else None,
            "recall": round(hit / present, DIGITS) if present else None,
            "support": present,
        }
    return out


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width bins of the top probability, weighted by size.

    A model whose "90%" answers are right 90% of the time scores 0.
    """
    if len(y_true) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; the top one also holds 1.0.
    which = np.minimum(np.ceil(np.multiply(confidence, float(bins))).astype(np.int64) - 1, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        gap = float(exact.tree_sum(np.subtract(correct[members], confidence[members])))
        total += abs(gap)  # |sum(correct - confidence)| = size * |accuracy - confidence|
    return round(total / len(y_true), DIGITS)


def summary(probabilities: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The validation block of a manifest for these predictions."""
    predicted = probabilities.argmax(axis=1)  # argmax is exact
    confusion = confusion_matrix(y_true, predicted, len(labels))
    n = len(y_true)
    return {
        "validation_accuracy": round(int((predicted == y_true).sum()) / n, DIGITS) if n else None,
        "confusion_matrix": confusion,
        "confusion_matrix_axes": "rows: true label, columns: predicted label, in label order",
        "per_label": per_label(confusion, labels),
        "expected_calibration_error": expected_calibration_error(probabilities, y_true),
        "overconfident_errors": int(((predicted != y_true) & (probabilities.max(axis=1) > 0.9)).sum()),
    }
