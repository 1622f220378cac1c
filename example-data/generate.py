"""Generate the offline example data set: three texture classes, byte-identical on every run.

Usage: python example-data/generate.py [--out DIR]   (DIR defaults to this script's folder)

Reproducibility rules followed below, and why:
- Every image gets its own numpy Generator seeded from (label, split, index), so images do not depend on
  each other or on the order they are drawn in.
- Only ``Generator.random``/``integers`` are used: they are pure bit arithmetic. ``normal`` and friends
  can call the platform's libm, whose last-bit results differ between systems.
- Pixel maths uses only IEEE-exact operations (+ - * / sqrt, floor, min/max, abs) and no float
  reductions: numpy's vectorised sin/exp differ by CPU (SIMD paths), which could flip a rounded pixel.
  Orientations are therefore integer direction vectors normalised with sqrt, and waves are triangular.
- PNGs are written by Pillow with fixed options and no metadata chunks (no time, no text, no dpi).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128
PER_LABEL = 24
LABELS = ("stripes", "dots", "checks")
BASE_SEED = 20240607
TRAIN_SPLIT, INFER_SPLIT = 0, 1

Rng = np.random.Generator
Canvas = np.ndarray  # float64, shape (SIZE, SIZE, 3), values nominally in [0, 255]

# Pixel-centre coordinates shared by every painter.
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5


def _direction(rng: Rng) -> tuple[float, float]:
    """A random unit vector built from small integers, so no trig is needed to rotate a pattern."""
    while True:
        a, b = (int(v) for v in rng.integers(-7, 8, size=2))
        if a or b:
            n = float(np.sqrt(float(a * a + b * b)))
            return a / n, b / n


def _colour(rng: Rng) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float64)


def _palette(rng: Rng, k: int) -> list[np.ndarray]:
    """k colours pairwise far apart (summed channel distance), so the pattern stays visible on every image."""
    while True:
        cols = [_colour(rng) for _ in range(k)]
        if all(np.abs(cols[i] - cols[j]).sum() >= 180 for i in range(k) for j in range(i + 1, k)):
            return cols


def _tri(t: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1, in [-1, 1]: a trig-free stand-in for a cosine."""
    return 2.0 * np.abs(2.0 * (t - np.floor(t)) - 1.0) - 1.0


def _band(t: np.ndarray, period: float, duty: float) -> np.ndarray:
    """Anti-aliased 0/1 band mask along coordinate t (pixels); edges ramp over about one pixel."""
    # _tri changes by 4 per period, so scaling by period/4 turns it into a distance in pixels.
    dist = (_tri(t / period) - (1.0 - 2.0 * duty)) * (period / 4.0)
    return np.clip(dist + 0.5, 0.0, 1.0)


def _blend(canvas: Canvas, mask: np.ndarray, colour: np.ndarray) -> Canvas:
    m = mask[..., None]
    return canvas * (1.0 - m) + colour * m


