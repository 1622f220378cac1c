"""The head at BLAS speed: exact products against plain BLAS, and the whole head step against
the previous head (old main) and scikit-learn, side by side in one run.

* **Products.** ``(n, 1280) x (1280, k)``: a plain float64 GEMM, the exact stacked-slice
  product (``model.head.products.times``) and the previous head's tree-summed product
  (``model.head.exact.matmul``, still what heads on float features use).
* **Head step.** Cross-validation over the L2 grid (5 folds), the final fit and the temperature,
  on integer features shaped like the default base's (1280 columns, two views: values 0..510,
  3 labels), at several numbers of distinct pairs: this head; the previous head (a worktree of
  ``--old`` run on the same features as float32, as its pipeline gave them); scikit-learn's
  ``LogisticRegressionCV`` (lbfgs, the same L2 grid as C = 1 / (2 l2 n), 5 stratified folds,
  tol 1e-6, at most 300 iterations) and one ``LogisticRegression`` at the chosen C, on the same
  standardised features. Each run is its own process, so its peak RSS is its own; held-out
  accuracy is on 20,000 fresh pairs from the same distribution.

Usage: python bench/bench_head.py [--sizes 2000,4000,16000,128000] [--old-sizes 2000,4000,16000]
       [--old REV] [--out bench/results-head.md]
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DIM, LABELS, BOUND, FACTOR = 1280, 3, 510, 0.0235 / 2
TEST_PAIRS = 20_000


BLOCK = 16384


def synthetic_blocks(n: int, seed: int):
    """Integer view sums like an int8 base's after ReLU6 pooling: mostly small, skewed, clipped;
    in blocks of BLOCK rows, so that a million pairs never need to be in memory at once."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).gamma(1.5, 12.0, (LABELS, DIM))  # the same label means in every set
    y = np.arange(n) % LABELS
    for start in range(0, n, BLOCK):
        part = y[start : start + BLOCK]
        noise = rng.gamma(2.0, 14.0, (len(part), DIM))
        yield np.clip(np.rint(noise + centres[part] * 0.06), 0, BOUND).astype(np.int16), part


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = list(synthetic_blocks(n, seed))
    return np.concatenate([b[0] for b in blocks]), np.arange(n) % LABELS


def _sha1(*arrays: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(b"".join(np.ascontiguousarray(a, np.float64).tobytes() for a in arrays)).hexdigest()


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM starts afresh at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_new(n: int) -> dict:
    from model.head.linear import IntegerFeatures
    from model.head.products import Integers
    from model.head.train import train_logistic

    x, y = synthetic(n, n)
    features = IntegerFeatures(Integers.of(x, BOUND), np.full(DIM, FACTOR))
    t = time.perf_counter()
    result = train_logistic(features, y, LABELS, seed=1, l2=-1.0, calibrate=True)
    seconds = time.perf_counter() - t
    tx, ty = synthetic(TEST_PAIRS, 10**9 + n)
    p = result.head.probabilities(Integers.of(tx, BOUND))
    return {
        "seconds": seconds,
        "accuracy": float((p.argmax(axis=1) == ty).mean()),
        "l2": result.head.l2,
        "iterations": result.iterations,
        "rss_mib": peak_rss_mib(),
        "weights": _sha1(result.head.kernel, result.head.bias),
    }


def one_stored(n: int) -> dict:
    """This head on shards in a local store, read one at a time (bounded memory): the same bits."""
    from model.head import logistic
    from model.head.linear import Head, LinearMap, Moments
    from model.head.products import Integers
    from model.head.shards import InStore, store_shards
    from store import LocalStore

    pairs = int(os.environ.get("HEAD_SHARD_PAIRS", "65536"))
    factor = np.full(DIM, FACTOR)
    with tempfile.TemporaryDirectory(prefix="stl-bench-shards-") as tmp:
        store = LocalStore(tmp)
        moments: list[Moments] = []

        def shards():
            held: list[tuple[np.ndarray, np.ndarray]] = []
            for units, y in synthetic_blocks(n, n):
                moments.append(Moments.of(units, factor))
                held.append((units, y))
                if sum(len(b[1]) for b in held) >= pairs:
                    yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])
                    held = []
            if held:
                yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])

        refs = store_shards(store, shards())
        y = np.arange(n) % LABELS
        t = time.perf_counter()
        mean, scale = functools.reduce(operator.add, moments).standardisation()
        scales = np.full(DIM, scale)
        linear = LinearMap.of(factor, mean, scales)
        cv = logistic.cross_validate(InStore(store, refs, BOUND), y, LABELS, linear, seed=1)
        temperature = logistic.fit_temperature(cv.out_of_fold_logits, y)
        seconds = time.perf_counter() - t
    head = Head(cv.final.kernel, cv.final.bias, mean, scales, cv.l2, temperature=temperature, factor=factor)
    tx, ty = synthetic(TEST_PAIRS, 10**9 + n)
    p = head.probabilities(Integers.of(tx, BOUND))
    return {
        "seconds": seconds,
        "accuracy": float((p.argmax(axis=1) == ty).mean()),
        "l2": cv.l2,
        "iterations": cv.final.iterations,
        "rss_mib": peak_rss_mib(),
        "shards": len(refs),
        "weights": _sha1(head.kernel, head.bias),
    }


