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

from model.bases.litert import Int8Base  # noqa: E402
from model.data.images import decode_image  # noqa: E402
from model.head import exact, logistic  # noqa: E402
from model.head.train import Head  # noqa: E402
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
    feats = extractor.features(np.stack(pixels))
    for (name, _), f in zip(IMAGES, feats, strict=True):
        out[f"features:{name}"] = sha1(dump_tensors({"features": f}))
    # A fixed head over these features: standardise, logits, exact softmax.
    rng = np.random.Generator(np.random.PCG64(3))
    head = Head(
        rng.standard_normal((feats.shape[1], 3)), rng.standard_normal(3), feats[0], feats[1] * 0 + 0.5, 0
    )
    out["probabilities"] = sha1(head.probabilities(feats).tobytes())
    # The crop views (cut from the image squashed larger) of the first JPEG, through the base.
    larger = decode_image(IMAGES[2][1].read_bytes(), crop_source_size(size), 10**8)
    crops = np.stack([view_of(v, size, None, larger) for v in ("center", "top-left", "bottom-right")])
    out["features:rocket.jpg:crops"] = sha1(extractor.features(crops).tobytes())
    # The logistic head's arithmetic: both forms of the solver, cross-validation, temperature, log.
    x = np.concatenate([feats, extractor.features(crops)]).astype(np.float64)
    x = np.concatenate([x, x[:, ::-1] * 0.5 + 1.0])  # 14 rows: enough for 2 folds of 2 labels
    y = np.arange(len(x)) % 2
    dual, _ = logistic.fit(x, y, 2, 0.1)
    primal, _ = logistic.fit(x[:, :8], y, 2, 0.01)
    cv = logistic.cross_validate(x, y, 2, seed=3, folds=2)
    temperature = logistic.fit_temperature(cv.out_of_fold_logits, y)
    parts = [
        dual.kernel,
        dual.bias,
        primal.kernel,
        primal.bias,
        cv.out_of_fold_logits,
        np.array([temperature]),
    ]
    parts.append(exact.log(np.abs(x[0]) + 1e-3))
    out["logistic"] = sha1(b"".join(np.ascontiguousarray(p, np.float64).tobytes() for p in parts))
    return out


if __name__ == "__main__":
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    print(json.dumps(probe(Path(sys.argv[1]).read_bytes(), size), sort_keys=True))
