"""The converged head on integer features: it finds the true minimiser, in bits that are golden,
and a fit's bits do not depend on the fits that shared its products."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from model.errors import HeadInputError
from model.head import exact, logistic, metrics
from model.head.linear import IntegerFeatures, LinearMap, standardisation
from model.head.products import Integers
from model.head.shards import (
    InMemory,
    InStore,
    LocalShards,
    Shard,
    StateLog,
    answer,
    shard_pairs,
    store_shards,
)
from store.errors import HashMismatch

BOUND = 510  # two views of an int8 base


def _problem(n: int = 60, dim: int = 40, k: int = 3, seed: int = 5) -> tuple[IntegerFeatures, np.ndarray]:
    """Integer features like an int8 base's view sums: label centres plus noise, within BOUND."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    y = np.arange(n) % k
    x = np.clip(np.rint((centres[y] * 0.8 + rng.standard_normal((n, dim))) * 60), -BOUND, BOUND)
    factor = np.full(dim, 0.05 / 2)  # a base scale of 0.05, two views
    return IntegerFeatures(Integers.of(x.astype(np.int16), BOUND), factor), y


def _linear(features: IntegerFeatures, counts: np.ndarray | None = None) -> LinearMap:
    mean, scale = standardisation(features, counts)
    return LinearMap.of(features.factor, mean, np.full(features.units.dim, scale))


def _standardised(features: IntegerFeatures, linear: LinearMap) -> np.ndarray:
    return features.units.values * linear.gain - linear.offset


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


@pytest.mark.parametrize(("n", "dim"), [(60, 40), (30, 80)])  # more photos than features, then fewer
def test_fit_reaches_the_minimiser(n: int, dim: int) -> None:
    features, y = _problem(n, dim)
    linear = _linear(features)
    fit = logistic.fit(features.units, y, 3, linear, 0.1)
    w, b, loss = _reference(_standardised(features, linear), y, 3, 0.1)
    assert fit.converged and 5 < fit.iterations < logistic.MAX_ITERATIONS
    ours, theirs = loss(np.concatenate([fit.kernel.ravel(), fit.bias])), loss(np.concatenate([w.ravel(), b]))
    assert ours <= theirs + 1e-11  # as low as SciPy's own minimum
    assert np.abs(fit.kernel - w).max() < 1e-5 and np.abs(fit.bias - b).max() < 1e-4


def test_fits_are_golden() -> None:
    # Literals: any change to the solver's arithmetic must be a deliberate CODE_VERSION change.
    features, y = _problem(60, 40)
    tall = logistic.fit(features.units, y, 3, _linear(features), 0.1)
    features2, y2 = _problem(30, 80)
    wide = logistic.fit(features2.units, y2, 3, _linear(features2), 0.1)
    assert (tall.iterations, wide.iterations) == ITERATIONS
    assert _sha1(tall.kernel, tall.bias) == TALL_SHA1
    assert _sha1(wide.kernel, wide.bias) == WIDE_SHA1


ITERATIONS = (17, 19)
TALL_SHA1 = "6555cd2684876704edae6deada91fc50f79414c3"
WIDE_SHA1 = "99189ca7eaaa9e36004cb9513f36e454a5868615"


def _run(
    features: IntegerFeatures,
    y: np.ndarray,
    linear: LinearMap,
    weights: np.ndarray,
    l2: float,
    pairs: int | None = None,
    starts: dict | None = None,
) -> dict[int, logistic.Fit]:
    """Every column of ``weights`` as one fit, all in lockstep, on shards of ``pairs`` rows."""
    runner, problem, totals = logistic._plan(InMemory(features.units, pairs), y, 3, linear, weights)
    starts = starts or {}
    solvers = {f: logistic.solver(features.units.dim, 3, l2, starts.get(f)) for f in range(weights.shape[1])}
    return logistic.run_together(runner, problem, totals, solvers)


def test_a_fit_in_lockstep_is_the_fit_alone() -> None:
    """Fits that share their products (one GEMM for all) give each the bits it gets alone."""
    features, y = _problem(90, 40)
    linear = _linear(features)
    weights = np.random.default_rng(2).integers(0, 3, (len(y), 4))
    together = _run(features, y, linear, weights, 0.05)
    assert len({together[f].iterations for f in range(4)}) > 1  # they really ended at different rounds
    for f in range(4):
        alone = _run(features, y, linear, weights[:, f : f + 1], 0.05)[0]
        assert np.array_equal(alone.theta, together[f].theta) and np.array_equal(
            alone.logits, together[f].logits
        )


