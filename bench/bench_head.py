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
import threading
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


def _on_shards(n: int, rows_of) -> dict:
    """This head on shards in a fresh local store, given to ``rows_of(store, refs)`` to hold."""
    from model.head import logistic
    from model.head.linear import Head, LinearMap, Moments
    from model.head.products import Integers
    from model.head.shards import store_shards
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
        with ShardHolderWatch() as watch:
            cv = logistic.cross_validate(rows_of(tmp, store, refs), y, LABELS, linear, seed=1)
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
        "workers_rss_mib": sorted(watch.peaks.values()),
        "shards": len(refs),
        "weights": _sha1(head.kernel, head.bias),
    }


class ShardHolderWatch:
    """Peak RSS of each Ray shard-holding actor on this machine, sampled every 0.2 s while a fit
    runs (the actors are gone when it returns)."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ShardHolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    if b"ray::ShardHolder" not in (status.parent / "cmdline").read_bytes():
                        continue
                    hwm = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
                except (OSError, StopIteration):
                    continue
                pid = int(status.parent.name)
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), int(hwm.split()[1]) / 1024)


def one_stored(n: int) -> dict:
    """This head on shards in a local store, read one at a time (bounded memory): the same bits."""
    from model.head.shards import InStore

    return _on_shards(n, lambda _tmp, store, refs: InStore(store, refs, BOUND))


def one_local(n: int) -> dict:
    """The same shards as ``LocalExecutor`` holds them: kept loaded up to its memory budget."""
    from model.execution.local import HEAD_MEMORY_BYTES
    from model.head.shards import InStore

    return _on_shards(n, lambda _tmp, store, refs: InStore(store, refs, BOUND, HEAD_MEMORY_BYTES))


def one_ray(n: int, workers: int) -> dict:
    """This head on shards held by ``workers`` Ray actors of a local cluster this process starts."""
    from model.config import Settings
    from model.execution.ray_shards import InRay

    def rows_of(tmp: str, _store, refs):
        os.environ["DATA_DIR"] = tmp
        return InRay(Settings.from_env(), refs, BOUND, workers)

    return _on_shards(n, rows_of)


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


DATASET = (REPO / ".." / "shared" / "datasets" / "fashion-tiny").resolve()
OUTER_FOLDS = 5


def real_features() -> tuple[np.ndarray, np.ndarray, np.ndarray, int, str]:
    """fashion-tiny's photos through the default recipe's base and views (one pair per photo):
    the integer view sums, labels, the per-column factor, the bound and the recipe's words."""
    import csv

    from model.bases.registry import ensure_base
    from model.config import Settings
    from model.features.chunks import Image, features_chunk
    from model.identity.recipe import make_recipe, parse_hyperparameters
    from store import LocalStore

    with open(DATASET / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="stl-bench-real-") as tmp:
        store = LocalStore(tmp)
        images = []
        for line, r in enumerate(rows, start=2):
            sha1 = store.put((DATASET / r["path"]).read_bytes())
            assert sha1 == r["sha1"], r["path"]
            images.append(Image(sha1, r["path"], line))
        hyper = parse_hyperparameters({}, settings)
        spec, base_sha1 = ensure_base(store, hyper["base"])
        recipe = make_recipe(hyper, "0" * 40, base_sha1, spec.native_size)
        chunk = features_chunk(store, images, recipe, settings)
    names = sorted({r["label"] for r in rows})
    y = np.array([names.index(r["label"]) for r in rows])
    words = f"{recipe.base} at {recipe.image_size} px, views {'+'.join(recipe.views)}"
    return chunk.units, y, chunk.factor, 255 * len(recipe.views), words


