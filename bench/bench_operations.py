"""What the operations features cost and buy, measured side by side in one run.

Usage: .venv/bin/python bench/bench_operations.py [--rounds 3] [--out bench/results-operations.md]

* **Readiness.** A fresh one-worker service with PRELOAD_BASE=1 is asked for ``/readyz``
  until it answers 200, then its first ``/infer`` is timed; beside it the same with
  PRELOAD_BASE=0, where ``/readyz`` answers at once and the first ``/infer`` builds the base.
* **Progress.** The example training (in-process, a fresh store each round) with its
  progress written to the store, against the same training with no progress at all.
* **Metrics.** ``/livez`` through gunicorn, scraped or not: the per-request cost of counting.
* **Export.** Time to export the example model, the file's size, and one image through the
  exported ``.tflite`` against the service's ``Predictor``.
* **gc.** Mark and sweep of the example store after its model is deleted: time, objects, bytes.

Every figure is a median over ``--rounds``; ratios compare columns of this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from stl_testing import free_port  # noqa: E402

EXAMPLE = REPO / "example-data"
IMAGE = EXAMPLE / "infer" / "dots.png"
LOAD_AT_START = ", ".join(f"{x:.1f}" for x in os.getloadavg())


@contextlib.contextmanager
def service(data_dir: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    full = {**os.environ, "DATA_DIR": str(data_dir), "API_TOKEN": "", **env}
    argv = [sys.executable, "-m", "handlers.serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    argv += ["--log-level", "warning", "--access-logfile", "/dev/null"]
    proc = subprocess.Popen(argv, cwd=REPO, env=full, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/livez", timeout=5).ok:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def first_infer(store_dir: Path, model_sha1: str, preload: bool) -> tuple[float, float]:
    """(seconds from start until /readyz is 200, seconds of the first /infer after that)."""
    with service(store_dir, {"PRELOAD_BASE": "1" if preload else "0"}) as url:
        started = time.perf_counter()
        while requests.get(url + "/readyz", timeout=30).status_code != 200:
            time.sleep(0.02)
        ready = time.perf_counter() - started
        t = time.perf_counter()
        with open(IMAGE, "rb") as f:
            r = requests.post(
                url + "/infer", data={"model_sha1": model_sha1}, files={"image": f}, timeout=120
            )
        assert r.status_code == 200, r.text
        return ready, time.perf_counter() - t


def train_example(store_dir: Path, with_progress: bool) -> float:
    from model.api import Context
    from model.jobs import state as jobs
    from model.training.pipeline import prepare_recipe, silent, train_model

    ctx = Context.open(str(store_dir))
    recipe = prepare_recipe(ctx, {}, str(EXAMPLE / "train.csv"), None)
    started = time.perf_counter()
    if with_progress:
        jobs.wait_or_run(
            ctx.store,
            recipe.sha1,
            "bench",
            30.0,
            lambda progress: train_model(ctx, recipe, str(EXAMPLE / "train.csv"), progress),
        )
    else:
        train_model(ctx, recipe, str(EXAMPLE / "train.csv"), silent)
    return time.perf_counter() - started


def livez_latency(url: str, n: int = 300) -> float:
    session = requests.Session()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        session.get(url + "/livez", timeout=30)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results-operations.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stl-bench-ops-"))
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    from model import api
    from model.jobs import state as jobs
    from model.lifecycle import gc
    from model.lifecycle.export import export_bytes

    base = work / "base-store"
    model = api.train(str(EXAMPLE / "train.csv"), store=str(base))  # the default recipe, once
    for r in range(args.rounds):
        # Progress on and off, alternating which goes first.
        order = (True, False) if r % 2 == 0 else (False, True)
        for with_progress in order:
            d = work / f"train-{r}-{with_progress}"  # a fresh store: every feature computed
            add(f"train, progress {'on' if with_progress else 'off'} (s)", train_example(d, with_progress))
        for preload in (True, False) if r % 2 == 0 else (False, True):
            ready, first = first_infer(base, model.sha1, preload)
            tag = "preload on" if preload else "preload off"
            add(f"start to /readyz 200, {tag} (s)", ready)
            add(f"first /infer after ready, {tag} (s)", first)
        with service(base, {"PRELOAD_BASE": "0"}) as url:
            livez_latency(url, 50)  # warm
            add("/livez median through gunicorn, metrics counted (ms)", 1000 * livez_latency(url))

    t = time.perf_counter()
    data = export_bytes(model.ctx.store, model.sha1)
    add("export (s)", time.perf_counter() - t)
    add("export size (MB)", len(data) / 1e6)
    from ai_edge_litert.interpreter import Interpreter

    from model.data.images import decode_image

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    raw = IMAGE.read_bytes()
    for _ in range(5):
        t = time.perf_counter()
        for spec in inputs:
            interpreter.set_tensor(
                spec["index"], decode_image(raw, int(spec["shape"][1]), 40_000_000, "x")[None]
            )
        interpreter.invoke()
        add("one image through the exported .tflite, decode included (ms)", 1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        model.predict([raw])
        add("one image through Predictor, decode included (ms)", 1000 * (time.perf_counter() - t))

    jobs.delete(model.ctx.store, model.sha1)
    t = time.perf_counter()
    report = gc.collect(model.ctx.store, grace_s=0, delete=True)
    add("gc after deleting the example model (s)", time.perf_counter() - t)
    summary = report.summary()

    lines = [
        "# Operations: readiness, progress, metrics, export, gc",
        "",
        f"`bench/bench_operations.py`, one run, {args.rounds} rounds (medians); {platform.node()}, "
        f"{os.cpu_count()} cores, load at start {LOAD_AT_START}. The example data set (72 PNGs), "
        "the default recipe (Lite2, mirrored + center, logistic head).",
        "",
        "| measure | median | rounds |",
        "|---|---|---|",
    ]
    for name, values in rows.items():
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {', '.join(f'{v:.3f}' for v in values)} |"
        )
    ratio = lambda a, b: statistics.median(rows[a]) / statistics.median(rows[b])  # noqa: E731
    lines += [
        "",
        "Ratios from this run:",
        "",
        f"- first /infer, preload on / off: {ratio('first /infer after ready, preload on (s)', 'first /infer after ready, preload off (s)'):.2f}x",
        f"- training, progress on / off: {ratio('train, progress on (s)', 'train, progress off (s)'):.3f}x",
        f"- one image, exported .tflite / Predictor: {ratio('one image through the exported .tflite, decode included (ms)', 'one image through Predictor, decode included (ms)'):.2f}x",
        f"- gc: {summary['deleted']} of {summary['objects']} objects deleted, "
        f"{summary['deletable_bytes'] / 1e6:.1f} MB, {summary['cache_entries_dropped']} cache entries dropped",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
