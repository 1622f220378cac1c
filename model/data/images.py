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

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ImageError

#: Part of the preprocessing identity; change it and CODE_VERSION together.
RESIZE_METHOD = "square-bicubic"


def decode_image(data: bytes, size: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """Return a (size, size, 3) uint8 array, or raise ImageError naming what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is not a decodable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise ImageError(f"{name} is a {reason} image: {e}") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size)
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    img = img.convert("RGB")
    return _square(img, size)


def _square(img: Image.Image, size: int) -> np.ndarray:
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
