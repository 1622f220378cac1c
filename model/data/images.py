"""Decode images deterministically into fixed-size uint8 RGB tensors.

Same bytes in, same tensor out, with Pillow as the only decoder: EXIF
orientation applied, converted to RGB (alpha dropped onto black), resized to
a square with bicubic filtering. Squashing rather than centre-cropping keeps the
whole object in view (garment photos are taller than wide); on fashion-tiny it
scored as well as cropping at 224 px and better at 260 px. The pixel
limit is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import io
import threading
import warnings
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ImageError

#: Part of the preprocessing identity; change it and CODE_VERSION together.
RESIZE_METHOD = "square-bicubic"


#: Decoded pixels this process holds at once (each image waits for room; one larger than all of it
#: runs alone). Eight 40-megapixel photos decoded together held 2.7 GB; this bounds it to about
#: 80 M pixels (some 700 MB of Pillow images) per process. It changes no bit.
DECODE_BUDGET_PIXELS = 80_000_000
#: After an image of this many pixels, give freed memory back to the system (glibc keeps it).
TRIM_AFTER_PIXELS = 4_000_000


class PixelBudget:
    """A counting limit on decoded pixels in flight, shared by this process's threads."""

    def __init__(self, limit: int) -> None:
        self._limit, self._used = limit, 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._room:
            self._room.wait_for(lambda: self._used == 0 or self._used + pixels <= self._limit)
            self._used += pixels
        try:
            yield
        finally:
            with self._room:
                self._used -= pixels
                self._room.notify_all()
            if pixels >= TRIM_AFTER_PIXELS:
                trim()


BUDGET = PixelBudget(DECODE_BUDGET_PIXELS)


def trim() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim; elsewhere nothing), so
    that a worker's memory comes back down after a large photo."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def decode_squares(
    data: bytes,
    sizes: tuple[int, ...],
    max_pixels: int,
    name: str = "image",
    count: Callable[[int, str], None] | None = None,
) -> list[np.ndarray]:
    """The image squashed to each of ``sizes`` (uint8 RGB), decoded once, within the pixel budget.
    ``count(pixels, name)`` hears of the image's size before any pixel is decoded (and may refuse)."""
    img = _open(data, max_pixels, name)
    width, height = img.size
    if count is not None:
        count(width * height, name)
    with BUDGET.hold(width * height):
        rgb = _rgb(_load(img, name))
        squares = [_square(rgb, size) for size in sizes]
        rgb.close()  # freed now, inside the budget, so that its release gives the memory back
        img.close()
    return squares


def decode_image(data: bytes, size: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """Return a (size, size, 3) uint8 array, or raise ImageError naming what is wrong."""
    return decode_squares(data, (size,), max_pixels, name)[0]


@contextlib.contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Pillow's failures while reading a header or pixels, as the ImageError naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is not a decodable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise ImageError(f"{name} is a {reason} image: {e}") from None


def _open(data: bytes, max_pixels: int, name: str) -> Image.Image:
    """The image's header, checked against the pixel limit before any pixel is decoded."""
    with _decoding(name):
        img = Image.open(io.BytesIO(data))
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")
    return img


def _load(img: Image.Image, name: str) -> Image.Image:
    with _decoding(name):
        img.load()
    return img


def _rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB, with any alpha laid onto black."""
    ImageOps.exif_transpose(img, in_place=True)  # in place: otherwise a copy even when upright
    # No copy that the result does not need (a 40-megapixel photo is 160 MB per copy): the same
    # bits as converting each time, at half the memory.
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", img.size)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def _square(img: Image.Image, size: int) -> np.ndarray:
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