class _Shuffled:
    """Shards answered in a scrambled order, as workers would."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def answer(self, problem: Any, request: Any) -> list:
        answers = self.runner.answer(problem, request)
        return answers[1::2] + answers[::2]


@pytest.mark.parametrize("pairs", [4096, 8192, 5000])  # 5000 is rounded up to 8192
def test_any_shard_size_and_answer_order_gives_the_same_bits(pairs: int) -> None:
    features, y = _problem(20_000, 24)
    linear = _linear(features)
    weights = np.stack([np.arange(len(y)) % 5 != 0, np.ones(len(y), bool)], axis=1).astype(np.int64) * 2
    whole = _run(features, y, linear, weights, 0.01)
    runner, problem, totals = logistic._plan(InMemory(features.units, pairs), y, 3, linear, weights)
    assert len(runner.shards) == -(-20_000 // shard_pairs(pairs)) > 1
    solvers = {f: logistic.solver(24, 3, 0.01) for f in range(2)}
    sharded = logistic.run_together(_Shuffled(runner), problem, totals, solvers)
    for f in range(2):
        assert np.array_equal(whole[f].theta, sharded[f].theta) and np.array_equal(
            whole[f].logits, sharded[f].logits
        )
    assert _sha1(whole[0].theta, whole[1].theta) == SHARDED_SHA1


class _Forgetful:
    """Shards that lose their fits' state at some rounds, as a dead worker's would, and are
    rebuilt from the rounds logged so far, as a replacement worker's are."""

    def __init__(self, runner: LocalShards, losses: dict[int, list[int]]) -> None:
        self.runner, self.losses, self.log, self.rounds = runner, losses, StateLog(), 0

    def answer(self, problem: Any, request: Any) -> list:
        self.rounds += 1
        for i in self.losses.get(self.rounds, []):
            old = self.runner.shards[i]
            fresh = self.runner.shards[i] = Shard(old.start, old.units, old.y, old.weights)
            for done in self.log.replay():
                assert answer(fresh, problem, done).gradient is None  # a replay computes no sums
        answers = self.runner.answer(problem, request)
        self.log.record(request)
        return answers


def test_a_shard_rebuilt_from_the_log_gives_the_same_bits() -> None:
    """Shards whose state is thrown away mid-fit (three of five, at two rounds, one of them
    while the line search is at its first steps) and rebuilt by replaying the log go on to the
    same bits: the golden of the undisturbed fits."""
    features, y = _problem(20_000, 24)
    linear = _linear(features)
    weights = np.stack([np.arange(len(y)) % 5 != 0, np.ones(len(y), bool)], axis=1).astype(np.int64) * 2
    runner, problem, totals = logistic._plan(InMemory(features.units, 4096), y, 3, linear, weights)
    forgetful = _Forgetful(runner, {2: [1], 9: [2], 31: [0, 4]})
    solvers = {f: logistic.solver(24, 3, 0.01) for f in range(2)}
    fits = logistic.run_together(forgetful, problem, totals, solvers)
    assert forgetful.rounds > 31 and not forgetful.log.events  # every loss happened; fits finished
    assert _sha1(fits[0].theta, fits[1].theta) == SHARDED_SHA1


def test_shards_read_from_a_store_give_the_same_bits(tmp_path: Path) -> None:
    from store import LocalStore

    features, y = _problem(10_000, 24)
    linear = _linear(features)
    counts = (np.arange(len(y)) % 3) + 1
    units = features.units.values.astype(np.int16)
    store = LocalStore(tmp_path)
    shards = store_shards(store, ((units[a : a + 4096], y[a : a + 4096]) for a in range(0, len(y), 4096)))
    assert len(shards) == 3
    stored = logistic.cross_validate(InStore(store, shards, BOUND), y, 3, linear, seed=2, counts=counts)
    local = logistic.cross_validate(features.units, y, 3, linear, seed=2, counts=counts)
    assert np.array_equal(stored.final.theta, local.final.theta)
    assert np.array_equal(stored.out_of_fold_logits, local.out_of_fold_logits)
    # A shard whose bytes changed is refused by the store's hash check, not trained on.
    sha1 = shards[1][1]
    path = tmp_path / "objects" / sha1[:2] / sha1[2:]
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(HashMismatch):
        logistic.fit(InStore(store, shards, BOUND), y, 3, linear, 0.1)


SHARDED_SHA1 = "4de1017c995cac6698bbb052fc5d5fb4b882f861"


