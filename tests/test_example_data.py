"""The committed example data is exactly what example-data/generate.py produces, and its CSV is honest."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "example-data"
GENERATED_DIRS = ("images", "infer")
GENERATED_FILES = ("train.csv", "train.json", "infer.json")


def _generated(root: Path) -> dict[str, bytes]:
    """Every file the generator owns under root, keyed by relative path."""
    files = {name: (root / name).read_bytes() for name in GENERATED_FILES}
    for sub in GENERATED_DIRS:
        files.update({p.relative_to(root).as_posix(): p.read_bytes() for p in (root / sub).rglob("*.png")})
    return files


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example-data")
    subprocess.run([sys.executable, str(DATA / "generate.py"), "--out", str(out)], check=True)
    return out


def test_regeneration_is_byte_identical(fresh: Path) -> None:
    committed, regenerated = _generated(DATA), _generated(fresh)
    assert sorted(regenerated) == sorted(committed)
    differing = [name for name in committed if committed[name] != regenerated[name]]
    # PNG byte equality also pins the zlib build behind Pillow, so say whether the pixels or only the
    # compression changed: the latter means a different zlib, not a broken generator.
    same_pixels = [
        name
        for name in differing
        if name.endswith(".png")
        and np.array_equal(
            np.asarray(Image.open(io.BytesIO(committed[name]))),
            np.asarray(Image.open(io.BytesIO(regenerated[name]))),
        )
    ]
    assert differing == [], f"differ: {differing[:5]} (of which same pixels, other bytes: {same_pixels[:5]})"


def test_csv_rows_match_their_files() -> None:
    lines = (DATA / "train.csv").read_text().splitlines()
    assert lines == sorted(lines)
    assert len(lines) == 3 * 24
    for line in lines:
        rel, label, sha1 = line.split(",")
        assert rel.startswith(f"images/{label}/")
        assert hashlib.sha1((DATA / rel).read_bytes()).hexdigest() == sha1, rel
    listed = {line.split(",")[0] for line in lines}
    assert not any(p.relative_to(DATA).as_posix() in listed for p in (DATA / "infer").glob("*.png"))


def test_request_bodies() -> None:
    train = json.loads((DATA / "train.json").read_text())
    assert train["csv"]["url"] == "example-data/train.csv"
    assert train["csv"]["sha1"] == hashlib.sha1((DATA / "train.csv").read_bytes()).hexdigest()
    infer = json.loads((DATA / "infer.json").read_text())
    assert infer["model"]["sha1"] == "7aa64230f910aa6116f6ddb9966dc13b3307f156"  # what train.json trains
    assert (DATA.parent / infer["image"]["url"]).is_file()
