"""Portable (int8 base + exact head) vs the float path it replaced, side by side in one run.

    .venv/bin/python bench/bench_portable.py [--skip-scale]

Both pipelines run from snapshots of the repository (git archive): the float
path at FLOAT_COMMIT (TensorFlow float base, TensorFlow Adam head) and the
portable path at HEAD, in the same venv (requirements-dev.txt has TensorFlow
for the float path and for conversion). Accuracy is 5-fold cross-validation
over fashion-tiny: every one of the 300 photos is predicted once by a model
that never saw it. Each `stl train` is a fresh subprocess (start-up counts),
with the base already in its store so no conversion is timed. Results go to
bench/results-portable.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core

REPO = core.REPO
FLOAT_COMMIT = "602d640"  # main before the portable path landed
WORK = REPO / "bench" / ".work" / "portable"
FOLDS = 5
PATHS = ("float", "portable")


def snapshot(commit: str, dest: Path) -> Path:
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def env_for(src: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STORE_URI"}
    env.update(DATA_DIR=str(data), PYTHONPATH=str(src), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def folds(images: list[core.Image]) -> list[list[core.Image]]:
    """Per label, sorted by path, image i goes to fold i % 5."""
    out: list[list[core.Image]] = [[] for _ in range(FOLDS)]
    for label in sorted({i.label for i in images}):
        for i, img in enumerate(sorted((x for x in images if x.label == label), key=lambda x: str(x.path))):
            out[i % FOLDS].append(img)
    return out


PREDICT = """
import json, sys, time
from model.config import Settings
from model.inference.predictor import Predictor
from store import LocalStore
model, paths = sys.argv[1], sys.argv[2:]
p = Predictor(LocalStore(Settings.from_env().data_dir), Settings.from_env())
p.predict(model, [open(paths[0], "rb").read()])  # load model and base: not timed
out, t = [], time.perf_counter()
for path in paths:
    out.append(p.predict(model, [open(path, "rb").read()])[0])
ms = (time.perf_counter() - t) * 1000 / len(paths)
print(json.dumps({"labels": [max(q, key=q.get) for q in out], "probabilities": out, "ms_per_image": ms}))
"""


def run_path(name: str, src: Path, all_images: list[core.Image]) -> dict:
    stl = [str(core.PY), "-m", "handlers.cli"]
    result: dict = {"correct": 0, "predicted": 0, "cold_s": [], "cpu_s": [], "rss": [], "infer_ms": []}
    for k, test in enumerate(folds(all_images)):
        train = [i for i in all_images if i not in test]
        data = WORK / name / f"fold{k}"
        subprocess.run(["rm", "-rf", str(data)], check=True)
        env = env_for(src, data)
        core.run_child([*stl, "base", "ensure"], env, f"{name}-base-{k}")
        csv = core.write_csv(WORK / name / f"fold{k}.csv", train)
        cold = core.run_child([*stl, "train", str(csv)], env, f"{name}-train-{k}")
        model = json.loads(cold.stdout.strip().splitlines()[-1])["model_sha1"]
        result["cold_s"].append(cold.wall_s)
        result["cpu_s"].append(cold.cpu_s)
        result["rss"].append(cold.peak_rss)
        if k == 0:
            warm = core.run_child([*stl, "train", str(csv), "--seed", "7"], env, f"{name}-warm")
            result["warm_s"] = warm.wall_s
            record = core.run_record(data, model)
            result["features_ms_per_image"] = record["timings_s"]["features"] * 1000 / len(train)
        pred = core.run_child(
            [str(core.PY), "-c", PREDICT, model, *(str(i.path) for i in test)], env, f"{name}-infer-{k}"
        )
        out = json.loads(pred.stdout.strip().splitlines()[-1])
        result["correct"] += sum(p == i.label for p, i in zip(out["labels"], test, strict=True))
        result["predicted"] += len(test)
        result["infer_ms"].append(out["ms_per_image"])
    return result


def scale_run(name: str, src: Path, images: list[core.Image]) -> core.Child:
    data = WORK / name / "scale"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    env = env_for(src, data)
    stl = [str(core.PY), "-m", "handlers.cli"]
    core.run_child([*stl, "base", "ensure"], env, f"{name}-scale-base")
    csv = core.write_csv(WORK / name / "scale.csv", images)
    return core.run_child([*stl, "train", str(csv)], env, f"{name}-scale-train")


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=core.DEFAULT_DATASET)
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    if not (args.dataset / "labels.csv").exists():
        sys.exit(f"bench: {args.dataset} not found (fashion-tiny is needed)")
    WORK.mkdir(parents=True, exist_ok=True)
    core.WORK = WORK  # the child runner writes its logs there
    train, test = core.split_dataset(args.dataset)
    images = train + test
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    srcs = {
        "float": snapshot(FLOAT_COMMIT, WORK / "src-float"),
        "portable": snapshot("HEAD", WORK / "src-portable"),
    }
    load0 = os.getloadavg()[0]
    results = {name: run_path(name, srcs[name], images) for name in PATHS}
    if not args.skip_scale:
        many = core.synthesize(train, test, WORK / "synth")
        for name in PATHS:
            child = scale_run(name, srcs[name], many)
            results[name]["scale_rss"] = child.peak_rss
            results[name]["scale_s"] = child.wall_s
            results[name]["scale_n"] = len(many)
    rows = []
    for name in PATHS:
        r = results[name]
        rows.append(
            f"| {name} | {r['correct']}/{r['predicted']} = {100 * r['correct'] / r['predicted']:.1f}% "
            f"| {r['features_ms_per_image']:.1f} | {median(r['cold_s']):.1f} | {r['warm_s']:.1f} "
            f"| {median(r['infer_ms']):.1f} | {max(r['rss']) / 2**20:.0f} "
            f"| {r.get('scale_rss', 0) / 2**20:.0f} ({r.get('scale_n', 0)} images, {r.get('scale_s', 0):.0f} s) |"
        )
    f, p = results["float"], results["portable"]
    text = f"""# Portable path vs float path (fashion-tiny, 5-fold CV), one run

Measured {time.strftime("%Y-%m-%d %H:%M")} on this 2-core machine (load average {load0:.2f} at start),
portable = HEAD {head.stdout.strip()}, float = {FLOAT_COMMIT}; both at their defaults (224 px, 80% of each
fold's training photos for the head, 60 epochs). `bench/bench_portable.py`.

| path | accuracy (300 held-out predictions) | features ms/image (training) | cold train s (median of 5, incl. start-up) | warm re-train s | inference ms/image (loaded) | peak RSS training 240 MiB | peak RSS at scale MiB |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Ratios, portable / float: accuracy {p["correct"] - f["correct"]:+d} predictions
({100 * (p["correct"] - f["correct"]) / p["predicted"]:+.1f} points); features {p["features_ms_per_image"] / f["features_ms_per_image"]:.2f}x;
cold train {median(p["cold_s"]) / median(f["cold_s"]):.2f}x; warm re-train {p["warm_s"] / f["warm_s"]:.2f}x;
inference {median(p["infer_ms"]) / median(f["infer_ms"]):.2f}x; peak RSS {max(p["rss"]) / max(f["rss"]):.2f}x.
"""
    (REPO / "bench" / "results-portable.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
