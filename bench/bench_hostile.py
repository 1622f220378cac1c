"""Memory and time of one `stl serve` worker under requests that ask for far more than they send.

Usage: .venv/bin/python bench/bench_hostile.py [--repo DIR] [--out FILE] [--intake [--folder-entries N,...]]

``--repo`` runs another checkout's code (an older commit, for a before/after table) with this
checkout's bench. One worker (`stl serve`'s settings otherwise: 4 threads) on a fresh store
with the example model trained by the CLI; then, each measured from the worker's /proc status:

* ``64 refs``: one 3 KB ``POST /infer`` naming a stored 40 MiB non-image 64 times;
* ``8 bombs``: eight concurrent uploads of a 155 KB, 6320x6320 RGBA PNG (39.9 M pixels, just under
  ``MAX_IMAGE_PIXELS``), then the worker's resident memory after they have all ended;
* ``stalled``: N connections that send half a head, one byte, or a body's first 5 of 1000000
  bytes and stall (the three of issue 25), held while another client asks ``/livez`` 5 times
  (each with a 10 s limit), then how many of the stalled ones the server closed within 45 s;
* ``keep-alive``: 500 ``GET /livez`` one after another on one connection, and 500 more from 8
  clients at once: what the worker's own reading costs a normal request.

``--intake`` measures issue 44's zips and folders instead (``intake_rows``), each while another
client asks ``/livez`` every 0.5 s with a 1 s limit.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from stl_testing import free_port  # noqa: E402

MIB = 2**20


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh (Linux: 5 in clear_refs), so each request's peak is its own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@contextlib.contextmanager
def worker(repo: Path, data: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "PYTHONPATH": str(repo), "API_TOKEN": ""}
    argv = [sys.executable, "-m", "handlers.serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    proc = subprocess.Popen(
        [*argv, "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=repo,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/readyz", timeout=30).ok:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.3)
        [pid] = map(
            int, subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        )
        yield url, pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


STALLS = [
    b"GET /livez HTTP/1.1\r\nHo",
    b"G",
    b"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n12345",
]


def stalled_connections(url: str, pid: int, count: int, wait_close_s: float) -> tuple:
    """The ``stalled`` row: (count, /livez answered of 5, median and worst /livez s, RSS delta MiB,
    closed by the server within wait_close_s, median s until closed)."""
    host, port = url.removeprefix("http://").split(":")
    rss, _ = memory(pid)
    socks = []
    for i in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(STALLS[i % 3])
        socks.append(sock)
    opened = time.monotonic()
    time.sleep(0.5)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/livez", timeout=10).ok:
                times.append(time.perf_counter() - started)
    grown = memory(pid)[0] - rss
    closed = []
    if wait_close_s:

        def until_closed(sock: socket.socket) -> float | None:
            sock.settimeout(max(0.1, opened + wait_close_s - time.monotonic()))
            try:
                while sock.recv(65536):
                    pass
            except TimeoutError:
                return None
            except OSError:
                pass
            return time.monotonic() - opened

        with ThreadPoolExecutor(len(socks)) as pool:
            closed = [t for t in pool.map(until_closed, socks) if t is not None]
    for sock in socks:
        sock.close()
    return (
        count, len(times), statistics.median(times) if times else None, max(times, default=None), grown,
        len(closed), statistics.median(closed) if closed else None,
    )  # fmt: skip


def keepalive_requests(url: str) -> tuple[float, float]:
    """Seconds for 500 sequential /livez on one connection, and for 500 from 8 clients at once."""
    with requests.Session() as session:
        session.get(url + "/livez")
        started = time.perf_counter()
        for _ in range(500):
            session.get(url + "/livez")
        sequential = time.perf_counter() - started

    def client(_: int) -> None:
        with requests.Session() as session:
            for _ in range(500 // 8 + 1):
                session.get(url + "/livez")

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    return sequential, time.perf_counter() - started


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


# -- issue 44: zips and folders ----------------------------------------------------------


@contextlib.contextmanager
def livez_probes(url: str) -> Iterator[list[float | None]]:
    """/livez every 0.5 s (1 s limit) while the block runs: each answer's seconds, None where none came."""
    seen: list[float | None] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = requests.get(url + "/livez", timeout=1).ok
            except requests.RequestException:
                ok = False
            seen.append(time.perf_counter() - started if ok else None)
            stop.wait(0.5)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def _zip(entries: list[tuple[str, bytes]], comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
        z.comment = comment
    return out.getvalue()


def _variants(archive: bytes, n: int) -> list[bytes]:
    """``n`` archives that differ in their one-byte comment only (so in their sha1)."""
    return [archive[:-1] + bytes([48 + i]) for i in range(n)]


def intake_rows(repo: Path, data: Path, folder_sizes: list[int]) -> str:
    """The rows of issue 44: a folder request naming one stored 50 MB PNG-headed object N times; a
    stored bomb zip (80 entries of 50 MB that start like a PNG, in about 4 MB) posted, polled
    once, polled by 8 at once; 8 different bombs at once; 8 different 500,000-entry zips at once."""
    sys.path.insert(0, str(repo))
    from store import LocalStore

    store = LocalStore(data)
    fifty = b"\x89PNG\r\n\x1a\n" + bytes(50 * 10**6 - 8)
    big = store.put(fifty)
    small = [
        store.put((REPO / "example-data" / "images" / "dots" / f"00{i}.png").read_bytes()) for i in (0, 1)
    ]
    bomb = _zip([(f"{label}/{i}.png", fifty) for label in "ab" for i in range(40)], b"0")
    bombs = [store.put(b) for b in _variants(bomb, 9)]
    many = _zip([(f"notes/{i}.txt", b"") for i in range(500_000)], b"0")
    manys = [store.put(b) for b in _variants(many, 8)]
    rows = []
    with worker(repo, data) as (url, pid):

        def post(body: dict) -> int:
            return requests.post(url + "/train", json=body, timeout=900).status_code

        def measure(name: str, bodies: list[dict]) -> None:
            reset_peak(pid)
            started = time.perf_counter()
            with livez_probes(url) as probes, ThreadPoolExecutor(len(bodies)) as pool:
                statuses = sorted(pool.map(post, bodies))
            took = time.perf_counter() - started
            answered = [p for p in probes if p is not None]
            rows.append(
                (
                    name,
                    statuses,
                    took,
                    memory(pid)[1],
                    len(answered),
                    len(probes),
                    max(answered, default=None),
                )
            )

        for n in folder_sizes:
            files = [{"path": f"a/{i}.png", "sha1": big} for i in range(n)]
            files += [{"path": f"b/{i}.png", "sha1": s} for i, s in enumerate(small)]
            measure(f"folder: {n} entries naming one 50 MB object", [{"folder": {"files": files}}])
        body = {"zip": {"sha1": bombs[0]}}
        measure(f"bomb zip ({len(bomb) // 1000} KB, 4 GB unpacked): first request", [body])
        measure("the same bomb: one poll", [body])
        measure("the same bomb: 8 polls at once", [body] * 8)
        measure("8 different bombs at once", [{"zip": {"sha1": s}} for s in bombs[1:]])
        measure(
            f"8 different 500,000-entry zips ({len(many) // 10**6} MB) at once",
            [{"zip": {"sha1": s}} for s in manys],
        )
    lines = [
        f"code: {repo}",
        "",
        "| request | answers | time | worker peak | /livez answered within 1 s | worst /livez |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {' '.join(map(str, statuses))} | {took:.2f} s | {peak:.0f} MiB | {ok} of {n} | {_s(worst)} |"
            for name, statuses, took, peak, ok, n, worst in rows
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--intake", action="store_true", help="zips and folders (issue 44) instead")
    parser.add_argument("--folder-entries", default="100,1000", help="sizes of the folder request")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if args.intake:
        with tempfile.TemporaryDirectory() as tmp:
            text = intake_rows(repo, Path(tmp) / "data", [int(n) for n in args.folder_entries.split(",")])
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {**os.environ, "DATA_DIR": str(data), "PYTHONPATH": str(repo)}
        trained = subprocess.run(
            [sys.executable, "-m", "handlers.cli", "train", str(REPO / "example-data" / "train.csv")],
            cwd=repo, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        model = json.loads(trained.stdout.splitlines()[-1])["model_sha1"]
        sys.path.insert(0, str(repo))
        from store import LocalStore

        blob = LocalStore(data).put(bytes(range(256)) * (40 * MIB // 256))
        out = io.BytesIO()
        Image.new("RGBA", (6320, 6320)).save(out, "PNG")
        bomb = out.getvalue()
        small = (REPO / "example-data" / "infer" / "dots.png").read_bytes()
        rows = []
        with worker(repo, data) as (url, pid):
            requests.post(url + "/infer", data={"model_sha1": model}, files={"image": ("a.png", small)})
            reset_peak(pid)
            rss, _ = memory(pid)
            started = time.perf_counter()
            body = {"model": {"sha1": model}, "images": [{"sha1": blob}] * 64}
            status = requests.post(url + "/infer", json=body, timeout=600).status_code
            took = time.perf_counter() - started
            rows.append(("64 refs to a 40 MiB non-image", status, took, rss, memory(pid)[1], memory(pid)[0]))
            reset_peak(pid)
            rss, _ = memory(pid)

            def label(_: int) -> int:
                files = {"image": ("bomb.png", bomb)}
                return requests.post(
                    url + "/infer", data={"model_sha1": model}, files=files, timeout=600
                ).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                statuses = set(pool.map(label, range(8)))
            took = time.perf_counter() - started
            time.sleep(1)
            after, peak = memory(pid)
            rows.append(
                (f"8 concurrent {len(bomb) // 1024} KB 39.9 Mpx PNGs", statuses, took, rss, peak, after)
            )
            stalls = [stalled_connections(url, pid, 64, 45.0), stalled_connections(url, pid, 512, 0)]
            sequential, concurrent = keepalive_requests(url)
    lines = [
        f"code: {repo}",
        "",
        "| request | answer | time | worker RSS before | peak | after |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {status} | {took:.2f} s | {before:.0f} MiB | {peak:.0f} MiB | {after:.0f} MiB |"
            for name, status, took, before, peak, after in rows
        ),
        "",
        "| stalled connections | /livez answered | median | worst | worker RSS growth | closed in 45 s | median close |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {n} | {ok} of 5 | {_s(median)} | {_s(worst)} | {grown:+.1f} MiB | "
            + (f"{closed} of {n} | {_s(close_at)} |" if n == 64 else "(not waited) | - |")
            for n, ok, median, worst, grown, closed, close_at in stalls
        ),
        "",
        f"500 keep-alive /livez one after another: {sequential:.2f} s; 500 from 8 clients at once: {concurrent:.2f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
