"""Put/get latency and throughput of the store backends, side by side in one run.

Backends: local disk, S3 (moto in server mode, a subprocess on 127.0.0.1, through
boto3 over HTTP), IPFS (an offline embedded Kubo behind tests/kubo_front.py, over
its RPC API). Each is measured on the bare backend, not behind the tiered cache, so
remote reads really go to the server. Small objects use put()/get(); large ones
the streaming put_file()/get_to_file() paths. Every object is fresh random bytes,
so no backend is flattered by deduplication. Every read is sha1-verified, as in use.

Run: ``.venv/bin/python bench/bench_store.py`` -> bench/results-store.md
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import LocalStore, ObjectStore  # noqa: E402

SIZES = [("10 KB", 10_000, 200), ("20 MB", 20_000_000, 8)]  # (label, bytes, iterations)
BUCKET = "bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_s3(tmp: Path) -> Iterator[ObjectStore]:
    import boto3

    from store.s3 import S3Store

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    port = _free_port()
    log = open(tmp / "moto.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield S3Store(BUCKET, "bench", endpoint_url=url)
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def kubo_ipfs(tmp: Path) -> Iterator[ObjectStore]:
    from store.ipfs import IpfsStore

    log = open(tmp / "kubo.log", "wb")
    front = ROOT / "tests" / "kubo_front.py"
    proc = subprocess.Popen(
        [sys.executable, str(front), str(tmp / "kubo")], stdout=subprocess.PIPE, stderr=log
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"Kubo front did not start; see {tmp / 'kubo.log'}")
        yield IpfsStore(f"/ip4/127.0.0.1/tcp/{line.split()[1]}", LocalStore(tmp / "ipfs-refs"))
    finally:
        proc.kill()  # the Go runtime inside ignores SIGTERM
        proc.wait()


@contextlib.contextmanager
def local(tmp: Path) -> Iterator[ObjectStore]:
    yield LocalStore(tmp / "local")


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(store: ObjectStore, size: int, n: int, tmp: Path) -> dict[str, list[float]]:
    puts: list[float] = []
    gets: list[float] = []
    names: list[str] = []
    large = size > 1_000_000
    src, dest = tmp / "src.bin", tmp / "dest.bin"
    for _ in range(n):
        data = os.urandom(size)
        if large:
            src.write_bytes(data)
            puts.append(_time(lambda: names.append(store.put_file(src))))
        else:
            puts.append(_time(lambda d=data: names.append(store.put(d))))  # type: ignore[misc]
    for sha1 in names:
        if large:
            gets.append(_time(lambda s=sha1: store.get_to_file(s, dest)))  # type: ignore[misc]
        else:
            gets.append(_time(lambda s=sha1: store.get(s)))  # type: ignore[misc]
    return {"put": puts, "get": gets}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    backends = [("local", local), ("s3 (moto server)", moto_s3), ("ipfs (Kubo 0.22 via front)", kubo_ipfs)]
    rows: list[str] = []
    started = time.monotonic()
    for name, factory in backends:
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmpdir:
            tmp = Path(tmpdir)
            with factory(tmp) as store:
                for label, size, n in SIZES:
                    results = measure(store, size, n, tmp)
                    for op, times in results.items():
                        mbps = size * len(times) / sum(times) / 1e6
                        rows.append(
                            f"| {name} | {label} | {op} | {len(times)} | {statistics.median(times) * 1e3:.2f} "
                            f"| {_pct(times, 0.95) * 1e3:.2f} | {mbps:.1f} |"
                        )
                        print(rows[-1], flush=True)
    elapsed = time.monotonic() - started
    header = [
        "# Store backend benchmark",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {elapsed:.0f} s in all. Servers on 127.0.0.1, "
        "so this measures client and server overhead, not network.",
        "Small objects: put()/get(); large: put_file()/get_to_file(). Reads verify sha1. "
        "moto is an in-memory emulator and the IPFS front copies through temp files, "
        "so the remote rows are lower bounds, not predictions for AWS or a Kubo daemon.",
        "",
        "| backend | size | op | n | median ms | p95 ms | MB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    out = ROOT / "bench" / "results-store.md"
    out.write_text("\n".join([*header, *rows]) + "\n")
    print(f"wrote {out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
