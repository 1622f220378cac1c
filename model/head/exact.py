"""Float64 arithmetic whose bits do not depend on the CPU, the BLAS or numpy's SIMD paths.

IEEE 754 makes + - * / and sqrt correctly rounded: each result is a function of
its operands alone, on every machine. What differs between machines is the
*order* of operations (BLAS blocking, numpy's unrolled pairwise sums, FMA
contraction) and library functions that are not correctly rounded (``exp``,
``pow``). So this module uses only elementwise numpy ufuncs for those five
operations, sums in one fixed tree order, and builds ``exp`` from them by range
reduction and a polynomial. Same inputs, same bits, x86-64 of any generation
or aarch64 — the property is tested against golden hashes, natively and under
emulated CPUs.

Nothing here calls ``np.sum``, ``np.dot``, ``@``, ``np.exp``, ``np.log``, ``np.mean`` or ``**``.
"""

from __future__ import annotations

import numpy as np

# ln 2 split so that k * LN2_HI is exact for |k| < 2**11 (LN2_HI has 32 significant bits).
LN2_HI = 0.6931471803691238
LN2_LO = 1.9082149292705877e-10
LOG2E = 1.4426950408889634
_SQRT_HALF = 0.7071067811865476
#: Below this exp underflows to 0 in float64; above EXP_MAX it overflows.
EXP_MIN = -745.0
EXP_MAX = 709.0
#: 1/k! for k = 0..13, each the correctly rounded double (computed once from exact integers).
_INV_FACTORIALS = tuple(1.0 / float(np.prod(np.arange(1, k + 1), dtype=np.int64)) for k in range(14))


#: Elements in one block of products in ``matmul``: bounds its temporary to 32 MiB.
_BLOCK = 1 << 22


def tree_sum(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Sum along ``axis`` as a balanced tree in a fixed order: first half plus second half.

    Each level is one elementwise ``np.add``, which is correctly rounded per
    element, so the result depends only on the values and the length. A level of
    odd length carries its last element to the next level, last. The levels are
    added in place in one copy of ``a`` (the head's solver calls this tens of
    thousands of times per fit, on short vectors, so allocations are its cost).
    """
    x = np.array(np.moveaxis(np.asarray(a), axis, 0) if axis else a, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(x.shape[1:], np.float64)
    while n > 1:
        half = n // 2
        np.add(x[:half], x[half : 2 * half], out=x[:half])
        if n % 2:
            x[half] = x[2 * half]
        n = half + n % 2
    return x[0]


#: Sums over rows go block by block, then over the blocks' sums: rows split into shards of whole
#: blocks give the same bits as one array.
SUM_BLOCK_ROWS = 4096


def block_sums(a: np.ndarray) -> np.ndarray:
    """Per block of ``SUM_BLOCK_ROWS`` rows (axis 0), its ``tree_sum``: (blocks, ...)."""
    a = np.asarray(a, np.float64)
    starts = range(0, len(a), SUM_BLOCK_ROWS)
    return (
        np.stack([tree_sum(a[i : i + SUM_BLOCK_ROWS]) for i in starts])
        if len(a)
        else np.zeros((0, *a.shape[1:]))
    )


def row_sum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 by blocks (``block_sums``), then a tree over the blocks."""
    return tree_sum(block_sums(a))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d) x (d, k) -> (n, k), each dot product summed by ``tree_sum`` over d.

    The products are laid out with d first, so every level of the tree adds two
    contiguous halves, and with the longer of (rows of a block, k) innermost, for
    long inner loops; rows go in blocks to bound the temporary. The layout changes
    the speed, never the sums.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n, d = a.shape
    k = b.shape[1]
    out = np.empty((n, k), np.float64)
    rows = max(1, _BLOCK // max(1, d * k))
    for start in range(0, n, rows):
        at = np.ascontiguousarray(a[start : start + rows].T)  # (d, rows)
        if k >= at.shape[1]:  # e.g. a Gram matrix: (d, rows, k)
            out[start : start + rows] = tree_sum(np.multiply(at[:, :, None], b[:, None, :]), axis=0)
        else:  # e.g. logits: (d, k, rows)
            out[start : start + rows] = tree_sum(np.multiply(at[:, None, :], b[:, :, None]), axis=0).T
    return out


def dot(u: np.ndarray, v: np.ndarray) -> float:
    """Inner product of two equal-shape arrays, summed by ``tree_sum`` over the flattened values."""
    return float(tree_sum(np.multiply(u, v).ravel()))


def exp(x: np.ndarray) -> np.ndarray:
    """e**x from correctly rounded operations only: x = k ln2 + r, |r| <= ln2/2.

    exp(r) is the degree-13 Taylor polynomial in Horner form (truncation error
    below 2**-60 on that interval), and 2**k is applied exactly by ``ldexp``.
    Faithful to within a few ulps, and bit-identical everywhere.
    """
    x = np.clip(np.asarray(x, np.float64), EXP_MIN, EXP_MAX)
    k = np.rint(np.multiply(x, LOG2E))
    r = np.subtract(np.subtract(x, np.multiply(k, LN2_HI)), np.multiply(k, LN2_LO))
    p = np.full_like(r, _INV_FACTORIALS[13])
    for c in reversed(_INV_FACTORIALS[:13]):
        p = np.add(np.multiply(p, r), c)
    return np.ldexp(p, k.astype(np.int64))


def log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive x from correctly rounded operations only.

    x = m * 2**e with m in [sqrt(1/2), sqrt(2)) (``frexp`` is exact); then
    log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd series to
    s**27 (truncation below 2**-60), and e ln2 is added in two parts.
    """
    x = np.asarray(x, np.float64)
    m, e = np.frexp(x)
    small = m < _SQRT_HALF
    m = np.where(small, np.multiply(m, 2.0), m)
    e = np.where(small, np.subtract(e, 1), e).astype(np.float64)
    s = np.divide(np.subtract(m, 1.0), np.add(m, 1.0))
    s2 = np.multiply(s, s)
    p = np.full_like(s, 1.0 / 27.0)
    for k in range(25, 0, -2):
        p = np.add(np.multiply(p, s2), 1.0 / k)
    log_m = np.multiply(np.multiply(s, p), 2.0)
    return np.add(np.add(np.multiply(e, LN2_HI), log_m), np.multiply(e, LN2_LO))


def log_sum_exp(z: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(z))) of (n, k), stabilised by the row maximum."""
    z = np.asarray(z, np.float64)
    top = z.max(axis=1)
    return np.add(top, log(tree_sum(exp(np.subtract(z, top[:, None])), axis=1)))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits, stabilised by the row maximum (max is exact)."""
    z = np.asarray(z, np.float64)
    e = exp(np.subtract(z, z.max(axis=1, keepdims=True)))
    return np.divide(e, tree_sum(e, axis=1)[:, None])
