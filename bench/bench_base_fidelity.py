"""How faithful each int8 conversion of a base is to its float network, and what that does to accuracy.

    .venv/bin/python bench/bench_base_fidelity.py [--base efficientnet-lite2] [--only VARIANT ...]
        [--no-accuracy] [--out FILE]

Five-fold CV on fashion-tiny's 300 photos could not see a 3-point loss (issue 39), so this bench
measures two things the CV cannot blur:

* **fidelity**, which needs no labels: each of the 1,200 photos of fashion-tiny and fashion-val,
  squashed to the base's size (the "original" view), through the float Keras network (batch norms
  unfolded, float32, as the weights were published) and through the int8 file; the cosine similarity
  of the two pooled feature vectors, its mean over the photos, the 1st percentile and the worst;
* **accuracy on fashion-val**: the default recipe trained on fashion-tiny's 300 photos (as a folder)
  in a fresh store whose base ref names the variant's int8 file, then labelling fashion-val's 900;
  the paired difference against the first variant, photo by photo (right here and wrong there, and
  the reverse).

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
    from model.bases.quantize import lite_keras, to_int8
    from model.bases.registry import keras_name, packaged_state_dict

    network = lite_keras(
        packaged_state_dict(spec),
        spec.native_size,
        spec.width,
        spec.depth,
        keras_name(spec),
        spec.tap_stage,
        folded,
    )
    images = seven_view_calibration(spec.native_size) if views else None
    return to_int8(network, spec.native_size, exact=calibration == "exact", residual=residual, images=images)


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


def val_predictions(
    tiny_root: Path, val: list[tuple[Path, str]], options: dict, base: tuple | None = None
) -> tuple[list[str], float]:
    """A recipe trained on fashion-tiny in a fresh store (``base``: (spec, int8 bytes) to use
    instead of the pinned file); fashion-val's labels and the labelling's ms per photo."""
    import shutil

    from model import api
    from model.bases.registry import _packaged_source, _record
    from model.identity.refs import base_ref
    from store import LocalStore

    root = WORK / "store"
    shutil.rmtree(root, ignore_errors=True)
    store = LocalStore(str(root))
    if base is not None:
        spec, data = base
        sha1 = store.put(data)
        store.set_ref(base_ref(spec.name), _record(spec, sha1, _packaged_source(spec)))
        options = {**options, "base": spec.name}
    model = api.train(str(tiny_root), store=str(root), **options)
    model.predict([str(val[0][0])])  # loaded, warm
    started = time.perf_counter()
    answers = model.predict([str(p) for p, _ in val])
    ms = (time.perf_counter() - started) * 1000 / len(val)
    return [max(a, key=a.get) for a in answers], ms


def scored(said: list[str], val: list[tuple[Path, str]], first: np.ndarray | None) -> dict:
    right = np.array([s == label for s, (_, label) in zip(said, val, strict=True)])
    first = right if first is None else first
    return {
        "right": right,
        "accuracy": float(right.mean()),
        "gained": int((right & ~first).sum()),
        "lost": int((~right & first).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnet-lite2")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-fidelity.md")
    args = parser.parse_args()
    if not (DATASETS / "fashion-val").is_dir():
        sys.exit(f"this bench needs {DATASETS}/fashion-tiny and fashion-val")
    from model.bases.fidelity import cosines
    from model.bases.litert import Int8Base
    from model.bases.registry import get_spec
    from store.hashing import sha1_bytes

    WORK.mkdir(parents=True, exist_ok=True)
    spec = get_spec(args.base)
    tiny, val = photos("fashion-tiny"), photos("fashion-val")
    tiny_root = DATASETS / "fashion-tiny" / "images"
    started = time.time()
    pixels = decoded([p for p, _ in tiny + val], spec.native_size)
    reference = float_reference(spec, pixels)
    print(f"decoded and float features: {time.time() - started:.0f} s", file=sys.stderr)
    rows, first = [], None
    for name in args.only:
        started = time.time()
        data = variant_bytes(spec, name)
        cos = cosines(Int8Base(data), pixels, reference)
        row = {
            "name": name,
            "sha1": sha1_bytes(data),
            "mean": cos.mean(),
            "p1": np.percentile(cos, 1),
            "worst": cos.min(),
        }
        if not args.no_accuracy:
            row |= scored(val_predictions(tiny_root, val, {}, (spec, data))[0], val, first)
            first = row["right"] if first is None else first
        print(
            name,
            {k: v for k, v in row.items() if k != "right"},
            f"({time.time() - started:.0f} s)",
            file=sys.stderr,
        )
        rows.append(row)
    recipes, first = [], None
    for name in [] if args.no_accuracy else args.recipes:
        said, ms = val_predictions(tiny_root, val, RECIPES[name][1])
        row = {"name": name, "ms": ms} | scored(said, val, first)
        first = row["right"] if first is None else first
        print(name, {k: v for k, v in row.items() if k != "right"}, file=sys.stderr)
        recipes.append(row)

    def paired(r: dict) -> str:
        return f"+{r['gained']} / -{r['lost']}" if "gained" in r else "-"

    lines = [
        f"# Int8 conversions of {spec.name} and recipes: fidelity and fashion-val accuracy (one run)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this 2-core machine by `bench/bench_base_fidelity.py`",
        "(method in its docstring). Fidelity: cosine similarity of pooled features, int8 vs float, over the",
        "1,200 photos of fashion-tiny and fashion-val (original view). Accuracy: the recipe trained on fashion-tiny's",
        "300 photos, fashion-val's 900 labelled (one run's standard error is about 1.4 points; the paired",
        "count is finer: photos right here and wrong with the table's first row, and the reverse).",
        "",
        "| conversion | what | int8 sha1 | mean cosine | 1st percentile | worst | fashion-val accuracy (default recipe) | gained / lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "-"
        lines.append(
            f"| {r['name']} | {VARIANTS[r['name']][0]} | {r['sha1'][:8]}… | {r['mean']:.4f} | {r['p1']:.4f} | "
            f"{r['worst']:.4f} | {acc} | {paired(r)} |"
        )
    if recipes:
        lines += [
            "",
            "| recipe (pinned bases) | what | fashion-val accuracy | gained / lost | labelling ms per photo |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | {RECIPES[r['name']][0]} | {r['accuracy']:.3f} | {paired(r)} | {r['ms']:.1f} |"
            for r in recipes
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
