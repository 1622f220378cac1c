"""How faithful each int8 conversion of a base is to its float network, and what that does to accuracy.

    .venv/bin/python bench/bench_base_fidelity.py [--base efficientnet-lite2] [--only VARIANT ...]
        [--recipes NAME ...] [--splits 4] [--fidelity-only] [--out FILE]

Five-fold CV on fashion-tiny's 300 photos could not see a 3-point loss (issue 39), so this bench
measures two things the CV cannot blur:

* **fidelity**, which needs no labels: each of the 1,200 photos of fashion-tiny and fashion-val,
  squashed to the base's size (the "original" view), through the float Keras network (batch norms
  unfolded, float32, as the weights were published) and through the int8 file; the cosine similarity
  of the two pooled feature vectors, its mean over the photos, the 1st percentile and the worst;
* **accuracy on photos the model never saw**: the default recipe (or a candidate recipe) trained on
  300 photos in a fresh store whose base ref names the variant's int8 file, then labelling the other
  900; split 0 is fashion-tiny's 300 and fashion-val's 900 (the benchmark), splits 1-3 train on other
  disjoint 300s of the same 1,200 (``splits``), which makes a difference of a point visible; the
  paired difference against the first row, photo by photo (right here and wrong there, and the
  reverse);
* **a linear probe** (scikit-learn's logistic regression on the original view's features, same
  splits), which the float network can run too: the accuracy an int8 conversion should reach.

``--fidelity-only`` skips the conversions' recipe training (fidelity and probe only); ``--recipes``
names the recipes to compare with the pinned bases (none: ``--recipes`` alone).

Variants (``VARIANTS``) take the conversion apart piece by piece. Their int8 files and the float
features are kept under bench/.work/fidelity/ (gitignored), keyed by variant and base.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATASETS = (REPO / ".." / "shared" / "datasets").resolve()
WORK = REPO / "bench" / ".work" / "fidelity"


def photos(name: str) -> list[tuple[Path, str]]:
    root = DATASETS / name
    with open(root / "labels.csv", newline="") as f:
        return [(root / row["path"], row["label"]) for row in csv.DictReader(f)]


def decoded(paths: list[Path], size: int) -> np.ndarray:
    from model.data.images import decode_image

    return np.stack([decode_image(p.read_bytes(), size, 10**8, p.name) for p in paths])


def float_reference(spec, pixels: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from model.bases.fidelity import float_features, float_network

    path = WORK / f"float-{spec.name}-{len(pixels)}.npy"
    if not path.exists():
        np.save(path, float_features(float_network(spec), pixels))
    return np.load(path)


def convert(spec, folded: bool, calibration: str, residual: str = "own", views: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    from model.bases.quantize import to_int8
    from model.bases.registry import packaged_network

    images = seven_view_calibration(spec.native_size) if views else None
    return to_int8(
        packaged_network(spec, folded),
        spec.native_size,
        exact=calibration == "exact",
        residual=residual,
        images=images,
    )


def seven_view_calibration(size: int) -> list[np.ndarray]:
    """The calibration photos in the seven views a recipe may average, and the extremes image."""
    import skimage.data

    from model.bases.quantize import CALIBRATION_FILES, calibration_images
    from model.data.images import decode_squares
    from model.identity.views import VIEWS, tensor_sizes, view_of

    root = Path(skimage.data.__file__).parent
    out = []
    for name in CALIBRATION_FILES:
        pixels, larger = decode_squares((root / name).read_bytes(), tensor_sizes(size, VIEWS), 10**8, name)
        out += [view_of(view, size, pixels, larger) for view in VIEWS]
    return [*out, calibration_images(size)[-1]]


def pinned(spec) -> bytes:  # type: ignore[no-untyped-def]
    from model.bases.registry import ensure_base
    from store import LocalStore

    store = LocalStore(str(WORK / "pinned-store"))
    _spec, sha1 = ensure_base(store, spec.name)
    return store.get(sha1)


#: name -> (what it is, how to make it). The first is the reference for paired differences.
VARIANTS: dict[str, tuple[str, Callable]] = {
    "pinned": (
        "today's pinned conversion: batch norms folded in float64, float64 ranges, each tensor its own",
        pinned,
    ),
    "tensorflow": (
        "TensorFlow's conversion as before issue 21: TensorFlow folds the batch norms and calibrates (CPU-dependent)",
        lambda spec: convert(spec, folded=False, calibration="tensorflow"),
    ),
    "tf-ranges, folded": (
        "batch norms folded in float64, TensorFlow's own calibration",
        lambda spec: convert(spec, folded=True, calibration="tensorflow"),
    ),
    "exact, unfolded": (
        "TensorFlow folds the batch norms, float64 ranges, each tensor its own",
        lambda spec: convert(spec, folded=False, calibration="exact"),
    ),
    "exact, ADD ranges": (
        "batch norms folded in float64, float64 ranges, a residual projection given the ADD's range as TensorFlow did",
        lambda spec: convert(spec, folded=True, calibration="exact", residual="add"),
    ),
    "exact, 7 views": (
        "batch norms folded in float64, float64 ranges, each its own, over the calibration photos in all seven views (85 images, not 25)",
        lambda spec: convert(spec, folded=True, calibration="exact", views=True),
    ),
}


def variant_bytes(spec, name: str) -> bytes:  # type: ignore[no-untyped-def]
    path = WORK / f"int8-{spec.name}-{name.replace(' ', '_').replace(',', '')}.tflite"
    if not path.exists():
        path.write_bytes(VARIANTS[name][1](spec))
    return path.read_bytes()


#: Recipes for step 4 of issue 39, with the pinned bases: name -> (what, api.train options).
ALL_VIEWS = ["original", "mirrored", "center", "top-left", "top-right", "bottom-left", "bottom-right"]
RECIPES: dict[str, tuple[str, dict]] = {
    "default": ("Lite2, mirrored + centre crop (today's default)", {}),
    "original": ("Lite2, the original view alone", {"views": ["original"]}),
    "3 views": ("Lite2, original + mirrored + centre crop", {"views": ["original", "mirrored", "center"]}),
    "flip": ("Lite2, original + mirrored", {"views": ["original", "mirrored"]}),
    "lite2 7 views": ("Lite2, all seven views", {"views": ALL_VIEWS}),
    "lite1 7 views": ("Lite1, all seven views", {"base": "efficientnet-lite1", "views": ALL_VIEWS}),
    "lite1": ("Lite1, mirrored + centre crop", {"base": "efficientnet-lite1"}),
    "multi-layer": (
        "Lite2 + its fifth stage pooled, mirrored + centre crop",
        {"base": "efficientnet-lite2-multilayer"},
    ),
    "lite2 + lite0": (
        "Lite2 and Lite0 features, mirrored + centre crop",
        {"extra_base": "efficientnet-lite0"},
    ),
}


def splits(count: int) -> list[tuple[list[tuple[Path, str]], list[tuple[Path, str]]]]:
    """(train, test) pairs over the 1,200 photos: split k trains on the k-th 100 photos of each
    label (fashion-tiny's rows first, then fashion-val's) and tests on the other 900. Split 0 is
    the benchmark itself: train on fashion-tiny, label fashion-val."""
    by_label: dict[str, list[tuple[Path, str]]] = {}
    for row in photos("fashion-tiny") + photos("fashion-val"):
        by_label.setdefault(row[1], []).append(row)
    out = []
    for k in range(count):
        train = [r for rows in by_label.values() for r in rows[100 * k : 100 * k + 100]]
        chosen = set(train)
        out.append((train, [r for rows in by_label.values() for r in rows if r not in chosen]))
    return out


def accuracy(name: str, options: dict, folds: list, base: tuple | None = None) -> dict:
    """A recipe trained on each split's 300 photos and labelling its 900, in one store for the
    variant (so each photo's training features are computed once); ``base``: (spec, int8 bytes)
    to name instead of the pinned file. Right/wrong per test photo, all splits concatenated."""
    import hashlib
    import shutil

    from model import api
    from model.bases.registry import _packaged_source, _record
    from model.identity.refs import base_ref
    from store import LocalStore

    root = WORK / "stores" / hashlib.sha1(name.encode()).hexdigest()[:12]
    shutil.rmtree(root, ignore_errors=True)
    store = LocalStore(str(root))
    if base is not None:
        spec, data = base
        sha1 = store.put(data)
        store.set_ref(base_ref(spec.name), _record(spec, sha1, _packaged_source(spec)))
        options = {**options, "base": spec.name}
    right, per_split, seconds = [], [], 0.0
    for k, (train, test) in enumerate(folds):
        csv_path = WORK / f"split-{k}.csv"
        csv_path.write_text(
            "".join(f"{p},{label},{hashlib.sha1(p.read_bytes()).hexdigest()}\n" for p, label in train)
        )
        model = api.train(str(csv_path), store=str(root), **options)
        model.predict([str(test[0][0])])  # loaded, warm
        started = time.perf_counter()
        answers = model.predict([str(p) for p, _ in test])
        seconds += time.perf_counter() - started
        got = [max(a, key=a.get) == label for a, (_, label) in zip(answers, test, strict=True)]
        per_split.append(float(np.mean(got)))
        right += got
    n = sum(len(test) for _, test in folds)
    return {"right": np.array(right), "per_split": per_split, "ms": seconds * 1000 / n}


def probe(features: np.ndarray, labels: np.ndarray, folds: list, index: dict) -> float:
    """Linear-probe accuracy over the splits: one logistic regression per split (scikit-learn,
    standardised features, C = 0.05) on the original view's features. Unlike the recipe it runs on
    float features too, so the float network gets a figure to aim for."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    right = []
    for train, test in folds:
        tr, te = [index[p] for p, _ in train], [index[p] for p, _ in test]
        scale = StandardScaler().fit(features[tr])
        fit = LogisticRegression(C=0.05, max_iter=5000).fit(scale.transform(features[tr]), labels[tr])
        right += list(fit.predict(scale.transform(features[te])) == labels[te])
    return float(np.mean(right))


def paired(row: dict, first: np.ndarray) -> dict:
    right = row["right"]
    return {
        "accuracy": float(right.mean()),
        "gained": int((right & ~first).sum()),
        "lost": int((~right & first).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnet-lite2")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument(
        "--fidelity-only",
        action="store_true",
        help="conversions: fidelity and probe, not the recipe's accuracy",
    )
    parser.add_argument("--splits", type=int, default=4, help="train/test splits (1: fashion-tiny/val only)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-fidelity.md")
    args = parser.parse_args()
    if not (DATASETS / "fashion-val").is_dir():
        sys.exit(f"this bench needs {DATASETS}/fashion-tiny and fashion-val")
    from model.bases.fidelity import row_cosines
    from model.bases.litert import Int8Base
    from model.bases.registry import get_spec
    from store.hashing import sha1_bytes

    WORK.mkdir(parents=True, exist_ok=True)
    spec = get_spec(args.base)
    tiny, val = photos("fashion-tiny"), photos("fashion-val")
    folds = splits(args.splits)
    started = time.time()
    pixels = decoded([p for p, _ in tiny + val], spec.native_size)
    reference = float_reference(spec, pixels)
    print(f"decoded and float features: {time.time() - started:.0f} s", file=sys.stderr)
    index = {p: i for i, (p, _) in enumerate(tiny + val)}
    labels = np.array([label for _, label in tiny + val])
    float_probe = probe(reference, labels, folds, index)
    rows, first = [], None
    for name in args.only:
        started = time.time()
        data = variant_bytes(spec, name)
        features = Int8Base(data).features(pixels)
        cos = row_cosines(features, reference)
        row = {
            "name": name,
            "sha1": sha1_bytes(data),
            "mean": cos.mean(),
            "p1": np.percentile(cos, 1),
            "worst": cos.min(),
            "probe": probe(features, labels, folds, index),
        }
        if not args.fidelity_only:
            row |= accuracy(name, {}, folds, (spec, data))
            first = row["right"] if first is None else first
            row |= paired(row, first)
        print(
            name,
            {k: v for k, v in row.items() if k != "right"},
            f"({time.time() - started:.0f} s)",
            file=sys.stderr,
        )
        rows.append(row)
    recipes, first = [], None
    for name in args.recipes:
        row = {"name": name} | accuracy(name, RECIPES[name][1], folds)
        first = row["right"] if first is None else first
        row |= paired(row, first)
        print(name, {k: v for k, v in row.items() if k != "right"}, file=sys.stderr)
        recipes.append(row)

    def counts(r: dict) -> str:
        return f"+{r['gained']} / -{r['lost']}" if "gained" in r else "-"

    def accuracies(r: dict) -> str:
        if "accuracy" not in r:
            return "- | -"
        return f"**{r['accuracy']:.3f}** | " + " ".join(f"{a:.3f}" for a in r["per_split"])

    n = sum(len(test) for _, test in folds)
    lines = [
        f"# Int8 conversions of {spec.name} and recipes: fidelity and accuracy on unseen photos (one run)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this 2-core machine by `bench/bench_base_fidelity.py`",
        "(method in its docstring). Fidelity: cosine similarity of pooled features, int8 vs float network,",
        "over the 1,200 photos of fashion-tiny and fashion-val (original view). Accuracy: the recipe trained",
        f"on 300 photos and labelling the other 900, over {len(folds)} splits with disjoint training sets ({n} answers;",
        "split 0 is fashion-tiny → fashion-val, the benchmark; one split's standard error is about 1.4 points).",
        "Gained / lost: answers right here and wrong with the table's first row, and the reverse.",
        "",
        "Probe: a logistic regression on the original view's features over the same splits (scikit-learn, C = 0.05),",
        "which the float network can run too.",
        "",
        "| conversion | what | int8 sha1 | mean cosine | 1st percentile | worst | probe accuracy | accuracy, default recipe | per split | gained / lost |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| float network | float32 Keras, batch norms unfolded | - | 1 | 1 | 1 | {float_probe:.3f} | - | - | - |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {VARIANTS[r['name']][0]} | {r['sha1'][:8]}… | {r['mean']:.4f} | {r['p1']:.4f} | "
            f"{r['worst']:.4f} | {r['probe']:.3f} | {accuracies(r)} | {counts(r)} |"
        )
    if recipes:
        lines += [
            "",
            "| recipe (pinned bases) | what | accuracy | per split | gained / lost | labelling ms per photo |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | {RECIPES[r['name']][0]} | {accuracies(r)} | {counts(r)} | {r['ms']:.1f} |"
            for r in recipes
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
