"""How training scales: memory against rows, and feature throughput on Ray against the local executor.

Usage: .venv/bin/python bench/bench_scale.py [--out bench/results-scale.md]

* **Memory and manifest against rows.** ``stl train`` (local executor, a fresh store each)
  on CSVs of 1,000, 10,000 and 100,000 rows that list the 72 example images over and over:
  the process's peak RSS, its wall time, the manifest's size and the time to GET and parse
  it, and the row table's size.
* **Feature throughput.** The features stage alone (``model.training.pipeline.extract_features``, the
  images already in a fresh store, its feature cache cold) over the fashion-tiny photos
  (``../shared``; the example images where it is absent) with the default recipe's base and
  views: the local executor, then Ray with 1 and with 2 worker CPUs (a `ray start --head`
  cluster on this machine), each cold (first tasks start workers and load the base) and warm.
* **Ray's overhead per task.** 400 no-op chunk tasks through ``RayExecutor.map``.
* **The head.** The default head's fit on 500 to 4,000 random feature rows: what one task must do.

Ratios compare columns of this one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

EXAMPLE = REPO / "example-data"
FASHION = REPO.parent / "shared" / "datasets" / "fashion-tiny"
LOAD_AT_START = ", ".join(f"{x:.1f}" for x in os.getloadavg())
#: A cheap recipe, so that the rows, not the base network, dominate the memory runs.
CHEAP = ["--base", "efficientnet-lite0", "--image-size", "96", "--views", "original", "--seed", "1"]


def repeated_csv(path: Path, rows: int) -> Path:
    example = list(csv.reader((EXAMPLE / "train.csv").open()))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        for i in range(rows):
            source, label, sha1 = example[i % len(example)]
            out.writerow([str(EXAMPLE / source), label, sha1])
    return path


def peak_rss_run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stdout) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read().decode()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} failed")
    return usage.ru_maxrss / 1024, wall, out


def memory_against_rows(tmp: Path) -> list[dict]:
    from store import LocalStore

    results = []
    for rows in (1_000, 10_000, 100_000):
        data = tmp / f"rows-{rows}"
        table = repeated_csv(tmp / f"rows-{rows}.csv", rows)
        env = {**os.environ, "DATA_DIR": str(data), "EXECUTOR": "local"}
        rss, wall, out = peak_rss_run(
            [sys.executable, "-m", "handlers.cli", "train", str(table), *CHEAP], env
        )
        trained = json.loads(out.strip().splitlines()[-1])
        store = LocalStore(data)
        t = time.perf_counter()
        manifest = json.loads(store.get(trained["manifest_sha1"]))
        get_s = time.perf_counter() - t
        results.append(
            {
                "rows": rows,
                "peak_mib": rss,
                "wall_s": wall,
                "manifest_bytes": len(store.get(trained["manifest_sha1"])),
                "manifest_get_ms": get_s * 1000,
                "row_table_bytes": len(store.get(manifest["inputs"]["rows"]["sha1"])),
                "model": trained["model_sha1"],
            }
        )
        print(results[-1], file=sys.stderr)
    return results


def feature_images() -> tuple[list[tuple[str, Path]], str]:
    if (FASHION / "labels.csv").exists():
        rows = list(csv.DictReader((FASHION / "labels.csv").open()))
        return [(r["sha1"], FASHION / r["path"]) for r in rows], f"fashion-tiny ({len(rows)} JPEG photos)"
    rows = list(csv.reader((EXAMPLE / "train.csv").open()))
    return [(sha1, EXAMPLE / src) for src, _label, sha1 in rows], f"example-data ({len(rows)} PNGs)"


def fresh_store(root: Path, images: list[tuple[str, Path]]):
    from model.bases.registry import ensure_base_with
    from model.config import Settings
    from store import LocalStore

    store = LocalStore(root)
    for _sha1, path in images:
        store.put(path.read_bytes())
    settings = Settings.from_env()
    ensure_base_with(settings, store, settings.base)
    return store


def features_once(tmp: Path, name: str, images: list[tuple[str, Path]], executor_of) -> float:
    from dataclasses import replace

    from model.config import Settings
    from model.context import Context
    from model.data.fetch import FetchPolicy
    from model.features.chunks import Image
    from model.training.pipeline import extract_features, prepare_recipe, silent

    root = tmp / f"features-{name}-{time.monotonic_ns()}"
    store = fresh_store(root, images)
    settings = replace(Settings.from_env(), data_dir=str(root), store_uri="")
    (tmp / "f.csv").write_text("".join(f"x,{'ab'[i % 2]},{s}\n" for i, (s, _p) in enumerate(images)))
    recipe = prepare_recipe(
        Context(settings, store, FetchPolicy()), {}, None, store.put((tmp / "f.csv").read_bytes())
    )
    work = [Image(sha1, str(path), i) for i, (sha1, path) in enumerate(images)]
    executor = executor_of(store, settings)
    t = time.perf_counter()
    extract_features(executor, work, recipe, settings, silent)
    return time.perf_counter() - t


def _noop(store, chunk):
    return len(chunk)


def throughput(tmp: Path) -> tuple[list[dict], float, str]:
    # Ray reads its auth settings when first imported: the same token for both clusters.
    token = secrets.token_hex(32)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"})
    import ray
    from ray_cluster import ray_cluster

    from model.execution.local import LocalExecutor

    images, described = feature_images()
    rows = []
    local = [features_once(tmp, "local", images, lambda store, _s: LocalExecutor(store)) for _ in range(2)]
    rows.append({"executor": "local (in-process)", "cold_s": local[0], "warm_s": local[1]})
    overhead = 0.0
    for cpus in (1, 2):
        with ray_cluster(cpus=cpus, token=token) as cluster:
            os.environ.update(cluster.env)
            from model.execution.ray_tasks import RayExecutor

            def on_ray(_store, settings):
                from dataclasses import replace

                return RayExecutor(replace(settings, executor="ray", ray_address=cluster.address))

            runs = [features_once(tmp, f"ray{cpus}", images, on_ray) for _ in range(2)]
            rows.append({"executor": f"Ray, {cpus} worker CPU(s)", "cold_s": runs[0], "warm_s": runs[1]})
            if cpus == 2:
                from model.config import Settings

                executor = RayExecutor(
                    Settings(executor="ray", ray_address=cluster.address, data_dir=tmp.as_posix())
                )
                list(executor.map(_noop, [[0]] * 50))  # workers up
                t = time.perf_counter()
                assert sum(executor.map(_noop, [[0]] * 400)) == 400
                overhead = (time.perf_counter() - t) / 400
            ray.shutdown()
            for key in ("EXECUTOR", "RAY_ADDRESS"):
                os.environ.pop(key, None)
        print(rows[-1], file=sys.stderr)
    for row in rows:
        row["images_per_s"] = len(images) / row["warm_s"]
    return rows, overhead, described


def head_fit_times() -> list[tuple[int, float]]:
    """The default head (5-fold CV over the L2 grid, then a temperature) on n random 1280-d
    features of 3 labels: the one step that stays on one machine."""
    import numpy as np

    from model.head.linear import IntegerFeatures
    from model.head.products import Integers
    from model.head.train import train_logistic

    out = []
    for n in (500, 1000, 2000, 4000):
        rng = np.random.default_rng(n)
        y = np.arange(n) % 3
        x = np.clip(
            np.rint((rng.standard_normal((3, 1280))[y] * 0.3 + rng.standard_normal((n, 1280))) * 60),
            -510,
            510,
        )
        features = IntegerFeatures(Integers.of(x, 510), np.full(1280, 0.01))  # two views' integer sums
        t = time.perf_counter()
        train_logistic(features, y, 3, seed=1, l2=-1.0, calibrate=True)
        out.append((n, time.perf_counter() - t))
        print(out[-1], file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO / "bench" / "results-scale.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stl-bench-scale-") as tmp:
        memory = memory_against_rows(Path(tmp))
        speed, overhead, described = throughput(Path(tmp))
    heads = head_fit_times()
    local = speed[0]["warm_s"]
    lines = [
        "# Scale benchmark: memory against rows, features on Ray",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, load average at start {LOAD_AT_START}. One run; "
        "`.venv/bin/python bench/bench_scale.py`.",
        "",
        "## Memory and manifest against rows (local executor)",
        "",
        "`stl train` on a CSV listing the 72 example images over and over "
        f"(`{' '.join(CHEAP)}`), a fresh store each.",
        "",
        "| rows | peak RSS | wall | manifest | GET + parse manifest | row table |",
        "|---|---|---|---|---|---|",
    ]
    for m in memory:
        lines.append(
            f"| {m['rows']:,} | {m['peak_mib']:.0f} MiB | {m['wall_s']:.1f} s | "
            f"{m['manifest_bytes'] / 1024:.1f} KiB | {m['manifest_get_ms']:.1f} ms | "
            f"{m['row_table_bytes'] / 1e6:.1f} MB |"
        )
    first, last = memory[0], memory[-1]
    lines += [
        "",
        f"100,000 rows against 1,000: peak RSS x{last['peak_mib'] / first['peak_mib']:.2f}, manifest "
        f"x{last['manifest_bytes'] / first['manifest_bytes']:.2f}. Target: <= 1 GiB at 100k rows.",
        "",
        "## Feature throughput",
        "",
        f"The features stage over {described}, default base and views, cold feature cache; "
        "cold = the first run (Ray: workers start and load the base), warm = the second.",
        "",
        "| executor | cold | warm | images/s (warm) | warm vs local |",
        "|---|---|---|---|---|",
    ]
    for s in speed:
        lines.append(
            f"| {s['executor']} | {s['cold_s']:.1f} s | {s['warm_s']:.1f} s | "
            f"{s['images_per_s']:.1f} | x{local / s['warm_s']:.2f} |"
        )
    lines += [
        "",
        f"Ray's overhead per task (400 no-op chunk tasks, 2 workers): {overhead * 1000:.2f} ms.",
        "",
        "## The head, the step that stays on one machine",
        "",
        "`train_logistic` (5-fold CV over the L2 grid, then a temperature) on n random 1280-d integer features of",
        "3 labels, in this process:",
        "",
        "| distinct (image, label) pairs | fit |",
        "|---|---|",
        *[f"| {n:,} | {t:.1f} s |" for n, t in heads],
        "",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