def one_real() -> dict:
    """This head and ``LogisticRegressionCV`` on fashion-tiny's real features: an outer 5-fold
    split (per label, photos sorted by path, every 5th to one fold), each side trained on four
    folds with its own inner CV and tested on the fifth, so every photo is held out once."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from model.head.linear import IntegerFeatures, standardisation
    from model.head.logistic import CV_FOLDS, L2_GRID
    from model.head.products import Integers
    from model.head.train import train_logistic

    t = time.perf_counter()
    units, y, factor, bound, words = real_features()
    extract_seconds = time.perf_counter() - t
    outer = np.zeros(len(y), np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        outer[idx] = np.arange(len(idx)) % OUTER_FOLDS
    ours = {"seconds": 0.0, "right": 0, "l2": []}
    theirs = {"seconds": 0.0, "right": 0, "l2": []}
    for fold in range(OUTER_FOLDS):
        tr, te = outer != fold, outer == fold
        features = IntegerFeatures(Integers.of(units[tr], bound), factor)
        t = time.perf_counter()
        result = train_logistic(features, y[tr], int(y.max()) + 1, seed=1, l2=-1.0, calibrate=True)
        ours["seconds"] += time.perf_counter() - t
        p = result.head.probabilities(Integers.of(units[te], bound))
        ours["right"] += int((p.argmax(axis=1) == y[te]).sum())
        ours["l2"].append(result.head.l2)
        mean, scale = standardisation(features)
        n = int(tr.sum())
        t = time.perf_counter()
        cv = LogisticRegressionCV(
            Cs=[1.0 / (2.0 * l2 * n) for l2 in L2_GRID],
            cv=StratifiedKFold(CV_FOLDS, shuffle=True, random_state=1),
            tol=1e-6,
            max_iter=300,
        ).fit((units[tr] * factor - mean) * scale, y[tr])
        theirs["seconds"] += time.perf_counter() - t
        theirs["right"] += int((cv.predict((units[te] * factor - mean) * scale) == y[te]).sum())
        theirs["l2"].append(1.0 / (2 * float(cv.C_[0]) * n))
    return {
        "photos": len(y),
        "dim": units.shape[1],
        "recipe": words,
        "extract_seconds": extract_seconds,
        "this": ours,
        "sklearn": theirs,
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


def run_one(kind: str, n: int, old_tree: Path | None = None, extra_env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": str(old_tree) if old_tree else str(REPO)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, str(n)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


sys.path.insert(0, str(REPO / "tests"))
from ray_cluster import ray_cluster  # noqa: E402 - the tests' real cluster: `ray start --head`, 2 CPUs

PARTS = ("products", "head", "stored", "ray", "real")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS), help="which sections to run and rewrite")
    parser.add_argument("--sizes", default="2000,4000,16000,128000")
    parser.add_argument("--old-sizes", default="2000,4000,16000")
    parser.add_argument("--stored-sizes", default="128000,1000000")
    parser.add_argument("--ray-sizes", default="128000")
    parser.add_argument("--old", default="6d29c2b")
    parser.add_argument("--out", default=str(REPO / "bench" / "results-head.md"))
    parser.add_argument("--one", nargs=2)
    args = parser.parse_args()
    if args.one:
        kind, n = args.one[0], int(args.one[1])
        if kind == "old":  # the old worktree must win over this checkout
            sys.path.insert(0, os.environ["PYTHONPATH"])
        kinds = {
            "new": one_new,
            "stored": one_stored,
            "local": one_local,
            "old": one_old,
            "sklearn": one_sklearn,
            "ray1": functools.partial(one_ray, workers=1),
            "ray2": functools.partial(one_ray, workers=2),
            "real": lambda _n: one_real(),
        }
        print(json.dumps(kinds[kind](n)))
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")

    def sizes(text: str, part: str) -> list[int]:
        return [int(s) for s in text.split(",") if s] if part in parts else []

    sections: dict[str, list[str]] = {}
    if "products" in parts:
        prods = [products_row(n, 3) for n in (8192, 32768, 131072)] + [products_row(32768, 36)]
        for row in prods:
            print(row, file=sys.stderr)
        sections[PRODUCTS] = products_section(prods)
    head_sizes, old_sizes = sizes(args.sizes, "head"), sizes(args.old_sizes, "head")
    stored_sizes, ray_sizes = sizes(args.stored_sizes, "stored"), sizes(args.ray_sizes, "ray")
    rows: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="stl-bench-head-") as tmp:
        tree = Path(tmp) / "old"
        if old_sizes:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.old],
                check=True,
                capture_output=True,
            )
        try:
            for n in sorted(set(head_sizes) | set(old_sizes) | set(stored_sizes) | set(ray_sizes)):
                row = rows.setdefault(n, {})
                if n in stored_sizes or n in ray_sizes:
                    row["stored"] = run_one("stored", n)
                if n in ray_sizes:
                    row["local"] = run_one("local", n)
                    with ray_cluster(cpus=2) as cluster:
                        row["ray1"] = run_one("ray1", n, extra_env=cluster.env)
                        row["ray2"] = run_one("ray2", n, extra_env=cluster.env)
                if n in old_sizes:
                    row["old"] = run_one("old", n, tree)
                if n in head_sizes:
                    row["new"] = run_one("new", n)
                    row["sklearn"] = run_one("sklearn", n)
                print(n, row, file=sys.stderr)
        finally:
            if old_sizes:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
                )
    if "head" in parts:
        sections[HEAD] = head_section(rows)
    if "stored" in parts:
        sections[STORED] = stored_section(rows)
    if "ray" in parts:
        sections[RAY] = ray_section(rows)
    if "real" in parts:
        real = run_one("real", 0)
        print(real, file=sys.stderr)
        sections[REAL] = real_section(real)
    write(Path(args.out), sections, args.old, parts)


def _fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.3g} {unit}".strip()


PRODUCTS = "## Products `(n, 1280) x (1280, k)` (best of 3)"
HEAD = "## The head step (5-fold CV over 6 strengths, final fit, temperature)"
STORED = "## On shards in a store, read one at a time (`HEAD_SHARD_PAIRS` = 65,536)"
RAY = "## On shards held by Ray actors (a local cluster on this machine)"
REAL = "## Real features: fashion-tiny, one pair per photo"
#: Sections in the order the file keeps them; hand-written ones (``## Reading it``) follow.
ORDER = (PRODUCTS, HEAD, STORED, RAY, REAL)


def products_section(prods: list[dict]) -> list[str]:
    lines = [
        "| n | k | plain BLAS | exact split | ratio | plain `X.T @ G` | exact split | ratio | old tree-sum | old / plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in prods:
        old_ratio = f"{p['old'] / p['plain']:.1f}x" if p["old"] else "—"
        lines.append(
            f"| {p['n']} | {p['k']} | {_fmt(p['plain'])} | {_fmt(p['split'])} | {p['split'] / p['plain']:.2f}x "
            f"| {_fmt(p['plain_t'])} | {_fmt(p['split_t'])} | {p['split_t'] / p['plain_t']:.2f}x | {_fmt(p['old'])} | {old_ratio} |"
        )
    return lines


def head_section(rows: dict[int, dict[str, dict]]) -> list[str]:
    lines = [
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
    return lines


def stored_section(rows: dict[int, dict[str, dict]]) -> list[str]:
    lines = [
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
    return lines


def ray_section(rows: dict[int, dict[str, dict]]) -> list[str]:
    lines = [
        "One cluster for both runs (`ray start --head`, 2 CPUs, as `tests/ray_cluster.py` starts it); "
        "each actor takes one CPU, so its BLAS runs one thread. The actors read their shards from a "
        "local store; the time includes starting them and that reading, not starting the cluster.",
        "",
        "| pairs | shards | held by | head step | / `LocalExecutor` | weights | peak RSS driver / each actor |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, row in sorted(rows.items()):
        local = row.get("local")
        if not local or ("ray1" not in row and "ray2" not in row):
            continue
        held_by = (
            ("one process, read from the store each round", "stored"),
            ("one process, kept loaded (`LocalExecutor`, up to 1 GiB)", "local"),
            ("1 Ray actor", "ray1"),
            ("2 Ray actors", "ray2"),
        )
        for name, key in held_by:
            r = row.get(key, {})
            if "error" in r or "seconds" not in r:
                lines.append(f"| {n} | | {name} | failed: {r.get('error', '?')} | | | |")
                continue
            vs = f"{r['seconds'] / local['seconds']:.2f}x" if "seconds" in local else "—"
            same = r["weights"][:8] + "…" + ("" if r["weights"] == local.get("weights") else " (DIFFERENT)")
            actors = " / ".join(f"{m:.0f}" for m in r.get("workers_rss_mib", [])) or "—"
            lines.append(
                f"| {n} | {r['shards']} | {name} | {_fmt(r['seconds'])} | {vs} | {same} | {r['rss_mib']:.0f} / {actors} MiB |"
            )
    return lines


def real_section(real: dict) -> list[str]:
    if "error" in real:
        return [f"Failed: {real['error']}"]
    ours, theirs = real["this"], real["sklearn"]
    n = real["photos"]
    return [
        f"{n} photos (blouse, halter, sweater) through {real['recipe']}: {real['dim']} integer "
        f"columns, features extracted in {_fmt(real['extract_seconds'])}. An outer {OUTER_FOLDS}-fold "
        "split (per label, sorted by path) holds every photo out once; each side fits on the other "
        "four folds with its own inner 5-fold CV over the same grid, tolerance and iterations.",
        "",
        "| | head step, 5 outer folds | / sklearn | held-out right | held-out acc. | chosen l2 per fold |",
        "|---|---|---|---|---|---|",
        f"| this head | {_fmt(ours['seconds'])} | {ours['seconds'] / theirs['seconds']:.2f} | {ours['right']} / {n} "
        f"| {ours['right'] / n:.4f} | {', '.join(f'{v:g}' for v in ours['l2'])} |",
        f"| `LogisticRegressionCV` | {_fmt(theirs['seconds'])} | 1.00 | {theirs['right']} / {n} "
        f"| {theirs['right'] / n:.4f} | {', '.join(f'{v:g}' for v in theirs['l2'])} |",
    ]


def write(path: Path, sections: dict[str, list[str]], old: str, parts: list[str]) -> None:
    """Rewrite the sections this run measured; keep the others (and hand-written notes) as they were."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    kept: dict[str, str] = {}
    if path.exists():
        text = path.read_text()
        for chunk in ("\n" + text).split("\n## ")[1:]:
            heading, _, body = chunk.partition("\n")
            kept["## " + heading] = body.strip("\n")
    stamp = (
        f"Measured {time.strftime('%Y-%m-%d')} by `python bench/bench_head.py --parts {','.join(parts)}` on "
        f"{os.cpu_count()} cores ({cpu}); numpy's OpenBLAS, its default threads; ratios within a section are "
        "from that one run."
    )
    for heading, lines in sections.items():
        kept[heading] = "\n".join([stamp, "", *lines])
    out = [
        "# Head benchmark: exact products on BLAS, the head step against the previous head and scikit-learn",
        "",
        f"Each section says which run measured it; the old head is `{old}`.",
    ]
    for heading in [h for h in ORDER if h in kept] + [h for h in kept if h not in ORDER]:
        out += ["", heading, "", kept[heading]]
    path.write_text("\n".join(out) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
