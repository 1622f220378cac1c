"""Print the sha1 of every identity-bearing stage for a few PNG and JPEG images, as JSON.

Run natively, under CPU-dispatch settings and under emulated CPUs by
tests/test_portable_bits.py, whose golden literals these must equal.
Usage: python tests/portable_probe.py BASE.tflite [SIZE]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.bases.litert import UNIT_BOUND, Int8Base  # noqa: E402
from model.data.images import decode_image  # noqa: E402
from model.head import exact, logistic, products  # noqa: E402
from model.head.linear import Head, IntegerFeatures, LinearMap, standardisation  # noqa: E402
from model.head.products import Integers  # noqa: E402
from model.identity.tensors import dump_tensors  # noqa: E402
from model.identity.views import crop_source_size, view_of  # noqa: E402

#: (name, path): PNGs from the example set, JPEG photos committed beside them.
IMAGES = (
    ("checks-000.png", REPO / "example-data/images/checks/000.png"),
    ("dots.png", REPO / "example-data/infer/dots.png"),
    ("rocket.jpg", REPO / "tests/data/rocket.jpg"),
    ("coffee-progressive.jpg", REPO / "tests/data/coffee-progressive.jpg"),
)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def probe(base: bytes, size: int = 224) -> dict[str, str]:
    extractor = Int8Base(base)
    out: dict[str, str] = {}
    pixels = []
    for name, path in IMAGES:
        p = decode_image(path.read_bytes(), size, 10**8, name)
        pixels.append(p)
        out[f"tensor:{name}"] = sha1(dump_tensors({"image": p}))
    units = extractor.units(np.stack(pixels))
    for (name, _), u in zip(IMAGES, units, strict=True):
        out[f"features:{name}"] = sha1(dump_tensors({"units": u, "scale": np.array([extractor.scale])}))
    # A fixed head over these integer features: exact product, softmax.
    rng = np.random.Generator(np.random.PCG64(3))
    dim = units.shape[1]
    factor = np.full(dim, np.float64(extractor.scale))
    head = Head(
        rng.standard_normal((dim, 3)),
        rng.standard_normal(3),
        factor * units[0],
        np.full(dim, 0.5),
        0,
        factor=factor,
    )
    out["probabilities"] = sha1(head.probabilities(Integers.of(units, UNIT_BOUND)).tobytes())
    # The crop views (cut from the image squashed larger) of the first JPEG, through the base.
    larger = decode_image(IMAGES[2][1].read_bytes(), crop_source_size(size), 10**8)
    crops = np.stack([view_of(v, size, None, larger) for v in ("center", "top-left", "bottom-right")])
    crop_units = extractor.units(crops)
    out["features:rocket.jpg:crops"] = sha1(crop_units.tobytes())
    # The logistic head's arithmetic: fits, cross-validation, temperature, log; the exact products.
    x = np.concatenate([units, crop_units]).astype(np.int64)
    x = np.concatenate([x, x[:, ::-1] // 2 + 1])  # 14 rows: enough for 2 folds of 2 labels
    features = IntegerFeatures(Integers.of(x, UNIT_BOUND), factor)
    y = np.arange(len(x)) % 2
    mean, scale = standardisation(features)
    linear = LinearMap.of(factor, mean, np.full(dim, scale))
    wide = logistic.fit(features.units, y, 2, linear, 0.1)
    narrow = logistic.fit(
        Integers.of(x[:, :8], UNIT_BOUND), y, 2, LinearMap(linear.gain[:8], linear.offset[:8]), 0.01
    )
    cv = logistic.cross_validate(features.units, y, 2, linear, seed=3, folds=2)
    temperature = logistic.fit_temperature(cv.out_of_fold_logits, y)
    # Exponents over 400 binades by ldexp (exact; np.exp2 is not correctly rounded and its SIMD
    # variants differ by CPU, which would change the inputs, not the product).
    w = np.ldexp(rng.standard_normal((dim, 4)), rng.integers(-200, 200, (dim, 4)))
    g = rng.uniform(-1, 1, (len(x), 4))
    xt_g, colsum = products.transposed_times(features.units, g, np.arange(len(x)) % 3, 3 * len(x)).result()
    parts = [
        wide.kernel,
        wide.bias,
        narrow.kernel,
        narrow.bias,
        cv.out_of_fold_logits,
        cv.final.kernel,
        np.array([temperature]),
        products.times(features.units, w),
        xt_g,
        colsum,
    ]
    parts.append(exact.log(np.abs(w[:, 0]) + 1e-3))
    out["logistic"] = sha1(b"".join(np.ascontiguousarray(p, np.float64).tobytes() for p in parts))
    return out


if __name__ == "__main__":
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    print(json.dumps(probe(Path(sys.argv[1]).read_bytes(), size), sort_keys=True))
