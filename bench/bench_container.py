"""The container's size and its start-up, measured on a real Docker engine.

Builds the project's Dockerfile (on the stand-in base, see tests/container_harness.py), trains
example-data/train.json in one container with its store on a host directory, then starts a
fresh container on that store and measures: start to a ready /readyz, and the first /infer of the
stored model (a cold process: the base network and the model are loaded by that request), then a
warm one. Targets from the container issue: image <= 700 MB, /readyz <= 10 s, first /infer <= 2 s.

Run (as root): ``.venv/bin/python bench/bench_container.py`` -> bench/results-container.md
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from container_harness import Docker, build_project, docker_engine  # noqa: E402
from stl_testing import EXAMPLE, free_port  # noqa: E402

TAG = "static-transfer-learning:bench"


def start(docker: Docker, store: Path) -> tuple[str, str, float]:
    """Start a container on ``store``; return (name, url, seconds from `docker run` to a ready /readyz)."""
    port = free_port()
    name = f"stl-bench-{port}"
    started = time.perf_counter()
    docker.run(
        "run", "-d", "--network", "host", "--name", name, "-e", f"PORT={port}", "-e", "IMPORT_ROOT=/srv",
        "-v", f"{EXAMPLE}:/srv/example-data:ro", "-v", f"{store}:/data", TAG,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return name, url, time.perf_counter() - started
        except requests.ConnectionError:
            time.sleep(0.02)


def main() -> None:
    with docker_engine() as docker, tempfile.TemporaryDirectory(prefix="stl-bench-store-") as tmp:
        began = time.perf_counter()
        build_project(docker, TAG)
        build_s = time.perf_counter() - began
        size = int(docker.run("image", "inspect", "-f", "{{.Size}}", TAG).stdout)
        store = Path(tmp) / "data"
        # The image's own store (with the int8 base) seeds the host directory, owned by uid 10001.
        docker.run("run", "--rm", "-v", f"{store}:/seed", "--user", "0", TAG, "sh", "-c",
                   "cp -a /data/. /seed/ && chown -R 10001:10001 /seed")  # fmt: skip
        name, url, _ = start(docker, store)
        body = json.loads((EXAMPLE / "train.json").read_text())
        while (status := requests.post(f"{url}/train", json=body, timeout=60).json())["status"] not in (
            "ready",
            "error",
        ):
            time.sleep(0.2)
        model = status["model_sha1"]
        docker.run("rm", "-f", name)

        name, url, ready_s = start(docker, store)
        infer = {"model": {"sha1": model}, "image": {"url": "example-data/infer/dots.png"}}
        times = []
        for _ in range(3):
            t = time.perf_counter()
            r = requests.post(f"{url}/infer", json=infer, timeout=60)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        docker.run("rm", "-f", name)
        shutil.rmtree(store, ignore_errors=True)

    rows = [
        ("runtime image size", f"{size / 1e6:.0f} MB", "<= 700 MB"),
        ("docker run to a ready /readyz", f"{ready_s:.2f} s", "<= 10 s"),
        ("first /infer of a stored model (cold worker)", f"{times[0]:.2f} s", "<= 2 s"),
        ("next /infer (warm)", f"{times[1] * 1e3:.0f} ms / {times[2] * 1e3:.0f} ms", ""),
        ("build (every layer already cached)", f"{build_s:.0f} s", ""),
    ]
    out = ROOT / "bench" / "results-container.md"
    out.write_text(
        "\n".join(
            [
                "# Container benchmark",
                "",
                f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
                "Debian's dockerd 20.10, host network. The image is built on the CI stand-in for "
                "python:3.11-slim (Debian bookworm minbase + Debian's python3 in a venv), which is larger than the "
                "official slim image, so the size is an upper bound. One run; model "
                f"{model} (example-data/train.json).",
                "",
                "| what | measured | target |",
                "|---|---|---|",
                *[f"| {a} | {b} | {c} |" for a, b, c in rows],
            ]
        )
        + "\n"
    )
    print(out.read_text())


if __name__ == "__main__":
    main()
