"""Run tests/netns/ inside a fresh network namespace whose only interface is loopback.

Those tests aim the service at hostile URLs (cloud metadata addresses, other
ports behind a backslash, remote stores named by a client). Run there, a
regression cannot send a packet off the machine: there is no route but 127/8.
The namespace also has its own mount table, so a test may mount a store
read-only without touching the host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_network_facing_tests_pass_in_a_loopback_only_namespace(base_cache: Path) -> None:
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (util-linux, iproute2)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    command = [
        "unshare", *userns, "--net", "--mount", "--",
        "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", "tests/netns",
    ]  # fmt: skip
    env = {**os.environ, "STL_TESTS_BASE_CACHE": str(base_cache), "AWS_EC2_METADATA_DISABLED": "true"}
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    summary = run.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), report
    assert not re.search(r"failed|error|skipped", summary), report
    print(summary)
