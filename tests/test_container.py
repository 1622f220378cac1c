"""The project's own Dockerfile, built and run on a real Docker engine (tests/container_harness.py).

The container trains example-data/train.json to the same model hash as the CLI on the host
(and as `make demo`), labels an image, runs as uid 10001 and logs no traceback. Its timings
(start to /readyz, first /infer) are measured by bench/bench_container.py, not asserted here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from container_harness import (
    GOLDEN_MODEL,
    PROJECT_IMAGE,
    Docker,
    build_project,
    docker_engine,
    train_example,
    wait_until_ready,
)
from stl_testing import EXAMPLE, free_port, run_stl

pytestmark = pytest.mark.container

TAG = PROJECT_IMAGE
MAX_IMAGE_BYTES = 700_000_000


@dataclass
class Container:
    name: str
    url: str


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_engine() as engine:
        yield engine


@pytest.fixture(scope="module")
def image(docker: Docker) -> str:
    build_project(docker, TAG)
    return TAG


@pytest.fixture(scope="module")
def container(docker: Docker, image: str) -> Iterator[Container]:
    """The image as a user runs it: example-data mounted read-only under IMPORT_ROOT, host network."""
    port = free_port()
    name = f"stl-ci-{uuid.uuid4().hex[:8]}"
    docker.run(
        "run", "-d", "--network", "host", "--name", name, "-e", f"PORT={port}", "-e", "IMPORT_ROOT=/srv",
        "-v", f"{EXAMPLE}:/srv/example-data:ro", image,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(docker, url, [name], timeout=60)
        yield Container(name, url)
    finally:
        docker.run("rm", "-f", name, check=False)


def test_image_is_small_and_carries_no_tensorflow(docker: Docker, image: str) -> None:
    size = int(docker.run("image", "inspect", "-f", "{{.Size}}", image).stdout)
    assert size <= MAX_IMAGE_BYTES, f"image is {size / 1e6:.0f} MB"
    probe = docker.run(
        "run", "--rm", "--network", "none", image, "python", "-c", "import tensorflow", check=False
    )
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr


def test_base_network_is_pinned_in_the_image(docker: Docker, image: str) -> None:
    """Converted at build time into the image's store: a container needs no network and no TensorFlow."""
    listed = docker.run("run", "--rm", "--network", "none", image, "stl", "base", "list")
    bases = {entry["base"]: entry for entry in map(json.loads, listed.stdout.splitlines())}
    pinned = {
        "efficientnet-lite0": "bc49998771f10ee503640d26bd579553c2da8373",
        "efficientnet-lite1": "3d022d0d321755b6f7d7d3702c10a13c8f2160e6",
        "efficientnet-lite2": "141fb4fb6a2da441d31bb0fa934973dfdb03a581",
        "efficientnet-lite2-multilayer": "0abc6a2af126bb9be824d5eb7350aafc6f9e9389",
    }
    for name, sha1 in pinned.items():
        assert bases[name]["in_store"] and bases[name]["pinned"] and bases[name]["weights_sha1"] == sha1, (
            bases
        )
    # The README's way for a pip user without TensorFlow: the image's base, on stdout, byte for byte.
    command = ["stl", "base", "export", "efficientnet-lite2"]
    exported = subprocess.run(
        ["docker", "-H", f"unix://{docker.socket}", "run", "--rm", "--network", "none", image, *command],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert hashlib.sha1(exported.stdout).hexdigest() == pinned["efficientnet-lite2"]


def test_healthz_and_the_unprivileged_user(docker: Docker, container: Container) -> None:
    assert requests.get(f"{container.url}/healthz", timeout=10).status_code == 200
    assert docker.run("exec", container.name, "id", "-u").stdout.strip() == "10001"


@pytest.fixture(scope="module")
def trained(container: Container) -> dict:
    return train_example(container.url)


def test_trains_to_the_hash_the_cli_gives_on_the_host(trained: dict, tmp_path: Path) -> None:
    assert trained["status"] == "ready", trained
    assert trained["model_sha1"] == GOLDEN_MODEL
    host = run_stl(["train", str(EXAMPLE / "train.csv"), "--seed", "1234"], tmp_path / "data")
    assert host.code == 0, host.err[-2000:]
    assert host.json["model_sha1"] == trained["model_sha1"]
    assert host.json["weights_sha1"] == trained["weights_sha1"]


def test_labels_an_image(container: Container, trained: dict) -> None:
    body = {"model": {"sha1": trained["model_sha1"]}, "image": {"url": "example-data/infer/dots.png"}}
    r = requests.post(f"{container.url}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    probabilities = r.json()
    assert max(probabilities, key=probabilities.get) == "dots"


def test_logs_carry_no_traceback(docker: Docker, container: Container, trained: dict) -> None:
    logs = docker.run("logs", container.name)
    text = logs.stdout + logs.stderr
    assert "Traceback" not in text, text[-3000:]
    assert "POST /train" in text  # the log is the container's real one, not empty
