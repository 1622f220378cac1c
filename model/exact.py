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

Nothing here calls ``np.sum``, ``np.dot``, ``@``, ``np.exp``, ``np.mean`` or ``**``.
"""

from __future__ import annotations

import numpy as np

# ln 2 split so that k * LN2_HI is exact for |k| < 2**11 (LN2_HI has 32 significant bits).
LN2_HI = 0.6931471803691238
LN2_LO = 1.9082149292705877e-10
LOG2E = 1.4426950408889634
#: Below this exp underflows to 0 in float64; above EXP_MAX it overflows.
EXP_MIN = -745.0
EXP_MAX = 709.0
#: 1/k! for k = 0..13, each the correctly rounded double (computed once from exact integers).
_INV_FACTORIALS = tuple(1.0 / float(np.prod(np.arange(1, k + 1), dtype=np.int64)) for k in range(14))


def tree_sum(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Sum along ``axis`` as a balanced tree in a fixed order: first half plus second half.

    Each level is one elementwise ``np.add``, which is correctly rounded per
    element, so the result depends only on the values and the length.
    """
    x = np.moveaxis(np.asarray(a, dtype=np.float64), axis, 0)
    if x.shape[0] == 0:
        return np.zeros(x.shape[1:], np.float64)
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        head = np.add(x[:half], x[half : 2 * half])
        x = np.concatenate([head, x[2 * half :]]) if x.shape[0] % 2 else head
    return x[0].copy()


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d) x (d, k) -> (n, k), each dot product summed by ``tree_sum`` over d.

    One label column at a time, so the largest temporary is (n, d), never (n, d, k).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.empty((a.shape[0], b.shape[1]), np.float64)
    for j in range(b.shape[1]):
        out[:, j] = tree_sum(np.multiply(a, b[:, j]), axis=1)
    return out


def matmul_tn(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """a.T @ g for (n, d) and (n, k) -> (d, k), summed by ``tree_sum`` over n."""
    a = np.asarray(a, np.float64)
    g = np.asarray(g, np.float64)
    out = np.empty((a.shape[1], g.shape[1]), np.float64)
    for j in range(g.shape[1]):
        out[:, j] = tree_sum(np.multiply(a, g[:, j : j + 1]), axis=0)
    return out


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


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits, stabilised by the row maximum (max is exact)."""
    z = np.asarray(z, np.float64)
    e = exp(np.subtract(z, z.max(axis=1, keepdims=True)))
    return np.divide(e, tree_sum(e, axis=1)[:, None])


def mean_rows(x: np.ndarray) -> np.ndarray:
    """Column means of (n, d): ``tree_sum`` over rows, one correctly rounded division."""
    return np.divide(tree_sum(x, axis=0), float(x.shape[0]))