def test_a_shard_size_that_is_not_positive_is_refused() -> None:
    assert shard_pairs(1) == shard_pairs(4096) == 4096 and shard_pairs(4097) == 8192
    with pytest.raises(HeadInputError, match="positive number of pairs, not 0"):
        shard_pairs(0)


def test_cross_validation_keeps_out_of_fold_logits() -> None:
    features, y = _problem(60, 80)
    linear = _linear(features)
    cv = logistic.cross_validate(features.units, y, 3, linear, seed=1)
    assert cv.folds == 5 and cv.l2 in logistic.L2_GRID
    assert set(cv.accuracy) == {f"{v:g}" for v in logistic.L2_GRID}
    # Each photo's logits come from the fold that left it out: refit that fold alone, down the grid.
    fold = logistic.stratified_folds(y, 5, 1)
    held = fold == 2
    weights = np.where(held, 0, 1)[:, None]
    start = None
    for l2 in logistic.L2_GRID[: logistic.L2_GRID.index(cv.l2) + 1]:
        f = _run(features, y, linear, weights, l2, starts={0: start})[0]
        start = f.theta
    assert np.array_equal(cv.out_of_fold_logits[held], f.logits[held])
    # ... and they are that fold model's logits on those photos, up to the update's rounding.
    from model.head.linear import linear_logits

    direct = linear_logits(features.units.rows(np.flatnonzero(held)), linear, f.kernel, f.bias)
    assert np.allclose(direct, f.logits[held], rtol=1e-9, atol=1e-9)
    assert cv.accuracy[f"{cv.l2:g}"] == (cv.out_of_fold_logits.argmax(axis=1) == y).mean()
    # The final fit is the fit on every row at the chosen strength.
    assert cv.final.converged and np.allclose(
        cv.final.kernel, logistic.fit(features.units, y, 3, linear, cv.l2).kernel, rtol=1e-4, atol=1e-6
    )


def test_features_that_are_not_integers_are_refused() -> None:
    with pytest.raises(HeadInputError, match="not integers"):
        Integers.of(np.full((2, 3), 0.5), BOUND)


def test_fewer_folds_when_a_label_is_rare() -> None:
    features, y = _problem(60, 80)
    y = y.copy()
    y[y == 2] = 0
    y[:3] = 2  # three photos of label 2
    assert logistic.cross_validate(features.units, y, 3, _linear(features), seed=1).folds == 3


def test_temperature_undoes_a_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4000, 3)) * 2
    p = exact.softmax(logits)
    y = np.array([rng.choice(3, p=row) for row in p])  # labels drawn from the calibrated probabilities
    assert abs(logistic.fit_temperature(logits * 3.0, y) - 3.0) < 0.15
    assert abs(logistic.fit_temperature(logits, y) - 1.0) < 0.05


def test_log_is_faithful_and_golden() -> None:
    # Inputs built exactly (integers and powers of two), never by np.exp, whose last bit differs
    # between numpy's SIMD paths: the golden hash is of exact.log alone.
    rng = np.random.default_rng(1)
    mantissas = (2**52 + rng.integers(0, 2**52, 20000)).astype(np.float64)  # exact: below 2**53
    exponents = rng.integers(-1010, 1010, 20000)
    v = np.concatenate([np.ldexp(mantissas, exponents - 52), [1.0, 2.0, 0.5, 5e-324, 1.7e308]])
    got = exact.log(v)
    assert got[-5] == 0.0
    assert np.all(np.abs(got - np.log(v)) <= 2 * np.spacing(np.abs(np.log(v)) + 1e-300) + 1e-300)
    assert _sha1(got) == LOG_SHA1


LOG_SHA1 = "6eaf4534e89a5ad3942a7554a8751142b5a50a3d"  # also under qemu -cpu SandyBridge


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


@pytest.mark.parametrize("n", [60, 20])  # more photos than features, and fewer
def test_a_row_counted_k_times_is_the_row_listed_k_times(n: int) -> None:
    """Training on distinct rows with counts minimises the loss of the rows repeated: the same
    head, and a head that differs from the unweighted one (the counts are not ignored)."""
    from model.head.train import train_logistic

    x, y = _problem(n=n, dim=40)
    counts = (np.arange(len(y)) % 4) + 1  # 1, 2, 3, 4, 1, ...
    repeated = np.repeat(np.arange(len(y)), counts)
    kw = {"seed": 3, "l2": 0.01, "calibrate": False}
    weighted = train_logistic(x, y, 3, counts=counts, **kw).head
    listed = train_logistic(x.rows(repeated), y[repeated], 3, **kw).head
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
