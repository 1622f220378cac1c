"""The views a recipe averages, and their geometry: the one place that knows where a crop lies.

Training (``chunks``), inference (``infer``), the exported graph (``export``) and gc's
protection of a job's cache (``gc``) all derive the image sizes and crop offsets from
here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: The views a recipe may average: the squashed image, its mirror, and five fixed crops (centre
#: and corners) of side CROP_FRACTION taken from the image squashed to size / CROP_FRACTION.
VIEWS = ("original", "mirrored", "center", "top-left", "top-right", "bottom-left", "bottom-right")
CROPS = VIEWS[2:]
CROP_FRACTION = 0.875


def crop_source_size(size: int) -> int:
    """The side of the squashed image that the crop views are cut from."""
    return round(size / CROP_FRACTION)


def tensor_sizes(size: int, views: Iterable[str]) -> list[int]:
    """The squashed sizes an image is decoded to for these views: ``size``, then the crops' source."""
    return [size] + ([crop_source_size(size)] if any(v in CROPS for v in views) else [])


def crop_offset(view: str, big: int, size: int) -> tuple[int, int]:
    """(top, left) of a crop view's ``size`` square inside the ``big`` square it is cut from."""
    top = {"center": (big - size) // 2, "top-left": 0, "top-right": 0}.get(view, big - size)
    left = {"center": (big - size) // 2, "top-left": 0, "bottom-left": 0}.get(view, big - size)
    return top, left


def view_of(view: str, size: int, pixels: np.ndarray | None, larger: np.ndarray | None) -> np.ndarray:
    """One view of an image, ``size`` square: from ``pixels`` (the image squashed to ``size``)
    or, for a crop, from ``larger`` (squashed to ``crop_source_size(size)``)."""
    if view == "original":
        assert pixels is not None
        return pixels
    if view == "mirrored":
        assert pixels is not None
        return np.ascontiguousarray(pixels[:, ::-1, :])
    assert larger is not None
    top, left = crop_offset(view, larger.shape[0], size)
    return np.ascontiguousarray(larger[top : top + size, left : left + size])
