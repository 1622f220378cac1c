"""How faithful an int8 base is to the float network it was converted from: no labels needed.

Five-fold CV on a few hundred labelled photos moves by a point or more from chance alone, so it
cannot tell a good int8 conversion from a worse one (issue 39). Fidelity can: per image, the cosine
similarity between the int8 file's dequantised pooled features and the float network's (float32,
batch norms unfolded: the network as published). It is deterministic up to the float network's
last bits, which move a mean cosine by far less than any conversion change does.

The images are natural photos and scans that scikit-image ships and that calibration never sees
(``quantize.CALIBRATION_FILES`` are the others), each in the seven views a recipe may average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.bases.litert import Int8Base
from model.bases.quantize import normalise
from model.bases.registry import BaseSpec, packaged_network
from model.data.images import decode_squares
from model.identity.views import VIEWS, tensor_sizes, view_of

#: skimage/data files that calibration does not use: a colour photo, grey photos, scans, graphics.
HELD_OUT_FILES = (
    "motorcycle_right.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "cell.png",
    "clock_motion.png",
    "microaneurysms.png",
    "page.png",
    "text.png",
    "chessboard_RGB.png",
    "logo.png",
    "phantom.png",
)


def held_out_images(size: int) -> np.ndarray:
    """(84, size, size, 3) uint8: each held-out file in each of the seven views, in a fixed order."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    out = []
    for name in HELD_OUT_FILES:
        pixels, larger = decode_squares((root / name).read_bytes(), tensor_sizes(size, VIEWS), 10**8, name)
        out += [view_of(view, size, pixels, larger) for view in VIEWS]
    return np.stack(out)


def float_network(spec: BaseSpec) -> Any:
    """A packaged base's float Keras network (unfolded), taking (pixel - 127) / 128."""
    return packaged_network(spec, folded=False)


def float_features(network: Any, pixels: np.ndarray, batch: int = 16) -> np.ndarray:
    """(n, dim) float32 pooled features of ``pixels`` (n, s, s, 3 uint8) through the float network."""
    parts = [
        network.predict(normalise(pixels[i : i + batch]), verbose=0) for i in range(0, len(pixels), batch)
    ]
    return np.concatenate(parts).astype(np.float32)


def cosines(base: Int8Base, pixels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per image: cosine similarity of the int8 base's features and ``reference`` (the float ones)."""
    return row_cosines(base.features(pixels), reference)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
