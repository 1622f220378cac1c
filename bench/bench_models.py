"""Candidate recipes side by side on fashion-tiny: accuracy by 5-fold CV, time, memory.

    .venv/bin/python bench/bench_models.py [--skip-scale] [--only NAME ...]

Every recipe runs from one snapshot of HEAD (git archive), in fresh `stl train`
subprocesses (start-up counts), each fold in a new store that already holds
the base (from a shared base cache, as a machine's cache provides it), so the
one-off int8 conversion is not timed. Accuracy: each of the 300 photos is
predicted once by a model trained on the other 240 (folds as in
bench_portable.py). Cold: the first training of a fold (decode, features,
head). Warm: the same CSV again with another seed, so features come from the
store and only the head is trained. Inference: per image with the model
loaded, in-process. Scale: one training on 3000 synthesized photos, peak RSS.
Results go to bench/results-models.md.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_core as core
import bench_portable as portable
import numpy as np

from model.head.metrics import expected_calibration_error

REPO = core.REPO
WORK = REPO / "bench" / ".work" / "models"
BASE_CACHE = WORK / "base-cache"
OLD = ["--head", "adam", "--views", "original", "--train-percentage", "80", "--l2", "0.001", "--no-calibrate"]
ALL_VIEWS = "original,mirrored,center,top-left,top-right,bottom-left,bottom-right"
#: name -> (description, flags). "default" must be the recipe `stl train` uses with no flags.
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "stl-2 default": (
        "Lite0, original view, Adam head (60 epochs, l2 0.001), 80% train split",
        [
            "--base",
            "efficientnet-lite0",
            *OLD,
            "--epochs",
            "60",
            "--batch-size",
            "32",
            "--learning-rate",
            "0.01",
        ],
    ),
    "lite0 logistic": (
        "Lite0, original view, logistic head (l2 by 5-fold CV), all photos",
        ["--base", "efficientnet-lite0", "--views", "original", "--no-calibrate"],
    ),
    "lite2 logistic": (
        "Lite2, original view, logistic head, all photos",
        ["--base", "efficientnet-lite2", "--views", "original", "--no-calibrate"],
    ),
    "lite2 logistic flip": (
        "Lite2, original + mirrored, logistic head, all photos",
        ["--base", "efficientnet-lite2", "--views", "original,mirrored", "--no-calibrate"],
    ),
    "lite2 logistic 3 views": (
        "Lite2, original + mirrored + centre crop, logistic head, all photos, temperature",
        ["--base", "efficientnet-lite2", "--views", "original,mirrored,center"],
    ),
    "lite1 logistic 7 views": (
        "Lite1, all 7 views, logistic head, all photos, temperature",
        ["--base", "efficientnet-lite1", "--views", ALL_VIEWS],
    ),
    "lite2 logistic 7 views": (
        "Lite2, all 7 views, logistic head, all photos, temperature",
        ["--base", "efficientnet-lite2", "--views", ALL_VIEWS],
    ),
    "lite2 multi-layer": (
        "Lite2 head features + its fifth stage pooled, mirrored + centre crop, logistic head, temperature",
        ["--base", "efficientnet-lite2-multilayer"],
    ),
    "lite2 + lite0": (
        "Lite2 and Lite0 features concatenated, mirrored + centre crop, logistic head, temperature",
        ["--extra-base", "efficientnet-lite0"],
    ),
    "default": ("Lite2, mirrored + centre crop, logistic head, all photos, temperature (stl-3 default)", []),
}


def run_recipe(name: str, flags: list[str], src: Path, images: list[core.Image], base: str) -> dict:
    stl = [str(core.PY), "-m", "handlers.cli"]
    slug = name.replace(" ", "-")
    result: dict = {"correct": 0, "predicted": 0, "cold_s": [], "rss": [], "infer_ms": [], "ece": []}
    confidence: list[float] = []
    right: list[bool] = []
    for k, test in enumerate(portable.folds(images)):
        train = [i for i in images if i not in test]
        data = WORK / slug / f"fold{k}"
        subprocess.run(["rm", "-rf", str(data)], check=True)
        env = {**portable.env_for(src, data), "STL_BASE_CACHE": str(BASE_CACHE)}
        for each in (base, *extra_bases(flags)):
            core.run_child([*stl, "base", "ensure", "--base", each], env, f"{slug}-base-{k}")
        csv = core.write_csv(WORK / slug / f"fold{k}.csv", train)
        cold = core.run_child([*stl, "train", str(csv), *flags], env, f"{slug}-train-{k}")
        model = json.loads(cold.stdout.strip().splitlines()[-1])["model_sha1"]
        result["cold_s"].append(cold.wall_s)
        result["rss"].append(cold.peak_rss)
        if k == 0:
            warm = core.run_child([*stl, "train", str(csv), *flags, "--seed", "7"], env, f"{slug}-warm")
            result["warm_s"] = warm.wall_s
        paths = [str(i.path) for i in test]
        pred = core.run_child([str(core.PY), "-c", portable.PREDICT, model, *paths], env, f"{slug}-infer-{k}")
        out = json.loads(pred.stdout.strip().splitlines()[-1])
        labels = out["labels"]
        confidence += [max(p.values()) for p in out["probabilities"]]
        right += [label == i.label for label, i in zip(labels, test, strict=True)]
        result["correct"] += sum(right[-len(test) :])
        result["predicted"] += len(test)
        result["infer_ms"].append(out["ms_per_image"])
        show = subprocess.run([*stl, "show", model], env=env, capture_output=True, text=True, check=True)
        metrics = json.loads(show.stdout)["metrics"]
        result["ece"].append(metrics.get("expected_calibration_error"))
        core.log(f"  {name} fold {k}: {result['correct']}/{result['predicted']}, cold {cold.wall_s:.1f} s")
    # Calibration of the 300 held-out answers, as the manifest computes it for its validation set.
    # Column 0 holds each answer's (top) probability; the rest, split in two, never exceeds it.
    probs = np.array([[c, (1 - c) / 2, (1 - c) / 2] for c in confidence])
    result["heldout_ece"] = expected_calibration_error(probs, np.where(right, 0, 1))
    result["overconfident"] = sum(1 for c, r in zip(confidence, right, strict=True) if not r and c > 0.9)
    result["wrong"] = right.count(False)
    return result


def extra_bases(flags: list[str]) -> list[str]:
    return [flags[flags.index("--extra-base") + 1]] if "--extra-base" in flags else []


def base_of(flags: list[str]) -> str:
    return flags[flags.index("--base") + 1] if "--base" in flags else "efficientnet-lite2"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=core.DEFAULT_DATASET)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    if not (args.dataset / "labels.csv").exists():
        sys.exit(f"bench: {args.dataset} not found (fashion-tiny is needed)")
    WORK.mkdir(parents=True, exist_ok=True)
    core.WORK = WORK
    train, test = core.split_dataset(args.dataset)
    images = train + test
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    src = portable.snapshot("HEAD", WORK / "src")
    load0 = os.getloadavg()[0]
    names = args.only or list(CANDIDATES)
    results = {}
    for name in names:
        core.log(f"recipe {name}")
        flags = CANDIDATES[name][1]
        results[name] = run_recipe(name, flags, src, images, base_of(flags))
    if not args.skip_scale and "default" in results:
        many = core.synthesize(train, test, WORK / "synth")
        data = WORK / "scale"
        subprocess.run(["rm", "-rf", str(data)], check=True)
        env = {**portable.env_for(src, data), "STL_BASE_CACHE": str(BASE_CACHE)}
        stl = [str(core.PY), "-m", "handlers.cli"]
        core.run_child([*stl, "base", "ensure", "--base", "efficientnet-lite2"], env, "scale-base")
        child = core.run_child([*stl, "train", str(core.write_csv(WORK / "scale.csv", many))], env, "scale")
        results["default"]["scale"] = (len(many), child.wall_s, child.peak_rss)
    old = results.get("stl-2 default")
    rows = []
    for name in names:
        r = results[name]
        acc = r["correct"] / r["predicted"]
        delta = f"{(acc - old['correct'] / old['predicted']) * 100:+.1f}" if old else "n/a"
        eces = [e for e in r["ece"] if e is not None]
        scale = r.get("scale")
        rows.append(
            f"| {name} | {CANDIDATES[name][0]} | {r['correct']}/{r['predicted']} = {100 * acc:.1f}% | {delta} "
            f"| {portable.median(r['cold_s']):.1f} | {r['warm_s']:.1f} | {portable.median(r['infer_ms']):.1f} "
            f"| {max(r['rss']) / 2**20:.0f} "
            f"| {f'{scale[2] / 2**20:.0f} ({scale[0]} images, {scale[1]:.0f} s)' if scale else '-'} "
            f"| {r['heldout_ece']:.3f} | {r['overconfident']} of {r['wrong']} | {sum(eces) / len(eces):.3f} |"
        )
    text = (
        f"""# Candidate recipes on fashion-tiny (5-fold CV), one run

Measured {time.strftime("%Y-%m-%d %H:%M")} on this 2-core machine (load average {load0:.2f} at start),
HEAD {head.stdout.strip()}. `bench/bench_models.py`; method in its docstring.

| recipe | what | accuracy (300 held-out predictions) | points vs stl-2 default | cold train s (median of 5, incl. start-up) | warm re-train s | inference ms/image (loaded) | peak RSS training 240 MiB | peak RSS at scale MiB | ECE, 300 held-out answers | wrong held-out answers with p > 0.9 | ECE the manifests report (mean of 5) |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    out = REPO / "bench" / ("results-models.md" if args.only is None else ".work/models/results-partial.md")
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
