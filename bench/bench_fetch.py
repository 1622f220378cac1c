"""What the SSRF fixes cost on the hot paths, side by side with the code before them (1e3bd10).

Two measurements, each run by the old and the new code in child processes of one run:

* fetching images over HTTP under the service's strict policy (the new fetcher parses
  the URL once, resolves once and connects to that address with urllib3; the old one
  checked with urlparse and fetched with requests): median and total per image;
* ``LocalStore.put`` of objects the store already holds (the new put verifies the
  stored copy, so that the right bytes repair a corrupt one; the old put only
  checked that the file existed).

The images are fashion-tiny's photos (../shared), else example-data's PNGs.
Writes bench/results-fetch.md.

Usage: .venv/bin/python bench/bench_fetch.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from stl_testing import serve_directory  # noqa: E402

BEFORE = "1e3bd10"
FASHION = REPO.parent / "shared" / "datasets" / "fashion-tiny" / "images"

CHILD = """
import json, statistics, sys, time
from pathlib import Path
from model.data.fetch import FetchPolicy, fetch_bytes
from store import LocalStore
base, names, store_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
policy = FetchPolicy(allow_private=False, allow_hosts=("127.0.0.1/32",))
for name in names[:5]:
    fetch_bytes(f"{base}/{name}", policy)  # warm up
times, datas = [], []
for name in names:
    t = time.perf_counter()
    datas.append(fetch_bytes(f"{base}/{name}", policy))
    times.append(time.perf_counter() - t)
store = LocalStore(store_dir)
for d in datas:
    store.put(d)
t = time.perf_counter()
for d in datas:
    store.put(d)  # every object already held
put = time.perf_counter() - t
print(json.dumps({"median_ms": statistics.median(times) * 1e3, "total_s": sum(times),
                  "put_existing_ms": put / len(datas) * 1e3, "bytes": sum(map(len, datas))}))
"""


def _tree(commit: str, dest: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", commit, "model", "store"], cwd=REPO, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def main() -> None:
    root = FASHION if FASHION.is_dir() else REPO / "example-data"
    source = "fashion-tiny" if root == FASHION else "example-data"
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    with tempfile.TemporaryDirectory() as tmp, serve_directory(root) as server:
        trees = {
            "before (requests, urlparse check)": _tree(BEFORE, Path(tempfile.mkdtemp(dir=tmp))),
            "now": REPO,
        }
        results = {}
        for label, tree in trees.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, server.url, json.dumps(names), tempfile.mkdtemp(dir=tmp)],
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            )
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    before, now = results.values()
    lines = [
        "# Fetch and put: before and after the SSRF fixes (bench/bench_fetch.py)",
        "",
        f"{len(names)} images ({before['bytes'] / 1e6:.1f} MB) from {source}, served on 127.0.0.1,",
        "fetched one after another under the service's strict policy; then each put again into",
        "a local store that already holds it. One run, old and new code side by side.",
        "",
        "| | before | now | now / before |",
        "|---|---|---|---|",
    ]
    for key, name in (("median_ms", "fetch, median ms/image"), ("total_s", "fetch, total s"),
                      ("put_existing_ms", "put of a held object, ms")):  # fmt: skip
        lines.append(f"| {name} | {before[key]:.3f} | {now[key]:.3f} | {now[key] / before[key]:.2f}x |")
    text = "\n".join(lines) + "\n"
    (REPO / "bench" / "results-fetch.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