def _smooth_noise(rng: Rng, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly (exact arithmetic only)."""
    grid = rng.random((cells + 1, cells + 1))
    pos = (np.arange(SIZE, dtype=np.float64) + 0.5) * (cells / SIZE)
    i0 = np.minimum(np.floor(pos).astype(np.intp), cells - 1)
    f = pos - i0
    gy0, gy1 = grid[i0], grid[i0 + 1]
    top = gy0[:, i0] * (1.0 - f) + gy0[:, i0 + 1] * f
    bot = gy1[:, i0] * (1.0 - f) + gy1[:, i0 + 1] * f
    return top * (1.0 - f[:, None]) + bot * f[:, None]


def _background(rng: Rng, colour: np.ndarray) -> Canvas:
    """A flat colour with a faint cloudy texture, so the background is never a constant."""
    tex = (_smooth_noise(rng, 6) - 0.5) * 36.0 + (_smooth_noise(rng, 16) - 0.5) * 14.0
    return colour + tex[..., None]


def paint_stripes(rng: Rng) -> Canvas:
    bg, fg = _palette(rng, 2)
    canvas = _background(rng, bg)
    cx, cy = _direction(rng)
    period = 8.0 + 18.0 * rng.random()
    duty = 0.3 + 0.4 * rng.random()
    # A gentle triangular wobble along the stripes keeps them from being perfectly ruled lines.
    along = -_XX * cy + _YY * cx
    wobble = (1.5 + 3.0 * rng.random()) * _tri(along / (40.0 + 60.0 * rng.random()) + rng.random())
    t = _XX * cx + _YY * cy + wobble + period * rng.random()
    canvas = _blend(canvas, _band(t, period, duty), fg)
    if rng.random() < 0.5:  # sometimes a thin accent stripe between the wide ones
        accent = _palette(rng, 1)[0]
        canvas = _blend(canvas, _band(t + period / 2.0, period, 0.12), accent)
    return canvas


def paint_dots(rng: Rng) -> Canvas:
    bg, fg, fg2 = _palette(rng, 3)
    canvas = _background(rng, bg)
    spacing = 14.0 + 16.0 * rng.random()
    radius = spacing * (0.18 + 0.17 * rng.random())
    jitter = spacing * 0.35 * rng.random()
    cx, cy = _direction(rng)
    ox, oy = spacing * rng.random(), spacing * rng.random()
    two_tone = rng.random() < 0.5
    # A rotated, jittered (optionally hexagonal) lattice covering the canvas plus a margin.
    hexagonal = rng.random() < 0.5
    n = int(SIZE * 1.5 / spacing) + 2
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            u = (i + (0.5 if hexagonal and j % 2 else 0.0)) * spacing + ox + jitter * (rng.random() - 0.5)
            v = j * spacing + oy + jitter * (rng.random() - 0.5)
            px = SIZE / 2 + u * cx - v * cy
            py = SIZE / 2 + u * cy + v * cx
            r = radius * (0.8 + 0.4 * rng.random())
            colour = fg2 if two_tone and rng.random() < 0.4 else fg
            if -r - 1 <= px <= SIZE + r + 1 and -r - 1 <= py <= SIZE + r + 1:
                dist = np.sqrt((_XX - px) ** 2 + (_YY - py) ** 2)
                canvas = _blend(canvas, np.clip(r - dist + 0.5, 0.0, 1.0), colour)
    return canvas


def paint_checks(rng: Rng) -> Canvas:
    bg, fg, fg2 = _palette(rng, 3)
    canvas = _background(rng, bg)
    cx, cy = _direction(rng)
    cell = 7.0 + 15.0 * rng.random()
    u = _XX * cx + _YY * cy + cell * rng.random()
    v = -_XX * cy + _YY * cx + cell * rng.random()
    if rng.random() < 0.6:
        # Checkerboard: a soft XOR of two perpendicular half-duty band masks.
        mu, mv = _band(u, 2.0 * cell, 0.5), _band(v, 2.0 * cell, 0.5)
        return _blend(canvas, mu * (1.0 - mv) + (1.0 - mu) * mv, fg)
    # Plaid: translucent crossing bands, whose overlaps form the darker/lighter squares.
    period = 2.0 * cell
    alpha = 0.55 + 0.3 * rng.random()
    canvas = _blend(canvas, alpha * _band(u, period, 0.35 + 0.2 * rng.random()), fg)
    canvas = _blend(canvas, alpha * _band(v, period, 0.35 + 0.2 * rng.random()), fg2)
    thin = _palette(rng, 1)[0]
    return _blend(canvas, _band(u + period / 2.0, period, 0.08), thin)


PAINTERS: dict[str, Callable[[Rng], Canvas]] = {
    "stripes": paint_stripes,
    "dots": paint_dots,
    "checks": paint_checks,
}


def render(label: str, split: int, index: int) -> np.ndarray:
    """One uint8 RGB image, a pure function of (label, split, index)."""
    rng = np.random.default_rng([BASE_SEED, LABELS.index(label), split, index])
    canvas = PAINTERS[label](rng)
    # Light grain (triangular, from two uniforms) in 2x2 blocks: per-pixel grain is what PNG compresses
    # worst, and blocks keep the folder small. No global gain: the palettes already vary, and non-unit
    # gain made the files ~20% bigger.
    half = SIZE // 2
    grain = (rng.random((half, half, 1)) - rng.random((half, half, 1))) * 6.0
    canvas = canvas + grain.repeat(2, axis=0).repeat(2, axis=1)
    return np.clip(np.floor(canvas + 0.5), 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=9, optimize=False)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha1(data).hexdigest()


def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


#: What train.json (and `make demo`) trains: a model is named by its recipe, so the body that
#: labels with it can name it before it exists (tests/test_readme_examples.py holds both to it).
DEMO_MODEL_SHA1 = "7aa64230f910aa6116f6ddb9966dc13b3307f156"


def generate(out: Path) -> str:
    """Write the whole data set under out and return the sha1 of train.csv."""
    # Drop stale PNGs from earlier versions so the folder holds exactly what the CSV lists.
    for sub in ("images", "infer"):
        for old in (out / sub).glob("**/*.png"):
            old.unlink()

    rows = []
    for label in LABELS:
        for i in range(PER_LABEL):
            rel = f"images/{label}/{i:03d}.png"
            rows.append(f"{rel},{label},{_write(out / rel, png_bytes(render(label, TRAIN_SPLIT, i)))}\n")
        _write(out / "infer" / f"{label}.png", png_bytes(render(label, INFER_SPLIT, 0)))
    csv_sha1 = _write(out / "train.csv", "".join(sorted(rows)).encode())

    train = {
        "metadata": {"random_seed": 1234},
        "model": {"uri": ""},
        "csv": {"url": "example-data/train.csv", "sha1": csv_sha1},
    }
    infer = {"model": {"uri": "", "sha1": DEMO_MODEL_SHA1}, "image": {"url": "example-data/infer/dots.png"}}
    _write(out / "train.json", _json_bytes(train))
    _write(out / "infer.json", _json_bytes(infer))
    return csv_sha1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args(argv)
    print(f"train.csv sha1 {generate(args.out)}")


if __name__ == "__main__":
    main()
