"""The converged head: it finds the true minimiser, in bits that are golden, in both forms."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from model.head import exact, logistic, metrics


def _problem(n: int = 60, dim: int = 40, k: int = 3, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    y = np.arange(n) % k
    x = centres[y] * 0.8 + rng.standard_normal((n, dim))
    return x, y


def _reference(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, np.ndarray, Any]:
    """The same loss minimised by SciPy in ordinary float arithmetic, to a tight tolerance;
    the minimiser and the loss function (of flat parameters)."""
    n, dim = x.shape
    onehot = np.eye(k)[y]

    def f(p: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = p[: dim * k].reshape(dim, k), p[dim * k :]
        z = x @ w + b
        lse = logsumexp(z, axis=1)
        g = (np.exp(z - lse[:, None]) - onehot) / n
        loss = (lse - (z * onehot).sum(1)).mean() + l2 * (w * w).sum()
        return loss, np.concatenate([(x.T @ g + 2 * l2 * w).ravel(), g.sum(0)])

    r = minimize(
        f,
        np.zeros(dim * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 5000},
    )
    return r.x[: dim * k].reshape(dim, k), r.x[dim * k :], lambda p: f(p)[0]


def _sha1(*arrays: np.ndarray) -> str:
    return hashlib.sha1(b"".join(np.ascontiguousarray(a, np.float64).tobytes() for a in arrays)).hexdigest()


@pytest.mark.parametrize(("n", "dim"), [(60, 40), (30, 80)])  # the primal form, then the dual
def test_fit_reaches_the_minimiser(n: int, dim: int) -> None:
    x, y = _problem(n, dim)
    assert isinstance(logistic.problem_for(x, y, 3, 0.1), logistic._Dual) == (n <= dim)
    fit, _ = logistic.fit(x, y, 3, 0.1)
    w, b, loss = _reference(x, y, 3, 0.1)
    assert fit.converged and 5 < fit.iterations < logistic.MAX_ITERATIONS
    ours, theirs = loss(np.concatenate([fit.kernel.ravel(), fit.bias])), loss(np.concatenate([w.ravel(), b]))
    assert ours <= theirs + 1e-11  # as low as SciPy's own minimum
    assert np.abs(fit.kernel - w).max() < 1e-5 and np.abs(fit.bias - b).max() < 1e-4


def test_primal_and_dual_forms_agree() -> None:
    x, y = _problem(30, 80)
    dual, _ = logistic.fit(x, y, 3, 0.05)
    primal_problem = logistic._Primal(x, y, 3, 0.05)
    theta, _, converged = logistic.minimise(primal_problem)
    w, b = primal_problem.weights(theta)
    assert converged
    assert np.abs(dual.kernel - w).max() < 1e-6 and np.abs(dual.bias - b).max() < 1e-6


def test_fits_are_golden() -> None:
    # Literals: any change to the solver's arithmetic must be a deliberate CODE_VERSION change.
    x, y = _problem(60, 40)
    primal, _ = logistic.fit(x, y, 3, 0.1)
    x2, y2 = _problem(30, 80)
    dual, _ = logistic.fit(x2, y2, 3, 0.1)
    assert (primal.iterations, dual.iterations) == PRIMAL_DUAL_ITERATIONS
    assert _sha1(primal.kernel, primal.bias) == PRIMAL_SHA1
    assert _sha1(dual.kernel, dual.bias) == DUAL_SHA1


PRIMAL_DUAL_ITERATIONS = (23, 30)
PRIMAL_SHA1 = "dcd631e58ab77ea00d6ca38b90fe263cb0b93f7c"
DUAL_SHA1 = "af15648411b8f482be5ffdc1a18159cc6982f4a8"


def test_cross_validation_keeps_out_of_fold_logits() -> None:
    x, y = _problem(60, 80)
    cv = logistic.cross_validate(x, y, 3, seed=1)
    assert cv.folds == 5 and cv.l2 in logistic.L2_GRID
    assert set(cv.accuracy) == {f"{v:g}" for v in logistic.L2_GRID}
    # Each photo's logits come from the fold that left it out: refit one fold and compare.
    fold = logistic.stratified_folds(y, 5, 1)
    train, held = fold != 2, fold == 2
    start = None
    for l2 in logistic.L2_GRID[: logistic.L2_GRID.index(cv.l2) + 1]:
        f, start = logistic.fit(x[train], y[train], 3, l2, start)
    assert np.array_equal(cv.out_of_fold_logits[held], np.add(exact.matmul(x[held], f.kernel), f.bias))
    assert cv.accuracy[f"{cv.l2:g}"] == (cv.out_of_fold_logits.argmax(axis=1) == y).mean()


def test_fewer_folds_when_a_label_is_rare() -> None:
    x, y = _problem(60, 80)
    y = y.copy()
    y[y == 2] = 0
    y[:3] = 2  # three photos of label 2
    assert logistic.cross_validate(x, y, 3, seed=1).folds == 3


def test_temperature_undoes_a_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4000, 3)) * 2
    p = exact.softmax(logits)
    y = np.array([rng.choice(3, p=row) for row in p])  # labels drawn from the calibrated probabilities
    assert abs(logistic.fit_temperature(logits * 3.0, y) - 3.0) < 0.15
    assert abs(logistic.fit_temperature(logits, y) - 1.0) < 0.05


def test_log_is_faithful_and_golden() -> None:
    rng = np.random.default_rng(1)
    v = np.concatenate([np.exp(rng.uniform(-700, 700, 20000)), [1.0, 2.0, 0.5, 5e-324, 1.7e308]])
    got = exact.log(v)
    assert got[-5] == 0.0
    assert np.all(np.abs(got - np.log(v)) <= 2 * np.spacing(np.abs(np.log(v)) + 1e-300) + 1e-300)
    assert _sha1(got) == LOG_SHA1


LOG_SHA1 = "f6afee4109fbaad2858f014f7426b6a5e9074506"


def test_expected_calibration_error_by_hand() -> None:
    # Two photos in the (0.9, 1] bin, one right: |0.5 - 0.95| * 2; one in (0.6, 0.7], right: 0.35.
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65]])
    y = np.array([0, 1, 1])
    assert metrics.expected_calibration_error(p, y) == round((0.9 + 0.35) / 3, 6)


def test_summary_names_precision_recall_and_overconfidence() -> None:
    p = np.array([[0.95, 0.05, 0.0], [0.95, 0.05, 0.0], [0.2, 0.8, 0.0]])
    y = np.array([0, 1, 1])
    s = metrics.summary(p, y, ["a", "b", "c"])
    assert s["per_label"]["a"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert s["per_label"]["b"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert s["per_label"]["c"] == {"precision": None, "recall": None, "support": 0}
    assert s["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert s["overconfident_errors"] == 1 and s["validation_accuracy"] == round(2 / 3, 6)


@pytest.mark.parametrize("n", [60, 20])  # primal (n > dim) and the Gram form (n <= dim)
def test_a_row_counted_k_times_is_the_row_listed_k_times(n: int) -> None:
    """Training on distinct rows with counts minimises the loss of the rows repeated: the same
    head, and a head that differs from the unweighted one (the counts are not ignored)."""
    from model.head.train import train_logistic

    x, y = _problem(n=n, dim=40)
    counts = (np.arange(len(y)) % 4) + 1  # 1, 2, 3, 4, 1, ...
    repeated = np.repeat(np.arange(len(y)), counts)
    kw = {"seed": 3, "l2": 0.01, "calibrate": False}
    weighted = train_logistic(x, y, 3, counts=counts, **kw).head
    listed = train_logistic(x[repeated], y[repeated], 3, **kw).head
    plain = train_logistic(x, y, 3, **kw).head
    assert np.allclose(weighted.mean, listed.mean, rtol=0, atol=1e-12)
    assert np.allclose(weighted.kernel, listed.kernel, rtol=1e-5, atol=1e-7)
    assert np.allclose(weighted.bias, listed.bias, rtol=1e-5, atol=1e-7)
    assert not np.allclose(weighted.kernel, plain.kernel, rtol=1e-3, atol=1e-5)


def test_all_ones_counts_keep_the_unweighted_bits() -> None:
    from model.head.train import train_head, train_logistic

    x, y = _problem()
    ones = np.ones(len(y), np.int64)
    for fit in (
        lambda **c: train_logistic(x, y, 3, seed=1, l2=-1.0, calibrate=True, **c).head,
        lambda **c: train_head(x, y, 3, seed=1, epochs=3, batch_size=16, learning_rate=0.01, l2=-1.0, **c),
    ):
        a, b = fit(), fit(counts=ones)
        assert all(np.array_equal(a.tensors()[k], b.tensors()[k]) for k in a.tensors())
