"""Softmax regression minimised to convergence, in CPU-independent arithmetic.

The loss, mean cross-entropy + l2 * |W|^2 (the bias is not penalised), is
convex, so its minimiser depends on the data and l2 alone, not on a learning
rate, an epoch count or a batch order: the head a user gets is the best one
for the features, which the mini-batch Adam head only approaches. It is found
by L-BFGS with a backtracking (Armijo) line search — over W itself, or, with
fewer photos than features, over A where W = x.T A (the same minimiser, found
with (n, n) products) — every step built from
``model.head.exact``'s correctly rounded operations, so the iterates, the number of
iterations and the final bits are the same on every CPU.

The l2 strength is chosen by stratified k-fold cross-validation over a wide
grid, on the training photos only; the out-of-fold logits at the chosen
strength are kept, so a temperature can be fitted on photos the fold's model
never saw, and so that with no holdout the validation metrics still come from
unseen photos.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.head import exact

#: L2 strengths tried by cross-validation, strongest first (each fit starts from the previous one).
L2_GRID = (100.0, 10.0, 1.0, 0.1, 0.01, 1e-3)
CV_FOLDS = 5
HISTORY = 10
MAX_ITERATIONS = 300
#: Converged when the gradient's Euclidean norm (over W and b) is at most this.
GRADIENT_TOLERANCE = 1e-6
ARMIJO = 1e-4
#: Names the arithmetic in manifests; change it (and CODE_VERSION) when the bits change.
SOLVER = "lbfgs-armijo-primal-or-gram-float64-exact-v1"
#: Called once per solver iteration; it changes nothing computed (a job's cancel check).
Tick = Callable[[], None]


def row_counts(n: int, counts: np.ndarray | None) -> np.ndarray:
    """How many photos each of ``n`` rows stands for: ``counts``, or one each."""
    return np.ones(n, np.int64) if counts is None else np.asarray(counts, np.int64)


@dataclass
class Fit:
    kernel: np.ndarray  # (dim, labels)
    bias: np.ndarray  # (labels,)
    iterations: int
    converged: bool


class _Primal:
    """The loss over (W, b) themselves: products with x (n, dim) each step; best when n > dim.

    Every vector v comes with its image M v under the metric of parameter space,
    here the identity, so that the minimiser is the same code for both forms.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, n_labels: int, l2: float, counts: np.ndarray | None = None
    ) -> None:
        self.x = np.ascontiguousarray(x, np.float64)
        self.onehot = np.eye(n_labels, dtype=np.float64)[y]
        counts = row_counts(len(y), counts)
        # Row i stands for counts[i] identical photos: its loss terms weigh counts[i] (times 1.0 is
        # exact, so a CSV without repeats gives the same bits as before weights existed).
        self.weight = counts.astype(np.float64)[:, None]
        self.n, self.k, self.l2 = int(counts.sum()), n_labels, l2
        self.rows = x.shape[1]  # rows of the weight-like block

    def split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cut = self.rows * self.k
        return v[:cut].reshape(self.rows, self.k), v[cut:]

    def metric(self, v: np.ndarray) -> np.ndarray:
        return v

    @functools.cached_property
    def xf(self) -> np.ndarray:
        return np.asfortranarray(self.x)  # exact.matmul reads its transpose without a copy

    def logits(self, theta: np.ndarray, m_theta: np.ndarray) -> np.ndarray:
        """Logits at ``theta``; for a direction, its change per unit step."""
        w, b = self.split(theta)
        return np.add(exact.matmul(self.xf, w), b)

    def penalty(self, theta: np.ndarray, m_theta: np.ndarray) -> float:
        w, _ = self.split(theta)
        return self.l2 * exact.dot(w, w)

    def residual(self, z: np.ndarray) -> np.ndarray:
        return np.divide(np.multiply(np.subtract(exact.softmax(z), self.onehot), self.weight), float(self.n))

    def gradient(
        self, z: np.ndarray, theta: np.ndarray, m_theta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        w, _ = self.split(theta)
        g = self.residual(z)
        gw = np.add(exact.matmul_tn(self.x, g), np.multiply(w, 2.0 * self.l2))
        flat = np.concatenate([gw.ravel(), exact.tree_sum(g, axis=0)])
        return flat, flat

    def weights(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, b = self.split(theta)
        return w.copy(), b.copy()


class _Dual(_Primal):
    """The same loss with W = x.T A: only the (n, n) Gram matrix K = x x.T is multiplied.

    Every iterate stays in the span of the photos' features (the gradient does),
    so nothing is lost; each step costs one (n, n) x (n, labels) product instead
    of two (n, dim) ones, and the metric pairs carry K v through every linear
    combination so that inner products <u, v>_W = <u, K v> cost no product.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        n_labels: int,
        l2: float,
        gram: np.ndarray,
        counts: np.ndarray | None = None,
    ) -> None:
        super().__init__(x, y, n_labels, l2, counts)
        self.gram = gram
        self.rows = len(y)

    def metric(self, v: np.ndarray) -> np.ndarray:
        a, b = self.split(v)
        return np.concatenate([exact.matmul(self.gram, a).ravel(), b])

    def logits(self, theta: np.ndarray, m_theta: np.ndarray) -> np.ndarray:
        ka, b = self.split(m_theta)
        return np.add(ka, b)

    def penalty(self, theta: np.ndarray, m_theta: np.ndarray) -> float:
        a, _ = self.split(theta)
        ka, _ = self.split(m_theta)
        return self.l2 * exact.dot(a, ka)

    def gradient(
        self, z: np.ndarray, theta: np.ndarray, m_theta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        a, _ = self.split(theta)
        ka, _ = self.split(m_theta)
        g = self.residual(z)
        gb = exact.tree_sum(g, axis=0)
        ga = np.add(g, np.multiply(a, 2.0 * self.l2))
        kga = np.add(exact.matmul(self.gram, g), np.multiply(ka, 2.0 * self.l2))
        return np.concatenate([ga.ravel(), gb]), np.concatenate([kga.ravel(), gb])

    def weights(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.split(theta)
        return exact.matmul_tn(self.x, a), b.copy()


def _loss(problem: _Primal, z: np.ndarray, theta: np.ndarray, m_theta: np.ndarray) -> float:
    picked = exact.tree_sum(np.multiply(z, problem.onehot), axis=1)
    ce = np.multiply(np.subtract(exact.log_sum_exp(z), picked), problem.weight[:, 0])
    return float(np.divide(exact.tree_sum(ce), float(problem.n))) + problem.penalty(theta, m_theta)


Pair = tuple[np.ndarray, np.ndarray]  # a vector and its image under the metric


def _direction(g: Pair, steps: list[tuple[Pair, Pair, float]]) -> Pair:
    """L-BFGS two-loop recursion: -H g from the last steps (s, y, 1/<y, s>), newest last."""
    q, mq = g[0].copy(), g[1].copy()
    alphas = []
    for (_s, ms), (yv, myv), rho in reversed(steps):
        a = rho * exact.dot(ms, q)
        alphas.append(a)
        q, mq = np.subtract(q, np.multiply(yv, a)), np.subtract(mq, np.multiply(myv, a))
    if steps:
        (_s, ms), (yv, myv), _ = steps[-1]
        gamma = exact.dot(ms, yv) / exact.dot(myv, yv)
        q, mq = np.multiply(q, gamma), np.multiply(mq, gamma)
    for ((s, ms), (_yv, myv), rho), a in zip(steps, reversed(alphas), strict=True):
        b = rho * exact.dot(myv, q)
        q, mq = np.add(q, np.multiply(s, a - b)), np.add(mq, np.multiply(ms, a - b))
    return np.negative(q), np.negative(mq)


def minimise(
    problem: _Primal, start: np.ndarray | None = None, tick: Tick | None = None
) -> tuple[np.ndarray, int, bool]:
    """L-BFGS from ``start`` (zeros by default): the parameters, iterations used, and convergence.

    ``tick`` is called once an iteration (a job checks for a cancel there; it may raise)."""
    theta = np.zeros(problem.rows * problem.k + problem.k) if start is None else start.copy()
    m_theta = problem.metric(theta)
    z = problem.logits(theta, m_theta)
    f = _loss(problem, z, theta, m_theta)
    g = problem.gradient(z, theta, m_theta)
    steps: list[tuple[Pair, Pair, float]] = []
    for iteration in range(MAX_ITERATIONS):
        if tick is not None:
            tick()
        norm = float(np.sqrt(exact.dot(g[0], g[1])))
        if norm <= GRADIENT_TOLERANCE:
            return theta, iteration, True
        p = _direction(g, steps)
        slope = exact.dot(g[1], p[0])
        if slope >= 0:  # not a descent direction (lost curvature): restart from steepest descent
            steps.clear()
            p = (np.negative(g[0]), np.negative(g[1]))
            slope = -norm * norm
        # First step: unit length; afterwards L-BFGS's own scaling makes t = 1 the natural try.
        t = 1.0 if steps else 1.0 / max(1.0, norm)
        dz = problem.logits(*p)
        for _ in range(60):
            new_theta = np.add(theta, np.multiply(p[0], t))
            new_m_theta = np.add(m_theta, np.multiply(p[1], t))
            new_z = np.add(z, np.multiply(dz, t))
            new_f = _loss(problem, new_z, new_theta, new_m_theta)
            if new_f <= f + ARMIJO * t * slope:
                break
            t *= 0.5
        else:
            return theta, iteration, False  # no decrease possible at float64 precision
        new_g = problem.gradient(new_z, new_theta, new_m_theta)
        s = (np.multiply(p[0], t), np.multiply(p[1], t))
        yv = (np.subtract(new_g[0], g[0]), np.subtract(new_g[1], g[1]))
        sy = exact.dot(s[1], yv[0])
        if sy > 0:
            steps.append((s, yv, 1.0 / sy))
            del steps[:-HISTORY]
        theta, m_theta, z, f, g = new_theta, new_m_theta, new_z, new_f, new_g
    return theta, MAX_ITERATIONS, float(np.sqrt(exact.dot(g[0], g[1]))) <= GRADIENT_TOLERANCE


def gram(x: np.ndarray) -> np.ndarray:
    """K = x x.T, exactly as ``exact.matmul`` sums."""
    x = np.asarray(x, np.float64)
    return exact.matmul(x, np.ascontiguousarray(x.T))


def uses_gram(n: int, dim: int, l2: float) -> bool:
    """The dual form when there are no more photos than features (and l2 > 0), else the primal."""
    return l2 > 0 and n <= dim


def problem_for(
    x: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    l2: float,
    gram_matrix: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> _Primal:
    """The form ``uses_gram`` picks, for (x, y) and l2 (each row weighing its count)."""
    if uses_gram(len(y), x.shape[1], l2):
        return _Dual(x, y, n_labels, l2, gram(x) if gram_matrix is None else gram_matrix, counts)
    return _Primal(x, y, n_labels, l2, counts)


def fit(
    x: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    l2: float,
    start: np.ndarray | None = None,
    gram_matrix: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    tick: Tick | None = None,
) -> tuple[Fit, np.ndarray]:
    """Minimise the loss on (x, y); the fit, and its parameters (to warm-start the same form)."""
    problem = problem_for(x, y, n_labels, l2, gram_matrix, counts)
    theta, iterations, converged = minimise(problem, start, tick)
    w, b = problem.weights(theta)
    return Fit(w, b, iterations, converged), theta


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
    gram: np.ndarray | None  # x x.T when the dual form was used, for the final fit


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    seed: int,
    grid: tuple[float, ...] = L2_GRID,
    folds: int = CV_FOLDS,
    counts: np.ndarray | None = None,
    tick: Tick | None = None,
) -> CrossValidation:
    """Pick l2 from ``grid`` (strongest first) by k-fold accuracy, ties to the stronger penalty,
    keeping the out-of-fold logits at the chosen strength.

    Row i stands for ``counts[i]`` photos (all ones by default): the folds deal rows, so one
    photo listed twice never sits on both sides of a fold, and accuracy counts photos."""
    counts = row_counts(len(y), counts)
    # Never more folds than the rarest label has items, so every fold's training part has every label.
    k = int(max(2, min(folds, np.bincount(y, minlength=n_labels).min())))
    fold = stratified_folds(y, k, seed)
    logits = {l2: np.zeros((len(y), n_labels)) for l2 in grid}
    # Each fold's Gram matrix is a block of the whole one (computed if any fit will use it).
    full_gram = gram(x) if any(uses_gram(len(y), x.shape[1], l2) for l2 in grid) else None
    for i in range(k):
        train, held = fold != i, fold == i
        fold_gram = None if full_gram is None else full_gram[np.ix_(train, train)]
        start = None
        for l2 in grid:
            result, start = fit(x[train], y[train], n_labels, l2, start, fold_gram, counts[train], tick)
            logits[l2][held] = np.add(exact.matmul(x[held], result.kernel), result.bias)
    total = int(counts.sum())
    accuracy = {f"{l2:g}": int(counts[logits[l2].argmax(axis=1) == y].sum()) / total for l2 in grid}
    best = max(grid, key=lambda l2: (accuracy[f"{l2:g}"], l2))
    return CrossValidation(best, accuracy, logits[best], k, full_gram)


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
        return float(exact.tree_sum(np.multiply(np.subtract(expected, picked), weight)))

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