def one_old(n: int) -> dict:
    """The previous head, imported from the old worktree first on sys.path (see ``main``)."""
    import model.head.train
    from model.head.train import train_logistic

    assert model.head.train.__file__.startswith(os.environ["PYTHONPATH"]), model.head.train.__file__
    x, y = synthetic(n, n)
    floats = np.multiply(x.astype(np.float32), np.float32(FACTOR))
    t = time.perf_counter()
    result = train_logistic(floats, y, LABELS, seed=1, l2=-1.0, calibrate=True)
    seconds = time.perf_counter() - t
    tx, ty = synthetic(TEST_PAIRS, 10**9 + n)
    p = result.head.probabilities(np.multiply(tx.astype(np.float32), np.float32(FACTOR)))
    return {
        "seconds": seconds,
        "accuracy": float((p.argmax(axis=1) == ty).mean()),
        "l2": result.head.l2,
        "rss_mib": peak_rss_mib(),
    }


def one_sklearn(n: int) -> dict:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from model.head.linear import IntegerFeatures, standardisation
    from model.head.logistic import CV_FOLDS, L2_GRID
    from model.head.products import Integers

    x, y = synthetic(n, n)
    mean, scale = standardisation(IntegerFeatures(Integers.of(x, BOUND), np.full(DIM, FACTOR)))
    xs = (x * FACTOR - mean) * scale
    cs = [1.0 / (2.0 * l2 * n) for l2 in L2_GRID]
    t = time.perf_counter()
    cv = LogisticRegressionCV(
        Cs=cs, cv=StratifiedKFold(CV_FOLDS, shuffle=True, random_state=1), tol=1e-6, max_iter=300
    ).fit(xs, y)
    cv_seconds = time.perf_counter() - t
    t = time.perf_counter()
    LogisticRegression(C=float(cv.C_[0]), tol=1e-6, max_iter=300).fit(xs, y)
    one_seconds = time.perf_counter() - t
    tx, ty = synthetic(TEST_PAIRS, 10**9 + n)
    accuracy = float((cv.predict((tx * FACTOR - mean) * scale) == ty).mean())
    return {
        "seconds": cv_seconds,
        "one_fit_seconds": one_seconds,
        "accuracy": accuracy,
        "l2": 1.0 / (2 * float(cv.C_[0]) * n),
        "rss_mib": peak_rss_mib(),
    }


def products_row(n: int, k: int) -> dict:
    from model.head import exact, products
    from model.head.products import Integers

    x, _ = synthetic(n, 7)
    ints = Integers.of(x, BOUND)
    w = np.random.default_rng(1).standard_normal((DIM, k))

    def best(f, reps: int = 3) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    plain = best(lambda: ints.values @ w)
    split = best(lambda: products.times(ints, w))
    g = np.random.default_rng(2).uniform(-1, 1, (n, k))
    plain_t = best(lambda: ints.values.T @ g)
    split_t = best(lambda: products.transposed_times(ints, g, np.ones(n, np.int64), n))
    old = best(lambda: exact.matmul(ints.values, w), 1) if n <= 32_768 else None
    return {
        "n": n,
        "k": k,
        "plain": plain,
        "split": split,
        "plain_t": plain_t,
        "split_t": split_t,
        "old": old,
    }


