"""Matrix products on any BLAS whose results are exact, so their bits cannot depend on it.

A float product's rounding depends on the order its terms are added, which
every BLAS picks by blocking, threads and SIMD width. But when every product
and every partial sum is an integer below 2**53, no addition rounds, in any
order: the result is the exact integer. One factor here is always small
integers (the int8 base's view sums, ``Integers``); the other, a float
matrix, is cut into integer-valued slices (``split``)

    w[:, j] = sum_s 2**(e_j - b*(s+1)) * m_s[:, j] + (a rest below 2**(e_j - b*S)),  |m_s| < 2**b,

with ``b`` the largest width for which ``terms * bound * (2**b - 1) <= 2**53``
(``slice_bits``). The slices go side by side into one GEMM, each slice's
product is exact, and they are combined by exact power-of-two scalings and
a fixed order of float adds. The same holds for ``x.T @ g``, whose exact
partial sums (``Partial``) add exactly across shards of rows in any order, on
any number of workers. This is Ozaki et al.'s error-free splitting (2012),
cheap here because one factor needs no splitting at all.

The result is a function of the inputs alone; the split keeps ``S * b >= 53``
bits of each column below its largest value, as many as float64 itself holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.errors import HeadInputError

#: Integers up to 2**53 are exact in float64; every partial sum of a product stays within it.
EXACT_LIMIT = 1 << 53
#: Bits of each column kept below its bound, over all slices: float64's own precision.
KEPT_BITS = 53
#: Narrower slices would need too many of them: a product that needs them is refused.
MIN_SLICE_BITS = 12


def slice_bits(bound: int, terms: int) -> int:
    """The widest slice b for which ``terms`` products of |x| <= bound and |m| < 2**b sum below 2**53.

    Raises ``HeadInputError`` if that leaves fewer than ``MIN_SLICE_BITS`` (too many or too large terms)."""
    budget = EXACT_LIMIT // max(1, bound * terms)  # terms * bound * (2**b - 1) <= 2**53
    bits = (budget + 1).bit_length() - 1
    if bits < MIN_SLICE_BITS:
        raise HeadInputError(
            f"an exact product of {terms} terms of integers up to {bound} would need slices narrower "
            f"than {MIN_SLICE_BITS} bits"
        )
    return bits


def slice_count(bits: int) -> int:
    return -(-KEPT_BITS // bits)


@dataclass(frozen=True)
class Integers:
    """A (rows, dim) matrix of integers |v| <= bound, held as float64 for the GEMM; checked once."""

    values: np.ndarray
    bound: int

    @staticmethod
    def of(values: np.ndarray, bound: int) -> Integers:
        """Check that ``values`` are integers within ``bound`` (else ``HeadInputError``), as float64."""
        a = np.asarray(values)
        if a.dtype.kind not in "iu":
            as_float = np.asarray(a, np.float64)
            if not np.array_equal(as_float, np.trunc(as_float)):
                raise HeadInputError("exact products need integer features, and these are not integers")
        if a.size and int(np.abs(a).max()) > bound:
            raise HeadInputError(
                f"a feature value {int(np.abs(a).max())} exceeds the bound {bound} its exact products assume"
            )
        return Integers(np.ascontiguousarray(a, np.float64), int(bound))

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def rows(self, index: np.ndarray | slice) -> Integers:
        return Integers(np.ascontiguousarray(self.values[index]), self.bound)


@dataclass(frozen=True)
class Split:
    """Integer slices of a float matrix's columns, side by side: slice s of column j is column
    ``s * cols + j``, weighing ``2**(exponents[j] - bits * (s + 1))``."""

    slices: np.ndarray  # (rows, count * cols) integer-valued float64
    exponents: np.ndarray  # (cols,) int64
    bits: int

    @property
    def cols(self) -> int:
        return len(self.exponents)

    @property
    def count(self) -> int:
        return self.slices.shape[1] // max(1, self.cols)

    def combine(self, products: np.ndarray) -> np.ndarray:
        """(n, count * cols) exact products of the slices -> (n, cols): scaled by powers of two
        (exact) and added smallest slice first, one fixed order of correctly rounded adds."""
        n, cols = products.shape[0], self.cols
        parts = products.reshape(n, self.count, cols)
        out = np.zeros((n, cols), np.float64)
        for s in reversed(range(self.count)):
            out = np.add(out, np.ldexp(parts[:, s, :], self.exponents - self.bits * (s + 1)))
        return out


def column_exponents(w: np.ndarray) -> np.ndarray:
    """Per column the e with max |w[:, j]| < 2**e (frexp is exact; an all-zero column gets 0)."""
    return np.frexp(np.abs(w).max(axis=0, initial=0.0))[1].astype(np.int64)


def split(w: np.ndarray, bits: int, exponents: np.ndarray | None = None) -> Split:
    """Cut each column of ``w`` into ``slice_count(bits)`` integer slices below 2**bits.

    ``exponents`` (per column, |w[:, j]| < 2**e_j, checked) defaults to each column's own; a caller
    that must split several blocks alike (shards of one matrix) passes the same ones to each."""
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)):
        raise HeadInputError("an exact product was given a value that is not finite")
    exponents = column_exponents(w) if exponents is None else np.asarray(exponents, np.int64)
    if np.any(np.abs(w) >= np.ldexp(1.0, exponents)):
        raise HeadInputError("a value is not below the bound its exact product was split for")
    count = slice_count(bits)
    rest = np.ldexp(w, bits - exponents)  # |rest| < 2**bits; exact (a power-of-two scaling)
    slices = np.empty((w.shape[0], count, w.shape[1]), np.float64)
    for s in range(count):
        slices[:, s, :] = np.trunc(rest)
        rest = np.ldexp(np.subtract(rest, slices[:, s, :]), bits)  # the fraction, exact, scaled up
    return Split(slices.reshape(w.shape[0], count * w.shape[1]), exponents, bits)


def times(x: Integers, w: np.ndarray) -> np.ndarray:
    """x @ w for (n, d) integers and a (d, k) float matrix: one GEMM of exact products."""
    parts = split(w, slice_bits(x.bound, x.dim))
    return parts.combine(x.values @ parts.slices)


@dataclass(frozen=True)
class Partial:
    """The exact integer sums behind x.T @ (weight * g) and weight @ g over some rows.

    Partials of any blocks of rows add exactly (the bound was set for ``total_weight`` rows in all),
    so the sum over shards is the same integers in any order and grouping."""

    sums: np.ndarray  # (d + 1, count * cols): x.T @ (weight * slices), then the weighted column sums
    weight: int  # the rows' weights summed so far
    total_weight: int  # what the slice width was chosen for
    exponents: np.ndarray
    bits: int

    def __add__(self, other: Partial) -> Partial:
        weight = self.weight + other.weight
        if weight > self.total_weight or other.bits != self.bits:
            raise HeadInputError("partial products of different splits, or of more rows than planned")
        return Partial(np.add(self.sums, other.sums), weight, self.total_weight, self.exponents, self.bits)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(x.T @ (weight * g), weight @ g), each rounded once from the exact sums."""
        combined = Split(np.empty((0, self.sums.shape[1])), self.exponents, self.bits).combine(self.sums)
        return combined[:-1], combined[-1]


