"""js-ipfs, a full IPFS node independent of Kubo, started offline on loopback for the store's tests.

It is the npm package ``ipfs`` 0.66 (its CLI is ``jsipfs``), installed by
``make test`` from tests/ipfs-node/package-lock.json. The node gets an empty repo,
no swarm listeners, no bootstrap peers, no mDNS and no preload, and runs with
``--offline``: it answers its HTTP RPC API on a free 127.0.0.1 port and talks to
nobody else.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stl_testing import REPO, missing_tool

PACKAGE = REPO / "tests" / "ipfs-node"
JSIPFS = PACKAGE / "node_modules" / "ipfs" / "src" / "cli.js"
_LISTENING = re.compile(r"HTTP API listening on /ip4/127\.0\.0\.1/tcp/(\d+)/http")


@dataclass
class IpfsNode:
    proc: subprocess.Popen[bytes]
    url: str
    repo: Path

    @property
    def multiaddr(self) -> str:
        host, port = self.url.removeprefix("http://").split(":")
        return f"/ip4/{host}/tcp/{port}/http"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _env(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IPFS_PATH": str(repo),
        "NODE_OPTIONS": f"--require {PACKAGE / 'polyfill.cjs'}",
    }


def start_ipfs_node(root: Path) -> IpfsNode:
    """Initialise a repo under ``root`` and start the daemon; fail clearly if it cannot start."""
    node = shutil.which("node")
    if node is None or not JSIPFS.is_file():
        missing_tool("js-ipfs is not installed (Node.js and `npm ci --ignore-scripts` in tests/ipfs-node)")
    repo = root / "repo"
    root.mkdir(parents=True, exist_ok=True)
    init = subprocess.run(
        [node, str(JSIPFS), "init", "--profile", "test", "--empty-repo"],
        env=_env(repo),
        capture_output=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr.decode(errors="replace")[-2000:]
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    loopback = "/ip4/127.0.0.1/tcp/0"
    config["Addresses"].update({"Swarm": [], "API": loopback, "Gateway": loopback, "RPC": loopback})
    config["Bootstrap"] = []
    config["Discovery"] = {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}}
    config_path.write_text(json.dumps(config))
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen(
        [node, str(JSIPFS), "daemon", "--offline", "--enable-preload=false"],
        env=_env(repo),
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90  # a hung start must not hang the suite
    seen = b""
    while time.monotonic() < deadline and proc.poll() is None:
        # os.read, not readline: a buffered reader may hold lines that select() no longer sees.
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if not ready:
            continue
        seen += os.read(proc.stdout.fileno(), 65536)
        found = _LISTENING.search(seen.decode(errors="replace"))
        if found:
            # Keep draining stdout into the log, so that a chatty node never blocks on a full pipe.
            threading.Thread(target=shutil.copyfileobj, args=(proc.stdout, log), daemon=True).start()
            return IpfsNode(proc, f"http://127.0.0.1:{found.group(1)}", repo)
    proc.kill()
    proc.wait()
    stderr = (root / "daemon.log").read_text(errors="replace")[-1500:]
    raise AssertionError(f"js-ipfs did not start: {seen.decode(errors='replace')[-1500:]}\n{stderr}")