def run_one(kind: str, n: int, old_tree: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(old_tree) if old_tree else str(REPO))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, str(n)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,4000,16000,128000")
    parser.add_argument("--old-sizes", default="2000,4000,16000")
    parser.add_argument("--stored-sizes", default="128000,1000000")
    parser.add_argument("--old", default="6d29c2b")
    parser.add_argument("--out", default=str(REPO / "bench" / "results-head.md"))
    parser.add_argument("--one", nargs=2)
    args = parser.parse_args()
    if args.one:
        kind, n = args.one[0], int(args.one[1])
        if kind == "old":  # the old worktree must win over this checkout
            sys.path.insert(0, os.environ["PYTHONPATH"])
        kinds = {"new": one_new, "stored": one_stored, "old": one_old, "sklearn": one_sklearn}
        print(json.dumps(kinds[kind](n)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    old_sizes = [int(s) for s in args.old_sizes.split(",") if s]
    stored_sizes = [int(s) for s in args.stored_sizes.split(",") if s]
    prods = [products_row(n, 3) for n in (8192, 32768, 131072)] + [products_row(32768, 36)]
    for p in prods:
        print(p, file=sys.stderr)
    rows: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="stl-bench-head-") as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.old],
            check=True,
            capture_output=True,
        )
        try:
            for n in sorted(set(sizes) | set(old_sizes) | set(stored_sizes)):
                row = rows.setdefault(n, {})
                if n in stored_sizes:
                    row["stored"] = run_one("stored", n)
                if n in old_sizes:
                    row["old"] = run_one("old", n, tree)
                if n in sizes:
                    row["new"] = run_one("new", n)
                    row["sklearn"] = run_one("sklearn", n)
                print(n, row, file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    write(Path(args.out), prods, rows, args.old)


def _fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.3g} {unit}".strip()


def write(path: Path, prods: list[dict], rows: dict[int, dict[str, dict]], old: str) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    lines = [
        "# Head benchmark: exact products on BLAS, the head step against the previous head and scikit-learn",
        "",
        f"One run of `python bench/bench_head.py` on {os.cpu_count()} cores ({cpu}); numpy's OpenBLAS, "
        f"its default threads. Ratios are from the same run; the old head is `{old}`.",
        "",
        "## Products `(n, 1280) x (1280, k)` (best of 3)",
        "",
        "| n | k | plain BLAS | exact split | ratio | plain `X.T @ G` | exact split | ratio | old tree-sum | old / plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in prods:
        old_ratio = f"{p['old'] / p['plain']:.1f}x" if p["old"] else "—"
        lines.append(
            f"| {p['n']} | {p['k']} | {_fmt(p['plain'])} | {_fmt(p['split'])} | {p['split'] / p['plain']:.2f}x "
            f"| {_fmt(p['plain_t'])} | {_fmt(p['split_t'])} | {p['split_t'] / p['plain_t']:.2f}x | {_fmt(p['old'])} | {old_ratio} |"
        )
    lines += [
        "",
        "## The head step (5-fold CV over 6 strengths, final fit, temperature)",
        "",
        "| pairs | this head | old head | old / this | `LogisticRegressionCV` | this / sklearn CV | one sklearn fit "
        "| held-out acc. this / sklearn / old | chosen l2 this / sklearn | peak RSS this / sklearn / old |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, row in sorted(rows.items()):
        if "new" not in row and "old" not in row:
            continue
        new, old_r, sk = row.get("new", {}), row.get("old", {}), row.get("sklearn", {})
        ratio_old = (
            f"{old_r['seconds'] / new['seconds']:.1f}x" if "seconds" in old_r and "seconds" in new else "—"
        )
        ratio_sk = f"{new['seconds'] / sk['seconds']:.2f}" if "seconds" in sk and "seconds" in new else "—"
        acc = " / ".join(f"{r['accuracy']:.4f}" if "accuracy" in r else "—" for r in (new, sk, old_r))
        l2 = " / ".join(f"{r['l2']:g}" if "l2" in r else "—" for r in (new, sk))
        rss = " / ".join(f"{r['rss_mib']:.0f}" if "rss_mib" in r else "—" for r in (new, sk, old_r))
        lines.append(
            f"| {n} | {_fmt(new.get('seconds'))} | {_fmt(old_r.get('seconds'))} | {ratio_old} | {_fmt(sk.get('seconds'))} "
            f"| {ratio_sk} | {_fmt(sk.get('one_fit_seconds'))} | {acc} | {l2} | {rss} MiB |"
        )
        for name, r in (("this", new), ("sklearn", sk), ("old", old_r)):
            if "error" in r:
                lines.append(f"|  | {name} failed: {r['error']} | | | | | | | | |")
    lines += [
        "",
        "## On shards in a store, read one at a time (`HEAD_SHARD_PAIRS` = 65,536)",
        "",
        "| pairs | shards | head step | / in memory | same weights as in memory | held-out acc. | chosen l2 | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in sorted(rows.items()):
        st, new = row.get("stored"), row.get("new", {})
        if not st:
            continue
        if "error" in st:
            lines.append(f"| {n} | failed: {st['error']} | | | | | | |")
            continue
        vs = f"{st['seconds'] / new['seconds']:.2f}x" if "seconds" in new else "—"
        same = ("yes" if st["weights"] == new["weights"] else "NO") if "weights" in new else "—"
        lines.append(
            f"| {n} | {st['shards']} | {_fmt(st['seconds'])} | {vs} | {same} | {st['accuracy']:.4f} "
            f"| {st['l2']:g} | {st['rss_mib']:.0f} MiB |"
        )
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
