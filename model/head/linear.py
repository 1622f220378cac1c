"""The head's linear map, from the base's integer features to logits, and its parameters.

Features reach the head as integers: per image and base, the sum over views of
the int8 base's ``q - zero_point``. The float feature a user would picture is
``factor * units`` (``factor`` = the base's output scale / the number of views,
per column), and the head is softmax regression on standardised features
``scale * (factor * units - mean)``. Every such map is linear, so

    logits = units @ (scale * factor * kernel) + (bias - (scale * mean) @ kernel),

whose one large product is exact on BLAS (``model.head.products``), and the
same on every CPU. The kernel, mean and scale keep the meaning they have always
had in a model's weights, so the exported graph and older tools read them alike.

Heads trained before integer features (code version stl-3 and older) have no
``feature_factor``; they still take float features, through ``model.head.exact``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from model.head import exact, products
from model.head.products import Integers


@dataclass(frozen=True)
class IntegerFeatures:
    """One row per image: integer view sums, and per column the factor back to float features."""

    units: Integers  # (n, dim)
    factor: np.ndarray  # (dim,) float64

    def rows(self, index: np.ndarray) -> IntegerFeatures:
        return IntegerFeatures(self.units.rows(index), self.factor)


def row_counts(n: int, counts: np.ndarray | None) -> np.ndarray:
    """How many photos each of ``n`` rows stands for: ``counts``, or one each."""
    return np.ones(n, np.int64) if counts is None else np.asarray(counts, np.int64)


_MOMENT_ROWS = 8192


@dataclass(frozen=True)
class Moments:
    """Exact weighted sums of a split's integer features and of their squares (int64), per
    column: all the standardisation needs. Sums over blocks of rows add up exactly, so a split
    streamed through in shards gives the same values as one held whole."""

    factor: np.ndarray  # (dim,) float64
    sums: np.ndarray  # (dim,) int64
    squares: np.ndarray  # (dim,) int64
    total: int  # the rows' weights summed

    @staticmethod
    def of(units: np.ndarray, factor: np.ndarray, counts: np.ndarray | None = None) -> Moments:
        weight = row_counts(len(units), counts)
        sums = np.zeros(np.shape(units)[1], np.int64)
        squares = np.zeros_like(sums)
        for a in range(0, len(units), _MOMENT_ROWS):  # in blocks: int64 temporaries stay small
            ints = np.asarray(units[a : a + _MOMENT_ROWS]).astype(np.int64)  # |units| < 2**11
            w = weight[a : a + _MOMENT_ROWS]
            sums += w @ ints  # exact: integers, up to 2**40 photos
            squares += w @ (ints * ints)
        return Moments(factor, sums, squares, int(weight.sum()))

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.factor, self.sums + other.sums, self.squares + other.squares, self.total + other.total
        )

    def standardisation(self) -> tuple[np.ndarray, float]:
        """The weighted mean of each float feature, and one scale for all: 1 / their RMS deviation.

        One global scale (not one per feature) keeps the features' relative sizes: per-feature
        scaling would blow up features that barely vary in training. Both are rounded once from
        exact integer sums: they depend on the photos alone, not on their order or grouping."""
        total = self.total
        mean = np.multiply(self.factor, np.divide(self.sums.astype(np.float64), float(total)))
        # sum over columns of factor_j**2 * (sum w u**2 - (sum w u)**2 / N), exactly, over N * dim
        columns = zip(self.factor, self.sums, self.squares, strict=True)
        spread = sum(
            (Fraction(float(f)) ** 2 * (int(q) * total - int(s) ** 2) for f, s, q in columns), Fraction(0)
        )
        rms = math.sqrt(float(spread / (total * total * len(self.factor))))  # sqrt is correctly rounded
        return mean, 1.0 / max(rms, 1e-6)


def standardisation(features: IntegerFeatures, counts: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``Moments.standardisation`` of features held whole."""
    return Moments.of(features.units.values, features.factor, counts).standardisation()


