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
