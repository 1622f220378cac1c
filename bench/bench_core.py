"""Core benchmark: our pipeline vs the original 2019 recipe on fashion-tiny.

    .venv/bin/python bench/bench_core.py [--skip-original] [--skip-scale]

Uses /work/shared/datasets/fashion-tiny (300 JPEGs, labels blouse/halter/sweater)
and exits with a message if it is absent. A fixed held-out split (per label,
sorted by path, every 5th image is test) keeps the 60 test images out of every
training run, ours and the original's. All work (CSVs, stores, synthesized
images) goes under bench/.work/core/, which is gitignored; the data set is never
copied into the repository.

Training runs are fresh subprocesses so start-up counts; peak RSS comes from
``os.wait4`` on that one child (``RUSAGE_CHILDREN`` reports the maximum over all
children so far, which would hide a smaller later run). Progress goes to stderr;
the results go to bench/results-core.md (to bench/.work/ on a partial run, so a
quick run never overwrites the committed full results).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = (REPO / ".." / "shared" / "datasets" / "fashion-tiny").resolve()
WORK = REPO / "bench" / ".work" / "core"
PY = REPO / ".venv" / "bin" / "python"
SRC = WORK / "src"  # snapshot of the committed tree: others commit while the bench runs
STL = [str(PY), "-m", "handlers.cli"]  # `stl`, but importing the snapshot via PYTHONPATH
HEADLINE = ["--image-size", "260", "--train-percentage", "90"]
DEFAULTS = ["--image-size", "224", "--train-percentage", "80"]
WARM_SEED = "7"
VARIANTS = 10  # synthesized copies per photo for the memory-at-scale run
GIB = 1024**3


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Child:
    cmd: list[str]
    wall_s: float
    peak_rss: int  # bytes
    stdout: str
    started_at: float
    cpu_s: float  # user + system: less sensitive than wall time to other load on the machine
    load: float  # 1-minute load average when it started; > 0 means others shared the cores


def run_child(cmd: list[str], env: dict[str, str], name: str) -> Child:
    """Run ``cmd`` to completion; its wall time and its own peak RSS."""
    out_path, err_path = WORK / f"{name}.stdout", WORK / f"{name}.stderr"
    log(f"run {name}: {' '.join(cmd)}")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        load = os.getloadavg()[0]
        started_at = time.time()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=WORK)
        # wait4 rather than proc.wait(): it returns this child's rusage alone.
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        sys.exit(f"bench: {name} failed with exit code {proc.returncode}:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    log(
        f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {usage.ru_maxrss / 1024:.0f} MiB, load {load:.2f}"
    )
    return Child(cmd, wall, usage.ru_maxrss * 1024, out_path.read_text(), started_at, cpu, load)


def child_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STORE_URI",)}
    env["DATA_DIR"] = str(data_dir)
    # PYTHONPATH wins over the editable install's meta-path finder, so children run the snapshot.
    env["PYTHONPATH"] = str(SRC)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    path: Path
    label: str
    sha1: str


def split_dataset(dataset: Path) -> tuple[list[Image], list[Image]]:
    """Per label, sorted by path: index % 5 == 0 is test, the rest train."""
    with open(dataset / "labels.csv", newline="") as f:
        rows = [Image((dataset / r["path"]).resolve(), r["label"], r["sha1"]) for r in csv.DictReader(f)]
    train: list[Image] = []
    test: list[Image] = []
    for label in sorted({r.label for r in rows}):
        for i, img in enumerate(sorted((r for r in rows if r.label == label), key=lambda r: str(r.path))):
            (test if i % 5 == 0 else train).append(img)
    return train, test


def write_csv(path: Path, images: list[Image]) -> Path:
    # The project's format: absolute path, label, sha1; no header.
    path.write_text("".join(f"{i.path},{i.label},{i.sha1}\n" for i in images))
    return path


def synthesize(train: list[Image], test: list[Image], dest: Path) -> list[Image]:
    """VARIANTS distinct JPEGs per photo: small deterministic crops and brightness shifts."""
    import hashlib

    from PIL import Image as PILImage
    from PIL import ImageEnhance

    dest.mkdir(parents=True, exist_ok=True)
    out: list[Image] = []
    for src in sorted(train + test, key=lambda i: str(i.path)):
        with PILImage.open(src.path) as opened:
            base = opened.convert("RGB")
        w, h = base.size
        for k in range(VARIANTS):
            d = 2 + k  # crop 2..11 px, from a side that rotates with k
            box = (d * (k % 2), d * ((k // 2) % 2), w - d * (1 - k % 2), h - d * (1 - (k // 2) % 2))
            img = ImageEnhance.Brightness(base.crop(box)).enhance(0.9 + 0.02 * k)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            data = buf.getvalue()
            path = dest / src.label / f"{src.path.stem}-{k}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            out.append(Image(path, src.label, hashlib.sha1(data).hexdigest()))
    if len({i.sha1 for i in out}) != len(out):
        sys.exit("bench: synthesized images are not all distinct")
    return out


# --- our pipeline ----------------------------------------------------------------------------


@dataclass
class Ours:
    name: str
    flags: list[str]
    cold: Child
    warm: Child
    model_sha1: str
    warm_model_sha1: str
    accuracy: float = 0.0
    warm_accuracy: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_record(data_dir: Path, model_sha1: str) -> dict[str, Any]:
    """The newest run record (timings, cache statistics) the pipeline stored for a model."""
    from store import open_store

    store = open_store(str(data_dir))
    refs = sorted(store.list_refs(f"models/{model_sha1}/runs"))
    raw = store.get_ref(refs[-1]) if refs else None
    return json.loads(store.get(raw.decode())) if raw else {}


def train_ours(name: str, flags: list[str], train_csv: Path) -> Ours:
    data_dir = WORK / f"data-{name}"
    shutil.rmtree(data_dir, ignore_errors=True)  # cold means an empty store: base conversion included
    env = child_env(data_dir)
    cold = run_child([*STL, "train", str(train_csv), *flags], env, f"{name}-cold")
    warm = run_child([*STL, "train", str(train_csv), *flags, "--seed", WARM_SEED], env, f"{name}-warm")
    cold_out, warm_out = json.loads(cold.stdout), json.loads(warm.stdout)
    for out in (cold_out, warm_out):
        if out.get("status") != "ready":
            sys.exit(f"bench: {name} training did not finish: {out}")
    ours = Ours(name, flags, cold, warm, cold_out["model_sha1"], warm_out["model_sha1"])
    ours.runs = {
        "cold": run_record(data_dir, ours.model_sha1),
        "warm": run_record(data_dir, ours.warm_model_sha1),
    }
    return ours


def evaluate_ours(ours: Ours, test: list[Image]) -> None:
    """Held-out accuracy, and latency per image with the model already loaded (in-process)."""
    from model.config import Settings
    from model.inference.predictor import Predictor, top_label
    from store import open_store

    predictor = Predictor(open_store(str(WORK / f"data-{ours.name}")), Settings())
    images = [t.path.read_bytes() for t in test]
    for sha1 in (ours.model_sha1, ours.warm_model_sha1):
        predictor.load(sha1)
        predictor.predict(sha1, images[:1])  # warm-up: builds the base and traces the graph
        correct, latencies = 0, []
        for data, img in zip(images, test, strict=True):
            t = time.perf_counter()
            probs = predictor.predict(sha1, [data])[0]
            latencies.append(time.perf_counter() - t)
            correct += top_label(probs) == img.label
        if sha1 == ours.model_sha1:
            ours.accuracy, ours.latencies_s = correct / len(test), latencies
        else:
            ours.warm_accuracy = correct / len(test)
    log(f"  {ours.name}: accuracy {ours.accuracy:.1%} (seed {WARM_SEED}: {ours.warm_accuracy:.1%})")


# --- the original recipe ---------------------------------------------------------------------


@dataclass
class Original:
    child: Child
    train_s: float  # spawn to end of fit: start-up + image loading + training
    accuracy: float
    fit_s: float
    latencies_s: list[float]
    params: int


def run_original(train_csv: Path, test_csv: Path) -> Original:
    script = REPO / "bench" / "original_recipe.py"
    child = run_child(
        [str(PY), str(script), str(train_csv), str(test_csv), "--seed", "1234"],
        child_env(WORK / "unused"),
        "original",
    )
    out = json.loads(child.stdout)
    return Original(
        child,
        out["fit_finished_at"] - child.started_at,
        out["accuracy"],
        out["fit_seconds"],
        out["latencies_s"],
        out["params"],
    )


# --- report ----------------------------------------------------------------------------------


def ms(latencies: list[float]) -> tuple[float, float, float]:
    a = np.asarray(latencies) * 1000
    return float(a.mean()), float(np.percentile(a, 50)), float(np.percentile(a, 99))


def mib(n: float) -> str:
    return f"{n / 1024**2:.0f} MiB"


def snapshot() -> str:
    """Extract HEAD into SRC (git archive, no git metadata touched); return its commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    shutil.rmtree(SRC, ignore_errors=True)
    SRC.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(SRC)], input=archive.stdout, check=True)
    sys.path.insert(0, str(SRC))  # this process's own imports (evaluation, run records) too
    return commit