@dataclass
class Head:
    kernel: np.ndarray  # (dim, labels) float64, on standardised features
    bias: np.ndarray  # (labels,) float64
    mean: np.ndarray  # (dim,) float64, feature standardisation
    scale: np.ndarray  # (dim,) float64
    l2: float
    cv_accuracy: dict[str, float] = field(default_factory=dict)
    #: Logits are divided by it before the softmax; None for the Adam head (which has none).
    temperature: float | None = None
    #: Float feature = factor * integer units, per column; None for a head on float features (stl-3).
    factor: np.ndarray | None = None

    def tensors(self) -> dict[str, np.ndarray]:
        out = {
            "kernel": self.kernel,
            "bias": self.bias,
            "feature_mean": self.mean,
            "feature_scale": self.scale,
        }
        if self.factor is not None:
            out["feature_factor"] = self.factor
        if self.temperature is not None:
            out["temperature"] = np.array([self.temperature], np.float64)
        return out

    @staticmethod
    def from_tensors(t: dict[str, np.ndarray], l2: float = 0.0) -> Head:
        f64 = {k: np.asarray(v, np.float64) for k, v in t.items()}
        temperature = float(f64["temperature"][0]) if "temperature" in f64 else None
        return Head(
            f64["kernel"],
            f64["bias"],
            f64["feature_mean"],
            f64["feature_scale"],
            l2,
            temperature=temperature,
            factor=f64.get("feature_factor"),
        )

    @property
    def on_units(self) -> bool:
        """True for a head on integer features; False for one on float features (stl-3)."""
        return self.factor is not None

    def logits(self, features: Integers | np.ndarray) -> np.ndarray:
        """(n, labels) logits of integer units (or, for an stl-3 head, of float features)."""
        if self.factor is None:
            standardised = np.multiply(np.subtract(np.asarray(features, np.float64), self.mean), self.scale)
            return np.add(exact.matmul(standardised, self.kernel), self.bias)
        assert isinstance(features, Integers)
        return linear_logits(
            features, LinearMap.of(self.factor, self.mean, self.scale), self.kernel, self.bias
        )

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities from logits, through the temperature if the head has one."""
        if self.temperature is not None:
            logits = np.divide(logits, self.temperature)
        return exact.softmax(logits)

    def probabilities(self, features: Integers | np.ndarray) -> np.ndarray:
        """(n, labels) float64 probabilities, identical bits on every CPU."""
        return self.calibrated(self.logits(features))


@dataclass(frozen=True)
class LinearMap:
    """standardised = gain * units - offset, per column: the head's view of integer features."""

    gain: np.ndarray  # (dim,) scale * factor
    offset: np.ndarray  # (dim,) scale * mean

    @staticmethod
    def of(factor: np.ndarray, mean: np.ndarray, scale: np.ndarray | float) -> LinearMap:
        return LinearMap(np.multiply(scale, factor), np.multiply(scale, mean))

    def bias_shift(self, kernel: np.ndarray) -> np.ndarray:
        """offset @ kernel, summed in a fixed tree (a (1, dim) product: small)."""
        return exact.matmul(self.offset[None, :], kernel)[0]


def linear_logits(units: Integers, linear: LinearMap, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """standardised(units) @ kernel + bias, as one exact product and a bias shifted by the offset."""
    gained = np.multiply(linear.gain[:, None], kernel)
    return np.add(products.times(units, gained), np.subtract(bias, linear.bias_shift(kernel)))


def linear_gradient(partial: products.Partial, linear: LinearMap) -> tuple[np.ndarray, np.ndarray]:
    """From the exact sums of units.T @ (w * r) and w @ r: standardised.T @ (w * r) and w @ r
    (for every column of r: the partial may hold several fits side by side)."""
    ut_r, colsum = partial.result()
    return np.subtract(
        np.multiply(linear.gain[:, None], ut_r), np.multiply(linear.offset[:, None], colsum)
    ), colsum
