"""Softmax regression minimised to convergence, many fits in lockstep, on exact products.

The loss, weighted mean cross-entropy + l2 * |W|^2 (the bias is not
penalised), is convex, so its minimiser depends on the data and l2 alone: the
head a user gets is the best one for the features. It is found by L-BFGS with
a backtracking (Armijo) line search; each fit is written as a plain sequential
solver (``_lbfgs``) that asks for the two things touching every row, logits of
a parameter vector and a gradient at some logits, and ``_run_together``
answers the asks of all fits that are waiting with one GEMM each. Those
products are exact (``model.head.products``), so a fit's bits do not depend on
which fits shared its GEMM, on the BLAS, or on the CPU.

Cross-validation runs every fold's fit and the final fit on all rows together,
on the same rows with different row weights (0 leaves a row out of a fit), for
each l2 of the grid, strongest first, each fit warm-started from its previous
one. The fold fits' logits on the rows they left out are the out-of-fold
logits, kept for the temperature and, with no holdout, for honest metrics.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.head import exact
from model.head.linear import LinearMap, linear_gradient, row_counts
from model.head.products import Integers
from model.head.shards import Answer, InMemory, Problem, Round, Rows, Runner

#: L2 strengths tried by cross-validation, strongest first (each fit starts from the previous one).
L2_GRID = (100.0, 10.0, 1.0, 0.1, 0.01, 1e-3)
CV_FOLDS = 5
HISTORY = 10
MAX_ITERATIONS = 300
#: Converged when the gradient's Euclidean norm (over W and b) is at most this.
GRADIENT_TOLERANCE = 1e-6
ARMIJO = 1e-4
#: Step halvings a line search tries before it gives up (no decrease at float64 precision).
LINE_SEARCH_STEPS = 60
#: Names the arithmetic in manifests; change it (and CODE_VERSION) when the bits change.
SOLVER = "lbfgs-armijo-lockstep-integer-features-exact-products-v2"
#: Called once per round of products; it changes nothing computed (a job's cancel check).
Tick = Callable[[], None]


@dataclass
class Fit:
    kernel: np.ndarray  # (dim, labels)
    bias: np.ndarray  # (labels,)
    iterations: int
    converged: bool
    theta: np.ndarray  # kernel and bias, flat: to warm-start the next fit
    logits: np.ndarray  # (rows, labels) at the final parameters, every row (also those left out)


#: What a solver asks for, and is answered: ("start", theta) -> (cross-entropy, gradient);
#: ("direction", (p, t)) and ("try", t) -> cross-entropy at theta + t p; ("accept", t) -> the
#: gradient there; ("finish", None) -> the logits of every row. Cross-entropy and gradient are
#: of the weighted mean loss without the penalty.
Ask = tuple[str, Any]
Solver = Generator[Ask, Any, Fit]


def _direction(g: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """L-BFGS two-loop recursion: -H g from the last steps (s, y, 1/<y, s>), newest last."""
    q = g.copy()
    alphas = []
    for s, yv, rho in reversed(steps):
        a = rho * exact.dot(s, q)
        alphas.append(a)
        q = np.subtract(q, np.multiply(yv, a))
    if steps:
        s, yv, _ = steps[-1]
        q = np.multiply(q, exact.dot(s, yv) / exact.dot(yv, yv))
    for (s, yv, rho), a in zip(steps, reversed(alphas), strict=True):
        b = rho * exact.dot(yv, q)
        q = np.add(q, np.multiply(s, a - b))
    return np.negative(q)


def solver(dim: int, labels: int, l2: float, start: np.ndarray | None = None) -> Solver:
    """One fit's L-BFGS from ``start`` (zeros by default), as a plain sequential solver that
    yields every question about the rows (see ``Ask``)."""
    cut = dim * labels

    def penalised(ce: float, g: np.ndarray, theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[:cut]
        g = g.copy()
        g[:cut] = np.add(g[:cut], np.multiply(w, 2.0 * l2))
        return ce + l2 * exact.dot(w, w), g

    theta = np.zeros(cut + labels) if start is None else start.copy()
    f, g = penalised(*(yield ("start", theta)), theta)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    iteration, converged = 0, False
    while iteration < MAX_ITERATIONS:
        norm = float(np.sqrt(exact.dot(g, g)))
        if norm <= GRADIENT_TOLERANCE:
            converged = True
            break
        p = _direction(g, steps)
        slope = exact.dot(g, p)
        if slope >= 0:  # not a descent direction (lost curvature): restart from steepest descent
            steps.clear()
            p, slope = np.negative(g), -norm * norm
        # First step: unit length; afterwards L-BFGS's own scaling makes t = 1 the natural try.
        t = 1.0 if steps else 1.0 / max(1.0, norm)
        ce = yield ("direction", (p, t))
        for attempt in range(LINE_SEARCH_STEPS):
            new_theta = np.add(theta, np.multiply(p, t))
            w = new_theta[:cut]
            new_f = ce + l2 * exact.dot(w, w)
            if new_f <= f + ARMIJO * t * slope or attempt == LINE_SEARCH_STEPS - 1:
                break
            t *= 0.5
            ce = yield ("try", t)
        if new_f > f + ARMIJO * t * slope:
            break  # no decrease possible at float64 precision
        new_f, new_g = penalised(ce, (yield ("accept", t)), new_theta)
        s, yv = np.multiply(p, t), np.subtract(new_g, g)
        sy = exact.dot(s, yv)
        if sy > 0:
            steps.append((s, yv, 1.0 / sy))
            del steps[:-HISTORY]
        theta, f, g = new_theta, new_f, new_g
        iteration += 1
    else:
        converged = float(np.sqrt(exact.dot(g, g))) <= GRADIENT_TOLERANCE
    logits = yield ("finish", None)
    return Fit(
        theta[:cut].reshape(dim, labels).copy(), theta[cut:].copy(), iteration, converged, theta, logits
    )


def _reduce(answers: list[Answer], request: Round, problem: Problem, totals: list[int]) -> dict[int, Any]:
    """The replies to each fit's ask, from every shard's answer: exact sums, fixed block order."""
    answers = sorted(answers, key=lambda a: a.start)  # the order shards answered in does not matter
    k = problem.labels
    replies: dict[int, Any] = {}
    gradients: dict[int, np.ndarray] = {}
    with_gradient = [a.gradient for a in answers if a.gradient is not None]
    if with_gradient:
        order = answers[0].order
        gw, gb = linear_gradient(functools.reduce(operator.add, with_gradient), problem.linear)
        for i, f in enumerate(order):
            flat = np.concatenate([gw[:, i * k : (i + 1) * k].ravel(), gb[i * k : (i + 1) * k]])
            gradients[f] = np.divide(flat, float(totals[f]))
    losses = {
        f: float(exact.tree_sum(np.concatenate([a.losses[f] for a in answers]))) / float(totals[f])
        for f in answers[0].losses
    }
    for f in request.starts:
        replies[f] = (losses[f], gradients[f])
    for f in (*request.directions, *request.tries):
        replies[f] = losses[f]
    for f in request.accepts:
        replies[f] = gradients[f]
    for f in request.finish:
        replies[f] = np.concatenate([a.logits[f] for a in answers])
    return replies


def run_together(
    runner: Runner, problem: Problem, totals: list[int], solvers: dict[int, Solver], tick: Tick | None = None
) -> dict[int, Fit]:
    """Drive the solvers (keyed by fit; fit f's rows weigh ``totals[f]`` in all) to the end, each
    round answering every waiting ask with one pass over the shards."""
    asks = {f: next(s) for f, s in solvers.items()}
    done: dict[int, Fit] = {}
    while asks:
        if tick is not None:
            tick()
        request = Round()
        for f, (kind, value) in asks.items():
            if kind == "finish":
                request.finish.append(f)
            else:
                getattr(request, f"{kind}s" if kind != "try" else "tries")[f] = value
        replies = _reduce(runner.answer(problem, request), request, problem, totals)
        for f, reply in replies.items():
            try:
                asks[f] = solvers[f].send(reply)
            except StopIteration as stop:
                done[f] = stop.value
                del asks[f]
    return done


def _plan(
    rows: Integers | Rows, y: np.ndarray, n_labels: int, linear: LinearMap, weights: np.ndarray
) -> tuple[Runner, Problem, list[int]]:
    totals = [int(t) for t in weights.sum(axis=0)]
    problem = Problem(linear, n_labels, max(totals))
    rows = InMemory(rows) if isinstance(rows, Integers) else rows
    return rows.runner(y, weights), problem, totals


def fit(
    rows: Integers | Rows,
    y: np.ndarray,
    n_labels: int,
    linear: LinearMap,
    l2: float,
    counts: np.ndarray | None = None,
    tick: Tick | None = None,
) -> Fit:
    """Minimise the loss on every row (row i weighing ``counts[i]`` photos)."""
    weights = row_counts(len(y), counts)[:, None]
    runner, problem, totals = _plan(rows, y, n_labels, linear, weights)
    try:
        return run_together(runner, problem, totals, {0: solver(problem.dim, n_labels, l2)}, tick)[0]
    finally:
        runner.close()


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each item: each label's items dealt round-robin after a seeded shuffle."""
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    fold = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = np.arange(len(idx)) % k
    return fold


@dataclass
class CrossValidation:
    l2: float
    accuracy: dict[str, float]  # per grid value, "%g" keys
    out_of_fold_logits: np.ndarray  # (n, labels) at the chosen l2: each row from a model that never saw it
    folds: int
    final: Fit  # the fit on every row at the chosen l2


def cross_validate(
    rows: Integers | Rows,
    y: np.ndarray,
    n_labels: int,
    linear: LinearMap,
    seed: int,
    grid: tuple[float, ...] = L2_GRID,
    folds: int = CV_FOLDS,
    counts: np.ndarray | None = None,
    tick: Tick | None = None,
    on_step: Tick | None = None,
) -> CrossValidation:
    """Pick l2 from ``grid`` (strongest first) by k-fold accuracy, ties to the stronger penalty;
    the out-of-fold logits and the fit on every row, both at the chosen strength.

    Row i stands for ``counts[i]`` photos (all ones by default): the folds deal rows, so one
    photo listed twice never sits on both sides of a fold, and accuracy counts photos. ``rows``
    are the features (in one shard) or a ``Rows`` in shards: the bits are the same for any.
    ``on_step`` is called as each strength of the grid is done (a progress bar's steps)."""
    counts = row_counts(len(y), counts)
    # Never more folds than the rarest label has items, so every fold's training part has every label.
    k = int(max(2, min(folds, np.bincount(y, minlength=n_labels).min())))
    fold = stratified_folds(y, k, seed)
    weights = np.stack([np.where(fold != i, counts, 0) for i in range(k)] + [counts], axis=1)  # fit k: all
    runner, problem, totals = _plan(rows, y, n_labels, linear, weights)
    starts: dict[int, np.ndarray | None] = dict.fromkeys(range(k + 1))
    logits: dict[float, np.ndarray] = {}
    finals: dict[float, Fit] = {}
    try:
        for l2 in grid:
            solvers = {f: solver(problem.dim, n_labels, l2, starts[f]) for f in range(k + 1)}
            fits = run_together(runner, problem, totals, solvers, tick)
            starts = {f: fits[f].theta for f in fits}
            held = np.zeros((len(y), n_labels))
            for i in range(k):
                held[fold == i] = fits[i].logits[fold == i]
            logits[l2], finals[l2] = held, fits[k]
            if on_step is not None:
                on_step()
    finally:
        runner.close()
    total = int(counts.sum())
    accuracy = {f"{l2:g}": int(counts[logits[l2].argmax(axis=1) == y].sum()) / total for l2 in grid}
    best = max(grid, key=lambda l2: (accuracy[f"{l2:g}"], l2))
    return CrossValidation(best, accuracy, logits[best], k, finals[best])


def fit_temperature(logits: np.ndarray, y: np.ndarray, counts: np.ndarray | None = None) -> float:
    """The T > 0 minimising the cross-entropy of softmax(logits / T): bisection on the slope in 1/T.

    The loss is convex in beta = 1/T, with slope mean(sum_k p_k z_k - z_y); 60
    halvings of [1/100, 100] pin beta to float64 precision, with the same steps everywhere.
    """
    onehot = np.eye(logits.shape[1], dtype=np.float64)[y]
    picked = exact.tree_sum(np.multiply(logits, onehot), axis=1)
    weight = row_counts(len(y), counts).astype(np.float64)

    def slope(beta: float) -> float:
        p = exact.softmax(np.multiply(logits, beta))
        expected = exact.tree_sum(np.multiply(p, logits), axis=1)
        return float(exact.row_sum(np.multiply(np.subtract(expected, picked), weight)))

    lo, hi = 0.01, 100.0
    if slope(hi) <= 0:
        return 1.0 / hi
    if slope(lo) >= 0:
        return 1.0 / lo
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if slope(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 1.0 / ((lo + hi) / 2.0)
