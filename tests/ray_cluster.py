"""A real Ray cluster on this machine for the tests: `ray start --head` with 2 CPUs, token auth on.

Its processes get this checkout on PYTHONPATH (so tasks import this code) and
report no usage statistics. Its process group is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stl_testing import REPO, free_port

RAY = Path(sys.executable).parent / "ray"


@dataclass
class RayCluster:
    address: str
    #: What a driver (`stl`, gunicorn) needs in its environment to join the cluster.
    env: dict[str, str]

    def task_pids(self, name: str) -> list[int]:
        """Worker processes running a task or actor method called ``name`` now (Ray sets their title)."""
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
        return [int(line.split()[0]) for line in out.splitlines() if f"ray::{name}" in line]


@contextlib.contextmanager
def ray_cluster(cpus: int = 2, token: str = "") -> Iterator[RayCluster]:
    # Ray's socket paths must stay short, so its session directory is not under pytest's tmp.
    temp = tempfile.mkdtemp(prefix="stl-ray-", dir="/tmp")
    port = free_port()
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",  # as in production: no token, no tasks
        "RAY_AUTH_TOKEN": token or secrets.token_hex(32),
    }
    full = {**os.environ, **env}
    # Its own session: `ray start` returns once its daemons run, and they (and the workers they
    # spawn) stay in this process group, which is stopped as a whole at the end. (`ray stop` would
    # stop every Ray cluster of this user on the machine.)
    starter = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        output, _ = starter.communicate(timeout=180)
        if starter.returncode != 0:
            raise RuntimeError(f"ray start failed: {output[-2000:]}")
        yield RayCluster(f"127.0.0.1:{port}", {**env, "EXECUTOR": "ray", "RAY_ADDRESS": f"127.0.0.1:{port}"})
    finally:
        _stop_group(starter.pid)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
