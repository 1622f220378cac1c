"""The image built WITH_RAY=true, run as the compose `ray` profile runs it: a Ray head, a Ray
worker and the API with EXECUTOR=ray, three containers on a real Docker engine
(tests/container_harness.py), sharing one store volume.

The API only submits; the worker container trains; the model is the golden one that `make demo`,
the CLI and the plain container give. The API container is no Ray node: it joins through Ray
Client (``ray://``), as in compose. Host networking (this engine has no bridge), so each Ray node
gets its own free ports.
"""

from __future__ import annotations

import contextlib
import secrets
import time
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

TAG = PROJECT_IMAGE + "-ray"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_engine() as engine:
        yield engine


@pytest.fixture(scope="module")
def stack(docker: Docker) -> Iterator[Stack]:
    build_project(docker, TAG, "--build-arg", "WITH_RAY=true")
    with ray_stack(docker) as running:
        yield running


@contextlib.contextmanager
def ray_stack(docker: Docker) -> Iterator[Stack]:
    """Head, worker and API containers from TAG, started and ready; removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    volume = f"stl-ray-{suffix}"
    gcs, client = free_port(), free_port()
    ray_env = ["-e", "RAY_AUTH_MODE=token", "-e", f"RAY_AUTH_TOKEN={secrets.token_hex(32)}"]
    ray_env += ["-e", "RAY_USAGE_STATS_ENABLED=0"]
    # One store for all three (a volume, filled from the image's /data: the pinned base), and the
    # example data where IMPORT_ROOT lets the API, and so the job's tasks, read it.
    mounts = ["-v", f"{volume}:/data", "-v", f"{EXAMPLE}:/srv/example-data:ro"]
    common = ["run", "-d", "--network", "host", "--shm-size", "512m", *ray_env, *mounts]

    def node_ports(worker_ports: int) -> list[str]:  # two raylets on one host network share no port
        return [
            f"--min-worker-port={worker_ports}",
            f"--max-worker-port={worker_ports + 999}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    names = [f"stl-ray-head-{suffix}", f"stl-ray-worker-{suffix}", f"stl-ray-api-{suffix}"]
    ray_start = ["ray", "start", "--node-ip-address=127.0.0.1", "--block"]
    port = free_port()
    try:
        docker.run(*common, "--name", names[0], TAG, *ray_start, "--head", f"--port={gcs}", "--num-cpus=0",
                   "--include-dashboard=false", f"--ray-client-server-port={client}", *node_ports(20000))  # fmt: skip
        # The compose file's health check, as compose runs it, before anything joins.
        deadline = time.monotonic() + 120
        while docker.run("exec", names[0], "ray", "health-check", "--address", f"127.0.0.1:{gcs}",
                         check=False).returncode != 0:  # fmt: skip
            state = docker.run("inspect", "-f", "{{.State.Status}}", names[0]).stdout.strip()
            assert state == "running", docker.run("logs", names[0]).stderr[-3000:]
            assert time.monotonic() < deadline, "the Ray head was not healthy within 120 s"
            time.sleep(1)
        docker.run(*common, "--name", names[1], TAG, *ray_start, f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                   *node_ports(21000))  # fmt: skip
        docker.run(*common, "--name", names[2], "-e", f"PORT={port}", "-e", "IMPORT_ROOT=/srv",
                   "-e", "EXECUTOR=ray", "-e", f"RAY_ADDRESS=ray://127.0.0.1:{client}", TAG)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        # Both of stl serve's workers: each loads the base and joins the Ray cluster by itself.
        wait_until_ready(docker, url, names, timeout=180, workers=2)
        yield Stack(url, names)
    finally:
        for name in names:
            docker.run("rm", "-f", name, check=False)
        docker.run("volume", "rm", "-f", volume, check=False)


@dataclass
class Stack:
    url: str
    names: list[str]  # head, worker, api


def test_the_ray_profile_trains_the_golden_model_with_the_api_only_submitting(
    docker: Docker, stack: Stack, tmp_path: Path
) -> None:
    trained = train_example(stack.url, timeout=600)
    api_log = docker.run("logs", stack.names[2])
    assert trained["status"] == "ready", (trained, (api_log.stdout + api_log.stderr)[-3000:])
    assert trained["model_sha1"] == GOLDEN_MODEL
    host = run_stl(["train", str(EXAMPLE / "train.csv"), "--seed", "1234"], tmp_path / "data")
    assert host.code == 0, host.err[-2000:]
    assert (host.json["weights_sha1"], host.json["manifest_sha1"]) == (
        trained["weights_sha1"],
        trained["manifest_sha1"],
    )
    body = {"model": {"sha1": GOLDEN_MODEL}, "image": {"url": "example-data/infer/dots.png"}}
    label = requests.post(f"{stack.url}/infer", json=body, timeout=60)
    assert label.status_code == 200, label.text
    assert max(label.json(), key=label.json().get) == "dots"
    logs = {name: docker.run("logs", name) for name in stack.names}
    api = logs[stack.names[2]].stdout + logs[stack.names[2]].stderr
    assert "training submitted to Ray" in api and "training started" not in api  # it only submitted
    for name, log in logs.items():
        assert "Traceback" not in log.stdout + log.stderr, f"{name}: {(log.stdout + log.stderr)[-3000:]}"