def machine(commit: str) -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(mem) / 1024**2:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": commit[:10],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(
    head: Ours,
    dflt: Ours,
    orig: Original | None,
    scale: tuple[Child, dict[str, Any], int] | None,
    argv: list[str],
    commit: str,
    dataset: Path,
    n_train: int,
    n_test: int,
) -> str:
    import tensorflow as tf

    m = machine(commit)
    hm, dm = ms(head.latencies_s), ms(dflt.latencies_s)
    om = ms(orig.latencies_s) if orig else None
    na = "skipped"

    def pct(x: float) -> str:
        return f"{x:.1%}"

    def s(x: float) -> str:
        return f"{x:.1f} s"

    def lat(x: tuple[float, float, float]) -> str:
        return f"{x[0]:.1f} / {x[1]:.1f} / {x[2]:.1f} ms"

    rows = [
        ("Held-out accuracy (60 images)", pct(head.accuracy), pct(dflt.accuracy),
         pct(orig.accuracy) if orig else na,
         f"{(head.accuracy - orig.accuracy) * 100:+.1f} points" if orig else na),
        (f"Held-out accuracy, model trained with --seed {WARM_SEED}", pct(head.warm_accuracy),
         pct(dflt.warm_accuracy), "", ""),
        ("Cold train, fresh process, empty DATA_DIR", s(head.cold.wall_s), s(dflt.cold.wall_s),
         s(orig.train_s) if orig else na, f"{orig.train_s / head.cold.wall_s:.1f}x faster" if orig else na),
        ("Cold train CPU time, user+sys (original: whole process incl. its evaluation)",
         s(head.cold.cpu_s), s(dflt.cold.cpu_s), s(orig.child.cpu_s) if orig else na,
         f"{orig.child.cpu_s / head.cold.cpu_s:.1f}x less CPU" if orig else na),
        (f"Warm re-train (--seed {WARM_SEED}, features cached)", s(head.warm.wall_s), s(dflt.warm.wall_s),
         "n/a (no cache)", f"{orig.train_s / head.warm.wall_s:.0f}x faster" if orig else na),
        ("Inference per image, loaded (mean / p50 / p99)", lat(hm), lat(dm), lat(om) if om else na,
         f"{om[0] / hm[0]:.2f}x (orig / ours, mean)" if om else na),
        ("Peak RSS, training on 240 images", mib(head.cold.peak_rss), mib(dflt.cold.peak_rss),
         mib(orig.child.peak_rss) if orig else na,
         f"{head.cold.peak_rss / orig.child.peak_rss:.2f}x (ours / orig)" if orig else na),
    ]  # fmt: skip
    if scale:
        child, _run, n = scale
        rows.append((f"Peak RSS, `stl train` on {n} distinct images", mib(child.peak_rss), "", "", ""))
        rows.append((f"Wall time, `stl train` on {n} distinct images", s(child.wall_s), "", "", ""))

    lines = [
        "# Core benchmark: our pipeline vs the original 2019 recipe",
        "",
        f"One run of `{' '.join(argv)}` on {m['date']}, measuring commit `{m['commit']}` "
        "(extracted with `git archive` into bench/.work/core/src and run from there, so commits and "
        "uncommitted edits made by others during the run cannot change what is measured).",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} RAM, no GPU; {m['os']}; "
        f"Python {m['python']}, TensorFlow {tf.__version__}.",
        "",
        f"Data: `{dataset}` — {n_train} training images, {n_test} held-out test images "
        "(per label, sorted by path, index % 5 == 0 is test). Every model below sees only the 240; "
        "the 60 are used only for the accuracy and latency rows.",
        "",
        "| Metric | Ours, headline (260 px, 90% train) | Ours, defaults (224 px, 80% train) "
        "| Original 2019 recipe (150 px CNN from scratch) | Headline vs original |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(r)} |" for r in rows),
        "",
        "## Targets (headline recipe)",
        "",
        "| Target | Measured | Verdict |",
        "|---|---|---|",
    ]
    targets = [
        ("Accuracy ≥ 75%", pct(head.accuracy), verdict(head.accuracy >= 0.75)),
        ("Accuracy ≥ 25 points above the original",
         f"{(head.accuracy - orig.accuracy) * 100:+.1f} points" if orig else na,
         verdict(head.accuracy - orig.accuracy >= 0.25) if orig else na),
        ("Cold train ≤ 30 s", f"{s(head.cold.wall_s)} ({s(head.cold.cpu_s)} CPU, load {head.cold.load:.1f})", verdict(head.cold.wall_s <= 30)),
        ("Warm re-train ≤ 5 s", f"{s(head.warm.wall_s)} ({s(head.warm.cpu_s)} CPU, load {head.warm.load:.1f})", verdict(head.warm.wall_s <= 5)),
        ("Inference ≤ 25 ms/image (mean)", f"{hm[0]:.1f} ms", verdict(hm[0] <= 25)),
        ("Peak memory < 1 GiB at 3000 images", mib(scale[0].peak_rss) if scale else na,
         verdict(scale[0].peak_rss < GIB) if scale else na),
    ]  # fmt: skip
    lines += [f"| {' | '.join(t)} |" for t in targets]

    lines += [
        "",
        "## Where our time goes (run records under DATA_DIR `refs/models/<sha1>/runs/`)",
        "",
        "In-process timings from the pipeline; the gap to the wall time is interpreter start, CLI imports "
        "and recipe preparation before `train_model` starts. TensorFlow is imported lazily, so its import "
        "(and building the base) lands in `features` on a cold run and in `head train` on a warm one.",
        "",
        "| Run | Wall | CPU (user+sys) | load avg at start | fetch | features | head train "
        "| in-process total | start-up + overhead | cache |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    timed = [
        (f"{head.name} cold", head.cold, head.runs["cold"]),
        (f"{head.name} warm", head.warm, head.runs["warm"]),
        (f"{dflt.name} cold", dflt.cold, dflt.runs["cold"]),
        (f"{dflt.name} warm", dflt.warm, dflt.runs["warm"]),
    ]
    if scale:
        timed.append((f"scale {scale[2]} images", scale[0], scale[1]))
    for name, child, run in timed:
        t = run.get("timings_s", {})
        cache = ", ".join(f"{k} {v}" for k, v in sorted(run.get("cache", {}).items()))
        lines.append(
            f"| {name} | {child.wall_s:.1f} s | {child.cpu_s:.1f} s | {child.load:.2f} "
            f"| {t.get('fetch', 0):.1f} s | {t.get('features', 0):.1f} s "
            f"| {t.get('train', 0):.1f} s | {t.get('total', 0):.1f} s "
            f"| {child.wall_s - t.get('total', 0):.1f} s | {cache} |"
        )
    if orig:
        lines += [
            "",
            f"Original recipe: {orig.params:,} parameters; `fit` alone took {orig.fit_s:.1f} s of the "
            f"{orig.train_s:.1f} s (the rest is start-up and loading 240 images). Its latency is a direct "
            "`model(x)` call on one decoded image, not `model.predict`, to be fair to it.",
        ]
    lines += [
        "",
        "## Method",
        "",
        "- Every training run is a fresh subprocess; wall time is spawn to exit (for the original: spawn "
        "to end of `fit`, so its evaluation is not counted). Peak RSS is that child's `ru_maxrss` from "
        "`os.wait4`.",
        "- The machine may be shared: the load-average column shows what else ran when each child "
        "started. Wall times under load > 1 are inflated on 2 cores; CPU seconds are the steadier figure.",
        "- Cold: `stl train` into an empty DATA_DIR (so converting the EfficientNet-Lite0 base from its "
        f"PyPI package is included). Warm: the same command with `--seed {WARM_SEED}` into the same "
        "DATA_DIR, so every feature is a cache hit (a new seed is a new model: new split, new head).",
        "- Accuracy and latency: in-process `model.inference.predictor.Predictor`, model loaded once, one warm-up "
        "prediction, then each of the 60 test images timed alone (JPEG decode + resize + base forward + "
        "head). p99 of 60 samples is close to the maximum.",
        f"- Scale: {VARIANTS} variants of each of the 300 photos (crop of 2–11 px from a rotating corner, "
        "brightness 0.90–1.08, re-encoded as JPEG q90; all sha1s distinct), headline flags, one "
        "run into a fresh DATA_DIR.",
        "",
        "## Commands",
        "",
        "`python -m handlers.cli` is `stl`; PYTHONPATH points it at the snapshot of the measured commit.",
        "",
        "```",
        *(
            f"PYTHONPATH={SRC} DATA_DIR={WORK}/data-{o.name} {' '.join(c.cmd)}"
            for o in (head, dflt)
            for c in (o.cold, o.warm)
        ),
        *([" ".join(orig.child.cmd)] if orig else []),
        *([f"PYTHONPATH={SRC} DATA_DIR={WORK}/data-scale {' '.join(scale[0].cmd)}"] if scale else []),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description="Benchmark our pipeline against the original recipe.")
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--skip-original", action="store_true", help="skip the ~2 min Keras CNN run")
    p.add_argument("--skip-scale", action="store_true", help="skip the 3000-image memory run")
    p.add_argument("--out", type=Path, help="results file (default: bench/results-core.md on a full run)")
    args = p.parse_args()

    dataset = args.dataset.resolve()
    if not (dataset / "labels.csv").is_file():
        print(
            f"bench: data set not found at {dataset} (expected labels.csv and images/); "
            "pass --dataset or put fashion-tiny there",
            file=sys.stderr,
        )
        return 2
    partial = args.skip_original or args.skip_scale
    out = args.out or (WORK / "results-core-partial.md" if partial else REPO / "bench" / "results-core.md")

    WORK.mkdir(parents=True, exist_ok=True)
    commit = snapshot()
    log(f"measuring commit {commit[:10]} from {SRC}")
    train, test = split_dataset(dataset)
    log(f"split: {len(train)} train, {len(test)} test")
    train_csv = write_csv(WORK / "train.csv", train)
    test_csv = write_csv(WORK / "test.csv", test)

    head = train_ours("headline", HEADLINE, train_csv)
    dflt = train_ours("defaults", DEFAULTS, train_csv)

    orig = None if args.skip_original else run_original(train_csv, test_csv)
    if orig:
        log(f"  original: accuracy {orig.accuracy:.1%}, fit {orig.fit_s:.1f} s")

    scale = None
    if not args.skip_scale:
        log(f"synthesizing {VARIANTS * (len(train) + len(test))} images")
        images = synthesize(train, test, WORK / "scale-images")
        scale_csv = write_csv(WORK / "scale.csv", images)
        data_dir = WORK / "data-scale"
        shutil.rmtree(data_dir, ignore_errors=True)
        child = run_child([*STL, "train", str(scale_csv), *HEADLINE], child_env(data_dir), "scale")
        scale = (child, run_record(data_dir, json.loads(child.stdout)["model_sha1"]), len(images))

    # Evaluation last: it loads TensorFlow into this process, which must not overlap the timed children.
    log("evaluating held-out accuracy and latency")
    evaluate_ours(head, test)
    evaluate_ours(dflt, test)

    text = report(
        head,
        dflt,
        orig,
        scale,
        ["bench/bench_core.py", *sys.argv[1:]],
        commit,
        dataset,
        len(train),
        len(test),
    )
    out.write_text(text)
    log(f"wrote {out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
