"""The README's Python API example runs as written, and gives what its comments say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from stl_testing import REPO, run_stl


def python_api_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_python_api_example_runs_and_its_comments_are_true(tmp_path: Path) -> None:
    (tmp_path / "example-data").symlink_to(REPO / "example-data")
    probe = tmp_path / "probe.py"
    # The README's lines, then what we want to know of the names they bound.
    probe.write_text(
        python_api_example()
        + "\nimport json, hashlib\n"
        + "print(json.dumps({'sha1': m.sha1, 'labels': m.labels, 'acc': m.validation_accuracy,"
        + " 'dots': m.predict(['example-data/infer/dots.png'])[0],"
        + " 'verified': api.verify(m.sha1)['identical'], 'listed': [r['model_sha1'] for r in api.models()],"
        + " 'export': hashlib.sha1(open('model.tflite', 'rb').read()).hexdigest(),"
        + " 'export_said': m.export('model.tflite')}))\n"
    )
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(probe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sha1"] == "7aa64230f910aa6116f6ddb9966dc13b3307f156"  # what `make demo` trains
    assert out["labels"] == ["checks", "dots", "stripes"] and round(out["acc"], 3) == 0.986
    assert round(out["dots"]["dots"], 5) == 0.99987 and f"{out['dots']['checks']:.1e}" == "1.2e-04"
    assert out["verified"] is True and out["listed"] == [out["sha1"]]
    assert out["export"] == out["export_said"]


def test_stl_version(tmp_path: Path) -> None:
    run = run_stl(["--version"], tmp_path / "data")
    assert run.code == 0 and re.fullmatch(r"stl \S+ \(recipes stl-4\)\n", run.out), run.out


def test_the_tflite_snippet_labels_a_jpeg_as_stl_infer_does(tmp_path: Path) -> None:
    """The README's lines that run an exported model, on a JPEG with an EXIF orientation."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Export: one file") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    code = [line for line in snippet.splitlines() if line.strip() and not line.startswith(("import", "from"))]
    assert len(code) <= 10, code
    data = tmp_path / "data"
    trained = run_stl(["train", str(REPO / "example-data" / "train.csv"), "--image-size", "96"], data)
    model = trained.json["model_sha1"]
    assert run_stl(["export", model, "-o", str(tmp_path / "model.tflite")], data).code == 0
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; shown rotated 90 degrees
    Image.open(REPO / "tests" / "data" / "rocket.jpg").save(tmp_path / "photo.jpg", quality=90, exif=exif)
    probe = tmp_path / "probe.py"
    probe.write_text(snippet + "\nprint(json.dumps(probabilities))\n")
    proc = subprocess.run(
        [sys.executable, str(probe)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = json.loads(proc.stdout.strip().splitlines()[-1])
    served = json.loads(run_stl(["infer", "--model", model, str(tmp_path / "photo.jpg")], data).out)
    assert max(exported, key=exported.get) == served["label"]
    for label, p in served["probabilities"].items():
        assert abs(exported[label] - p) < 2e-5, (label, exported[label], p)