#: |g| < 2**G_EXPONENT for a residual softmax - one-hot, which lies in [-1, 1].
G_EXPONENT = 1


def transposed_times(
    x: Integers, g: np.ndarray, weight: np.ndarray, total_weight: int, bound_exponent: int = G_EXPONENT
) -> Partial:
    """The exact partial sums of x.T @ (weight * g) and the weighted column sums of g, over these rows.

    ``weight`` holds non-negative integers, (n,) for every column or (n, cols) per column (a row's
    photo count, 0 to leave it out of that column's fit); every |g| must be below
    2**bound_exponent, and no column's weights, over all partials to be added, may sum past
    ``total_weight``: from those the slice width is fixed, the same for every shard."""
    g = np.asarray(g, np.float64)
    weight = np.asarray(weight, np.int64)
    weight = weight[:, None] if weight.ndim == 1 else weight
    if weight.size and weight.min() < 0:
        raise HeadInputError("row weights of an exact product must be non-negative")
    own = int(weight.sum(axis=0).max(initial=0))
    if own > total_weight:
        raise HeadInputError("these rows weigh more than the exact product was planned for")
    bits = slice_bits(x.bound + 1, total_weight)  # + 1: the weighted column sums ride along
    cols = g.shape[1]
    parts = split(g, bits, np.full(cols, bound_exponent, np.int64))
    count = parts.count
    weighted = np.multiply(  # integers below 2**53 / bound: exact
        parts.slices.reshape(len(g), count, cols),
        np.broadcast_to(weight, (len(g), cols)).astype(np.float64)[:, None, :],
    ).reshape(len(g), count * cols)
    sums = np.concatenate([x.values.T @ weighted, np.sum(weighted, axis=0, keepdims=True)])
    return Partial(sums, own, int(total_weight), parts.exponents, bits)
