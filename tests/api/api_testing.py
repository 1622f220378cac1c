"""Helpers for the API tests: a file server for the service's data, gunicorn running the service.

Everything listens on 127.0.0.1 only. The service is started exactly as in
production (``python -m handlers.serve``), with two workers so that polling,
concurrency and worker-death recovery are tested across processes.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
from stl_testing import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "example-data"
LABELS = ("checks", "dots", "stripes")
LEASE_TTL = 4.0
MAX_DOWNLOAD_BYTES = 1_000_000
TOKEN = "test-token-5f1c"
#: Hyperparameters for every training in these tests (the logistic head takes no epochs).
FAST: dict[str, Any] = {}
TRAIN_TIMEOUT = 240.0


# -- the file server -----------------------------------------------------------


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, ``/redirect?to=URL`` (every hop is checked), ``/slow/...`` (0.5 s a file), ``/trickle``."""

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(0.5)
            self.path = self.path[len("/slow") :]
        parsed = urlparse(self.path)
        if parsed.path == "/trickle":
            self._trickle()
            return
        if parsed.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parsed.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def _trickle(self) -> None:
        # Headers, then a byte every 0.2 s: each read is quick, the whole download is not.
        self.send_response(200)
        self.send_header("Content-Length", "300")
        self.end_headers()
        for _ in range(300):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Site:
    root: Path
    url: str
    port: int

    def csv_sha1(self, name: str = "train.csv") -> str:
        import hashlib

        return hashlib.sha1((self.root / name).read_bytes()).hexdigest()


def _build_site(root: Path) -> None:
    """The example data plus files that are wrong in one way each."""
    for name in ("train.csv",):
        shutil.copy(EXAMPLE / name, root / name)
    for sub in ("images", "infer"):
        shutil.copytree(EXAMPLE / sub, root / sub)
    rows = (EXAMPLE / "train.csv").read_text().splitlines()
    (root / "bad.csv").write_text("images/dots/000.png,dots\n")
    (root / "one_label.csv").write_text("\n".join(r for r in rows if ",dots," in r) + "\n")
    source, label, sha1 = rows[0].split(",")
    wrong = "0" * 40 if sha1 != "0" * 40 else "1" * 40
    (root / "mismatch.csv").write_text("\n".join([f"{source},{label},{wrong}", *rows[1:]]) + "\n")
    (root / "not_image.png").write_bytes(b"this is plain text, not a PNG\n" * 10)
    (root / "big.bin").write_bytes(b"\0" * (MAX_DOWNLOAD_BYTES + 1))


# -- the service ---------------------------------------------------------------


@contextlib.contextmanager
def serve_site(root: Path) -> Iterator[Site]:
    _build_site(root)
    handler = functools.partial(_SiteHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Site(root, f"http://127.0.0.1:{port}", port)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Api:
    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    token: str = ""

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**out, **(extra or {})}

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw["headers"] = self.headers(kw.get("headers"))
        return requests.get(self.url + path, timeout=60, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        kw["headers"] = self.headers(kw.get("headers"))
        return requests.delete(self.url + path, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        kw["headers"] = self.headers(kw.get("headers"))
        return requests.post(self.url + path, timeout=120, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return {int(p) for p in out.stdout.split()}

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while len(self.worker_pids()) < n:
            if time.time() > deadline:
                raise TimeoutError(
                    f"gunicorn has not got {n} workers after {timeout}s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.2)


@contextlib.contextmanager
def run_api(tmp: Path, env: dict[str, str], workers: int = 2, token: str = "") -> Iterator[Api]:
    port = free_port()
    data_dir = tmp / "data"
    log_path = tmp / "gunicorn.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FETCH_", "API_", "IMPORT_", "STORE_"))},
        "DATA_DIR": str(data_dir),
        "LEASE_TTL": str(LEASE_TTL),
        "MAX_DOWNLOAD_BYTES": str(MAX_DOWNLOAD_BYTES),
        "API_TOKEN": token,
        **env,
    }
    argv = [sys.executable, "-m", "handlers.serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    # Append mode: the master and its workers all write this file, and opened with "wb" lines
    # went missing (32 of 60 "training started" lines in one run of 60 trainings; none with "ab").
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    api = Api(f"http://127.0.0.1:{port}", data_dir, log_path, process, token)
    try:
        deadline = time.time() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{api.log()[-3000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(api.url + "/healthz", timeout=5).ok:
                    break
            if time.time() > deadline:
                raise TimeoutError(f"gunicorn did not answer /healthz:\n{api.log()[-3000:]}")
            time.sleep(0.2)
        api.wait_for_workers(workers)
        yield api
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- training helpers ------------------------------------------------------------


def train_body(site: Site, csv: str = "train.csv", with_sha1: bool = True, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"random_seed": 1234, **FAST, **metadata},
        "model": {"uri": ""},
        "csv": {"url": f"{site.url}/{csv}"},
    }
    if with_sha1:
        body["csv"]["sha1"] = site.csv_sha1(csv)
    return body


def poll_until_done(
    api: Api, body: dict[str, Any], timeout: float = TRAIN_TIMEOUT, answered_at: list[float] | None = None
) -> list[requests.Response]:
    """POST the same train request until it is ready or failed; every response, in order.

    ``answered_at`` collects the time each response arrived (the server shares this clock).
    """
    responses = []
    deadline = time.time() + timeout
    while True:
        r = api.post("/train", json=body)
        if answered_at is not None:
            answered_at.append(time.time())
        assert r.status_code == 200, r.text
        responses.append(r)
        if r.json()["status"] in ("ready", "error"):
            return responses
        if time.time() > deadline:
            raise TimeoutError(f"training not done after {timeout}s: {r.json()}\n{api.log()[-3000:]}")
        time.sleep(0.5)


def error_of(r: Any, status: int) -> str:
    """The one-line error of a JSON error answer, after checking its status and shape."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    return body["error"]
