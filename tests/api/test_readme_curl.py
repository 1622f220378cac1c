"""Issue 41, item 2: the README's curl lines and the bodies in example-data/ work as written.

Against `stl serve` started as the README's line starts it (IMPORT_ROOT on the clone, on this
test's own port), from the repository root, offline: the training body is sent until its model
is ready, then the labelling body labels the held-out dots image with the model it names.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from api_testing import TRAIN_TIMEOUT, run_api
from stl_testing import REPO


def readme_lines() -> tuple[str, list[str]]:
    """The serve line and the curl lines of the README's HTTP API example."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## HTTP API") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    return lines[0], lines[1:]


def test_the_readmes_curl_lines_train_and_label_as_written(tmp_path: Path) -> None:
    serve, curls = readme_lines()
    assert serve == "IMPORT_ROOT=$PWD stl serve --bind 127.0.0.1:8080 &"
    assert [c.split()[2] for c in curls] == ["localhost:8080/train", "localhost:8080/infer"]
    train, infer = curls
    with run_api(tmp_path, {"IMPORT_ROOT": str(REPO)}, workers=1) as api:
        port = api.url.rsplit(":", 1)[1]

        def curl(line: str) -> dict:
            line = line.replace("localhost:8080", f"127.0.0.1:{port}")
            done = subprocess.run(["sh", "-c", line], cwd=REPO, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        first = curl(train)
        assert first == {"model_sha1": "7aa64230f910aa6116f6ddb9966dc13b3307f156", "status": "new"}
        deadline = time.time() + TRAIN_TIMEOUT
        while (polled := curl(train))["status"] != "ready":
            assert polled["status"] in ("new", "in_progress") and time.time() < deadline, polled
            time.sleep(0.5)
        labelled = curl(infer)
        assert max(labelled, key=labelled.get) == "dots" and labelled["dots"] > 0.999, labelled
        assert set(labelled) == {"checks", "dots", "stripes"}
