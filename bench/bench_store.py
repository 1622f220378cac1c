"""Put/get latency of the store, before and after the content layer was written once over transports.

Both versions run side by side in one run against the same servers: local disk,
S3 (moto's server on 127.0.0.1, through boto3 over HTTP) and IPFS (a js-ipfs node
on 127.0.0.1, over its RPC API), each opened with ``open_store`` as the service
opens it. Remote reads go through a second store with an empty cache (another
machine), so they really reach the server; every read verifies sha1. Small
objects use put()/get(); large ones put_file()/get_to_file(). Every object is
fresh random bytes. Versions alternate per backend so that drift on a shared
machine hits both alike.

Run: ``.venv/bin/python bench/bench_store.py [BASELINE_COMMIT]`` -> bench/results-store.md
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SIZES = [("10 KB", 10_000, 150), ("20 MB", 20_000_000, 6)]  # (label, bytes, iterations)
BASELINE = "7e6e7d4"  # the last commit before the transport layer

CHILD = r"""
import json, os, shutil, sys, time
from pathlib import Path
from store import open_store

uri, tmp, size, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
writer = open_store(uri or str(tmp / "local"), str(tmp / "a"))
large = size > 1_000_000
src, dest = tmp / "src.bin", tmp / "dest.bin"
puts, gets, names = [], [], []
for _ in range(n):
    data = os.urandom(size)
    if large:
        src.write_bytes(data)
    start = time.perf_counter()
    names.append(writer.put_file(src) if large else writer.put(data))
    puts.append(time.perf_counter() - start)
if uri.startswith("ipfs"):
    # The sha1 -> CID index is this machine's: the reader gets a copy of it, but not the cached objects.
    shutil.copytree(tmp / "a", tmp / "b", ignore=lambda d, names: ["objects"] if d == str(tmp / "a") else [])
reader = open_store(uri or str(tmp / "local"), str(tmp / "b"))  # another machine: an empty cache
for sha1 in names:
    start = time.perf_counter()
    reader.get_to_file(sha1, dest) if large else reader.get(sha1)
    gets.append(time.perf_counter() - start)
start = time.perf_counter()
again = [writer.put(writer.get(s)) for s in names[:20]] if not large else []
held = (time.perf_counter() - start) / max(1, len(again))
print(json.dumps({"put": puts, "get": gets, "put_held": held}))
"""


def run_child(tree: Path, uri: str, size: int, n: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, uri, tmp, str(size), str(n)],
            cwd=tree,
            env={**os.environ, **env, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_tree(commit: str) -> Path:
    tree = ROOT / "bench" / ".work" / f"store-{commit}"
    if not tree.exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True)
    return tree


def main() -> None:
    from ipfs_node import start_ipfs_node
    from stl_testing import FAKE_AWS, moto_s3_server

    commit = sys.argv[1] if len(sys.argv) > 1 else BASELINE
    trees = {"before": baseline_tree(commit), "after": ROOT}
    rows: list[str] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-ipfs-") as ipfs_root:
        endpoint = stack.enter_context(moto_s3_server("bench"))
        node = start_ipfs_node(Path(ipfs_root))
        stack.callback(node.stop)
        env = {**FAKE_AWS, "S3_ENDPOINT_URL": endpoint}
        backends = [
            ("local", ""),
            ("s3 (moto)", "s3://bench/p"),
            ("ipfs (js-ipfs)", f"ipfs://{node.url[7:]}"),
        ]
        for name, uri in backends:
            for label, size, n in SIZES:
                results = {version: run_child(tree, uri, size, n, env) for version, tree in trees.items()}
                for op in ("put", "get"):
                    before, after = (statistics.median(results[v][op]) for v in ("before", "after"))
                    rows.append(
                        f"| {name} | {label} | {op} | {n} | {before * 1e3:.2f} | {after * 1e3:.2f} "
                        f"| {after / before:.2f}x |"
                    )
                    print(rows[-1], flush=True)
                if size < 1_000_000:
                    before, after = (results[v]["put_held"] for v in ("before", "after"))
                    rows.append(
                        f"| {name} | {label} | put of a held object | 20 | {before * 1e3:.2f} | {after * 1e3:.2f} "
                        f"| {after / before:.2f}x |"
                    )
                    print(rows[-1], flush=True)
    elapsed = time.monotonic() - started
    header = [
        "# Store benchmark: before and after the transport layer",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {elapsed:.0f} s in all. Before = commit {commit}, after = this tree, "
        "side by side against the same servers on 127.0.0.1 (client and server overhead, not network).",
        "Medians. Stores are opened with open_store, as the service does; gets go through a second store with "
        "an empty cache, so remote gets reach the server and fill the cache. 'put of a held object' is "
        "get + put of an object the store already has (mean of 20). moto is an in-memory emulator: the "
        "remote rows compare the two versions, they do not predict AWS or a production IPFS node.",
        "",
        "| backend | size | op | n | before ms | after ms | after/before |",
        "|---|---|---|---|---|---|---|",
    ]
    out = ROOT / "bench" / "results-store.md"
    out.write_text("\n".join([*header, *rows]) + "\n")
    print(f"wrote {out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
