"""Exact products on BLAS: every slice product is the exact integer, and the results are close to
the true (rational) products by a bound the tests state, on random and adversarial inputs."""

from __future__ import annotations

import hashlib
import itertools
from fractions import Fraction

import numpy as np
import pytest

from model.errors import HeadInputError
from model.head import products
from model.head.products import Integers


def _exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in Python integers (object arrays): no rounding anywhere."""
    return np.array(a.astype(np.int64).astype(object) @ b.astype(np.int64).astype(object))


def _weights(kind: str, rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal((d, k))
    if kind == "wide":  # exponents over 600 binades, mixed signs
        return rng.choice([-1.0, 1.0], (d, k)) * np.exp2(rng.uniform(-300, 300, (d, k)))
    if kind == "cancelling":  # a huge pair that cancels, around small values
        w = rng.standard_normal((d, k)) * 1e-8
        w[0], w[1] = 1e8, -1e8
        return w
    if kind == "zeros-and-denormals":
        w = np.zeros((d, k))
        w[:, 1] = rng.choice([0.0, 5e-324, -1e-310, 2.5e-320], d)
        w[::3, 2] = rng.standard_normal(len(w[::3, 2]))
        return w
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["normal", "wide", "cancelling", "zeros-and-denormals"])
def test_slice_products_are_exact_and_results_within_the_stated_bound(kind: str) -> None:
    rng = np.random.default_rng(7)
    n, d, k, bound = 9, 300, 3, 1785
    x = rng.integers(-bound, bound + 1, (n, d))
    x[0] = bound  # the largest magnitudes the bound allows, all one sign
    x[1] = -bound
    w = _weights(kind, rng, d, k)
    ints = Integers.of(x, bound)
    bits = products.slice_bits(bound, d)
    parts = products.split(w, bits)
    # Every slice product BLAS computes is the exact integer product.
    assert np.array_equal(ints.values @ parts.slices, _exact_int_matmul(x, parts.slices).astype(np.float64))
    got = products.times(ints, w)
    for i in range(n):
        for j in range(k):
            exact = sum(
                (Fraction(int(a)) * Fraction(float(b)) for a, b in zip(x[i], w[:, j], strict=True)),
                Fraction(0),
            )
            # The split keeps S*b bits below the column's bound; then S correctly rounded adds.
            dropped = Fraction(int(np.abs(x[i]).sum())) * Fraction(2) ** int(
                parts.exponents[j] - bits * parts.count
            )
            rounding = parts.count * abs(Fraction(float(np.spacing(abs(got[i, j]))))) + Fraction(2) ** -1074
            assert abs(Fraction(float(got[i, j])) - exact) <= dropped + rounding, (kind, i, j)


def test_results_do_not_depend_on_blocking_or_on_the_other_columns() -> None:
    rng = np.random.default_rng(3)
    x = Integers.of(rng.integers(-510, 511, (700, 1280)), 510)
    w = rng.standard_normal((1280, 6)) * np.array([1, 1e-30, 1e30, 3, 5e-310, 0.5])
    whole = products.times(x, w)
    by_rows = np.concatenate([products.times(x.rows(slice(a, a + 97)), w) for a in range(0, 700, 97)])
    by_cols = np.concatenate([products.times(x, w[:, j : j + 1]) for j in range(6)], axis=1)
    assert np.array_equal(whole, by_rows) and np.array_equal(whole, by_cols)
    assert hashlib.sha1(whole.tobytes()).hexdigest() == TIMES_SHA1


TIMES_SHA1 = "a13232a57bb642046df97b351bbc4d0653d8cada"


def test_transposed_partials_add_exactly_in_any_grouping() -> None:
    rng = np.random.default_rng(4)
    n, d = 1000, 64
    x = rng.integers(-1785, 1786, (n, d))
    g = rng.uniform(-1, 1, (n, 3))
    g[:, 2] = np.where(rng.random(n) < 0.5, 5e-324, -1.0)  # denormals next to the bound's edge
    weight = rng.integers(0, 5, n)
    total = int(weight.sum())
    ints = Integers.of(x, 1785)
    whole = products.transposed_times(ints, g, weight, total)
    cuts = [0, 1, 250, 251, 640, n]
    shards = [
        products.transposed_times(ints.rows(slice(a, b)), g[a:b], weight[a:b], total)
        for a, b in itertools.pairwise(cuts)
    ]
    forward, backward = shards[0], shards[-1]
    for s in shards[1:]:
        forward = forward + s
    for s in reversed(shards[:-1]):
        backward = backward + s
    assert np.array_equal(whole.sums, forward.sums) and np.array_equal(whole.sums, backward.sums)
    xt_g, colsum = whole.result()
    count = products.slice_count(whole.bits)
    ref = x.T.astype(np.float64) @ (g * weight[:, None])
    assert np.abs(xt_g - ref).max() <= 1e-12 * np.abs(ref).max()
    # The weighted column sums, against the rational sum.
    for j in range(3):
        exact = sum(
            (Fraction(int(w)) * Fraction(float(v)) for w, v in zip(weight, g[:, j], strict=True)), Fraction(0)
        )
        assert (
            abs(Fraction(float(colsum[j])) - exact)
            <= Fraction(total) * Fraction(2) ** (products.G_EXPONENT - whole.bits * count)
            + abs(Fraction(float(np.spacing(colsum[j])))) * count
        )


def test_bounds_are_checked_not_assumed() -> None:
    bits = products.slice_bits(510, 1280)
    assert 1280 * 510 * (2**bits - 1) <= 2**53 < 1280 * 510 * (2 ** (bits + 1) - 1)
    with pytest.raises(HeadInputError, match="narrower"):
        products.slice_bits(2**30, 2**20)
    with pytest.raises(HeadInputError, match="not integers"):
        Integers.of(np.array([[1.0, 2.5]]), 10)
    with pytest.raises(HeadInputError, match="exceeds the bound"):
        Integers.of(np.array([[1, -11]]), 10)
    with pytest.raises(HeadInputError, match="not finite"):
        products.times(Integers.of(np.ones((1, 2)), 1), np.array([[np.nan], [1.0]]))
    x = Integers.of(np.ones((4, 2)), 1)
    with pytest.raises(HeadInputError, match="not below the bound"):
        products.transposed_times(x, np.full((4, 1), 2.0), np.ones(4), 4)
    with pytest.raises(HeadInputError, match="weigh more"):
        products.transposed_times(x, np.zeros((4, 1)), np.ones(4), 3)
    a = products.transposed_times(x.rows(slice(0, 2)), np.zeros((2, 1)), np.ones(2), 3)
    with pytest.raises(HeadInputError, match="more rows than planned"):
        _ = a + a
