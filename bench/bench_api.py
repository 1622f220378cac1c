"""Inference latency and throughput through gunicorn, beside a direct in-process Predictor call.

Usage: .venv/bin/python bench/bench_api.py [--duration 20] [--out bench/results-api.md]

Starts the service (``python -m handlers.serve``, 2 workers) on a free loopback
port with a fresh store, trains the example data set through the API (5 epochs),
then loads ``POST /infer`` from a second process with ``wrk`` (Debian package
``wrk``) at a few concurrencies. Afterwards, with the server stopped so the two
do not share the CPU, it times ``Predictor.predict`` on the same image in this
process. Bounded: about two minutes in all on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from store import LocalStore

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from stl_testing import free_port, serve_directory  # noqa: E402

EXAMPLE = REPO / "example-data"
CONCURRENCIES = (1, 4)
LOAD_AT_START = ", ".join(f"{x:.1f}" for x in os.getloadavg())


@contextlib.contextmanager
def service(data_dir: Path, allow: str, workers: int) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "FETCH_ALLOW_HOSTS": allow, "API_TOKEN": ""}
    argv = [sys.executable, "-m", "handlers.serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    argv += ["--log-level", "warning", "--access-logfile", "/dev/null"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/healthz", timeout=5).ok:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def train(url: str, files: str) -> str:
    csv_sha1 = hashlib.sha1((EXAMPLE / "train.csv").read_bytes()).hexdigest()
    body = {
        "metadata": {"random_seed": 1234},
        "csv": {"url": f"{files}/train.csv", "sha1": csv_sha1},
    }
    deadline = time.time() + 300
    while time.time() < deadline:
        status = requests.post(url + "/train", json=body, timeout=60).json()
        if status["status"] == "ready":
            return status["model_sha1"]
        if status["status"] == "error":
            raise RuntimeError(status["message"])
        time.sleep(1)
    raise TimeoutError("training did not finish")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(url: str, body: dict, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / "infer.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    threads = min(connections, 2)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency"]
    out = subprocess.run(
        [*argv, "-s", str(script), url + "/infer"], capture_output=True, text=True, check=True
    ).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",  # type: ignore[dict-item]
    }


def direct(data_dir: Path, model_sha1: str, image: bytes, duration: float) -> dict[str, float]:
    from model.config import Settings
    from model.inference.predictor import Predictor
    from store import open_store

    settings = Settings.from_env()
    predictor = Predictor(open_store(str(data_dir)), settings)
    for _ in range(5):  # build the base network, load the head
        predictor.predict(model_sha1, [image])
    times = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        t = time.perf_counter()
        predictor.predict(model_sha1, [image])
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "rps": len(times) / sum(times) * 1e3,
        "requests": len(times),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(rows: list[tuple[str, dict]], duration: int, workers: int) -> str:
    lines = [
        "# Inference through the API vs. in process",
        "",
        "Generated by `bench/bench_api.py`; numbers from one run, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}.",
        "",
        "One 128x128 PNG from `example-data/infer/` labelled by the example model (EfficientNet-Lite0 base,",
        "224 px, trained through the API for 5 epochs). Through HTTP: `POST /infer` with the image named by",
        f"its store sha1, gunicorn with {workers} gthread workers, load from `wrk` in another process for "
        f"{duration} s per row.",
        "In process: `Predictor.predict` on the same image in a loop, one thread, with the server stopped.",
        "",
        "| path | concurrency | p50 ms | p99 ms | req/s | requests | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        conc = name.rsplit(" c=", 1)[1] if " c=" in name else "1"
        label = name.split(" c=")[0]
        lines.append(
            f"| {label} | {conc} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.1f} | {r['requests']} | "
            f"{r.get('non_2xx', 0)} |"
        )
    lines += [
        "",
        "At concurrency 1 the gap between the HTTP and in-process rows is what the service adds around",
        "the model: HTTP and JSON, the schema check, the model and image lookups in the store, and the",
        "gunicorn worker's thread handing the request over, all on the same two cores as wrk itself.",
        "At concurrency 4 both workers run TensorFlow at once on the two cores: throughput is higher and",
        "latency includes queueing. The machine is shared: the load average when the run started was",
        f"{LOAD_AT_START}, so compare rows of one run rather than runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per load level")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "results-api.md"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_api: wrk not found; install Debian's package with `apt-get install wrk`")

    image = (EXAMPLE / "infer" / "dots.png").read_bytes()
    image_sha1 = hashlib.sha1(image).hexdigest()
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data_dir, workdir = Path(tmp) / "data", Path(tmp)
        with serve_directory(EXAMPLE) as site:
            files = site.url
            port = files.rsplit(":", 1)[1]
            with service(data_dir, f"127.0.0.1:{port}", args.workers) as url:
                model_sha1 = train(url, files)
                requests.post(
                    url + "/infer",
                    json={"model": {"sha1": model_sha1}, "image": {"url": f"{files}/infer/dots.png"}},
                    timeout=120,
                ).raise_for_status()
                # Inference does not store what it fetches; put the image in so requests can name it.
                assert LocalStore(data_dir).put(image) == image_sha1
                body = {"model": {"sha1": model_sha1}, "image": {"sha1": image_sha1}}
                # Warm every worker: each builds its own base network on first use.
                run_wrk(url, body, 4, 5, workdir)
                for c in CONCURRENCIES:
                    result = run_wrk(url, body, c, args.duration, workdir)
                    if result["non_2xx"]:
                        sys.exit(f"bench_api: {result['non_2xx']} requests failed at concurrency {c}")
                    rows.append((f"HTTP (gunicorn) c={c}", result))
                    print(f"HTTP c={c}: {result}", file=sys.stderr)
        result = direct(data_dir, model_sha1, image, args.duration)
        rows.append(("in process (Predictor.predict)", result))
        print(f"direct: {result}", file=sys.stderr)
    Path(args.out).write_text(report(rows, args.duration, args.workers))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
