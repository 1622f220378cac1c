"""Memory and time of one `stl serve` worker under requests that ask for far more than they send.

Usage: .venv/bin/python bench/bench_hostile.py [--repo DIR] [--out FILE]

``--repo`` runs another checkout's code (an older commit, for a before/after table) with this
checkout's bench. One worker (gunicorn, the default gthread settings otherwise) on a fresh store
with the example model trained by the CLI; then, each measured from the worker's /proc status:

* ``64 refs``: one 3 KB ``POST /infer`` naming a stored 40 MiB non-image 64 times;
* ``8 bombs``: eight concurrent uploads of a 155 KB, 6320x6320 RGBA PNG (39.9 M pixels, just under
  ``MAX_IMAGE_PIXELS``), then the worker's resident memory after they have all ended.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repo = args.repo.resolve()
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
    lines = [
        f"code: {repo}",
        "",
        "| request | answer | time | worker RSS before | peak | after |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {status} | {took:.2f} s | {before:.0f} MiB | {peak:.0f} MiB | {after:.0f} MiB |"
            for name, status, took, before, peak, after in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
