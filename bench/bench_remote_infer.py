"""Time to serve a first inference for a model this machine does not hold, fetched by hash.

A model is trained once into a local store and published to each remote (S3 via
moto's server, IPFS via a js-ipfs node, and a plain directory). Then,
for each, a fresh store and a fresh Predictor serve one image: the fetch
(manifest, head and base weights, all verified) plus building the base network
and the first forward pass, side by side with the same first inference for a
model already held locally. Writes bench/results-remote-infer.md.

Usage: .venv/bin/python bench/bench_remote_infer.py
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ipfs_node import start_ipfs_node  # noqa: E402
from stl_testing import EXAMPLE, FAKE_AWS, moto_s3_server, run_stl, small_dataset  # noqa: E402

CHILD = """
import os, sys, time, json
t0 = time.perf_counter()
from store import open_store
from model.config import Settings
from model.inference.predictor import Predictor
from model.lifecycle.publish import ensure_model
store = open_store(os.environ.get("STORE_URI"), sys.argv[1])
t1 = time.perf_counter()
ensure_model(store, sys.argv[2], sys.argv[3] or None, sys.argv[1])
t2 = time.perf_counter()
p = Predictor(store, Settings())
p.predict(sys.argv[2], [open(sys.argv[4], "rb").read()])
t3 = time.perf_counter()
print(json.dumps({"fetch_s": t2 - t1, "first_predict_s": t3 - t2, "total_s": t3 - t0}))
"""


def first_infer(data_dir: Path, model: str, uri: str, env: dict[str, str]) -> dict[str, float]:
    image = str(EXAMPLE / "infer" / "dots.png")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), model, uri, image],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import json

    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="stl-remote-infer-"))
    os.environ.update(FAKE_AWS)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_s3_server("bench"))
        node = start_ipfs_node(tmp / "ipfs")
        stack.callback(node.stop)
        env = {**FAKE_AWS, "S3_ENDPOINT_URL": endpoint, "IPFS_ADDRESS": node.multiaddr}
        csv = small_dataset(tmp / "set")
        home = tmp / "home"
        trained = run_stl(["train", str(csv)], home, env=env)
        model = trained.json["model_sha1"]
        uris = {
            "directory": str(tmp / "published"),
            "s3 (moto server)": "s3://bench/published",
            "ipfs (js-ipfs)": "ipfs://",
        }
        published = {}
        for name, uri in uris.items():
            run = run_stl(["train", str(csv), "--force", "--publish", uri], home, env=env)
            published[name] = run.json["published"].get("model_uri", uri)
        rows = [("held locally", first_infer(home, model, "", env))]
        for name, uri in published.items():
            rows.append((f"fetched from {name}", first_infer(tmp / f"fresh-{len(rows)}", model, uri, env)))
    local_total = rows[0][1]["first_predict_s"] + rows[0][1]["fetch_s"]
    lines = [
        "# First inference for a model fetched from a remote by hash",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores; servers on 127.0.0.1. "
        "Each row is a fresh process and a fresh store: fetch = manifest + head + the int8 base (4 MB), all verified; "
        "first predict = loading the int8 base into LiteRT and the head, one forward pass (no TensorFlow). "
        "The model: example-data subset, 224 px.",
        "",
        "| model | fetch s | first predict s | fetch + predict s | vs held locally | process wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        both = r["fetch_s"] + r["first_predict_s"]
        lines.append(
            f"| {name} | {r['fetch_s']:.3f} | {r['first_predict_s']:.2f} | {both:.2f} | {both / local_total:.2f}x | {r['wall_s']:.1f} |"
        )
    out = REPO / "bench" / "results-remote-infer.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
