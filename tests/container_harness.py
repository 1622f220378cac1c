"""A real Docker engine for the container tests, on a machine with no registry and no bridge.

Debian's ``dockerd`` runs with its own data root, exec root, pidfile and socket, and with no
bridge and no iptables (``--bridge=none``): builds and containers use the host's network. No
registry is reachable, so ``python:3.11-slim`` is stood in for: Debian bookworm made with
``debootstrap --variant=minbase`` and imported, plus Debian's python3 in a venv at /usr/local.
That stand-in trusts this machine's local CA certificates (a proxy re-signs PyPI's TLS here); the
project's own Dockerfile knows nothing of it. The debootstrap root and the engine's data root are
kept under ``STL_CI_CACHE`` (default /var/cache/stl-ci), so later runs reuse them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from stl_testing import EXAMPLE, REPO, missing_tool

CACHE = Path(os.environ.get("STL_CI_CACHE", "/var/cache/stl-ci"))
#: The project's image as the container and compose tests build it.
PROJECT_IMAGE = "static-transfer-learning:ci"
#: The model example-data/train.json (seed 1234) gives everywhere: make demo's, the CLI's, the container's.
GOLDEN_MODEL = "7aa64230f910aa6116f6ddb9966dc13b3307f156"
DEBIAN_IMAGE = "local/debian:bookworm-minbase"
PYTHON_IMAGE = "local/python:3.11-slim"
LOCAL_CA = Path("/usr/local/share/ca-certificates")

STAND_IN = """\
FROM {debian}
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       python3 python3-venv ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/* \\
    && update-ca-certificates >/dev/null \\
    && python3 -m venv /usr/local \\
    && ln -sf /usr/local/bin/python3 /usr/local/bin/python
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
"""


@dataclass
class Docker:
    socket: Path

    def run(
        self, *args: str, timeout: float = 1800, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args],
            capture_output=True, text=True, timeout=timeout, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0


@contextlib.contextmanager
def docker_engine() -> Iterator[Docker]:
    """Start dockerd for the session (as root), and stop it afterwards."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        missing_tool("the Docker engine is not installed (Debian package docker.io)")
    if os.geteuid() != 0:
        missing_tool("the container tests start dockerd, which needs root")
    CACHE.mkdir(parents=True, exist_ok=True)
    pidfile = CACHE / "dockerd.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pidfile.read_text()), 9)  # a leftover from a run that was killed
        time.sleep(1)
    sock = CACHE / "docker.sock"
    log = open(CACHE / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [
            "dockerd", "--storage-driver=overlay2", "--iptables=false", "--ip6tables=false",
            "--ip-masq=false", "--bridge=none", f"--data-root={CACHE / 'docker'}",
            f"--exec-root={CACHE / 'exec'}", f"--pidfile={pidfile}", "-H", f"unix://{sock}",
        ],
        stdout=log, stderr=log,
    )  # fmt: skip
    docker = Docker(sock)
    try:
        deadline = time.monotonic() + 60
        while docker.run("info", check=False, timeout=30).returncode != 0:
            assert proc.poll() is None, (CACHE / "dockerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.5)
        yield docker
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_base(docker: Docker) -> str:
    """The stand-in for python:3.11-slim, made once and kept in the engine's data root."""
    if docker.has_image(PYTHON_IMAGE):
        return PYTHON_IMAGE
    if not docker.has_image(DEBIAN_IMAGE):
        root = CACHE / "bookworm-minbase"
        if not root.is_dir():
            if shutil.which("debootstrap") is None:
                missing_tool("debootstrap is not installed (Debian package debootstrap)")
            staging = CACHE / "bookworm-minbase.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(staging), "http://deb.debian.org/debian"],
                check=True, capture_output=True, timeout=1200,
            )  # fmt: skip
            staging.rename(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        docker.run("import", "-", DEBIAN_IMAGE, stdin=tar.stdout)
        assert tar.wait() == 0
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(STAND_IN.format(debian=DEBIAN_IMAGE))
        ca = Path(context) / "ca"
        ca.mkdir()
        for cert in LOCAL_CA.glob("*.crt") if LOCAL_CA.is_dir() else []:
            shutil.copy(cert, ca / cert.name)
        docker.run("build", "--network", "host", "-t", PYTHON_IMAGE, context)
    return PYTHON_IMAGE


def build_project(docker: Docker, tag: str, *build_args: str) -> None:
    """The project's own Dockerfile, built on the stand-in base (``build_args``: e.g. WITH_RAY)."""
    base = python_base(docker)
    docker.run(
        "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", *build_args, "-t", tag, str(REPO)
    )


def wait_until_ready(docker: Docker, url: str, names: list[str], timeout: float, workers: int = 1) -> None:
    """Poll ``url``/readyz until ``workers`` different worker processes have answered 200 (each
    joins its executor on its own: one ready worker says nothing of the other); fail at once, with
    its log, if a container of ``names`` stops running, and after ``timeout`` with the last answer
    and the last one's log."""
    deadline = time.monotonic() + timeout
    answer = "no answer"
    ready: set[int] = set()
    while True:
        try:
            r = requests.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                ready.add(r.json()["pid"])
                if len(ready) >= workers:
                    return
            else:
                answer = r.text
        except requests.ConnectionError:
            pass
        for name in names:
            state = docker.run("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", f"{name}: {docker.run('logs', name).stderr[-3000:]}"
        assert time.monotonic() < deadline, (
            f"{names[-1]} was not ready within {timeout:g} s: {answer}\n"
            + docker.run("logs", names[-1]).stderr[-3000:]
        )
        time.sleep(0.2)


def train_example(url: str, timeout: float = 300) -> dict:
    """POST example-data/train.json to ``url`` until the job is ready or failed; the last status."""
    body = json.loads((EXAMPLE / "train.json").read_text())
    deadline = time.monotonic() + timeout
    while True:
        r = requests.post(f"{url}/train", json=body, timeout=60)
        assert r.status_code == 200, r.text
        status = r.json()
        if status["status"] in ("ready", "error"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
