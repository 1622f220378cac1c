"""`pip install .[serve]` and `stl serve` on a machine that has no int8 base and no TensorFlow:
not ready, and a training request is refused with the remedy (503), never a bare 500."""

from __future__ import annotations

import time
from pathlib import Path

from api_testing import Site, run_api, train_body
from stl_testing import without_modules

REMEDY = (
    "install the convert extra (pip install 'static-transfer-learning[convert]'), or bring the converted base"
)


def test_a_service_without_the_base_says_how_to_bring_it(tmp_path: Path, site: Site) -> None:
    env = {
        **without_modules(tmp_path),
        "STL_BASE_CACHE": str(tmp_path / "empty-base-cache"),
        "FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}",
    }
    with run_api(tmp_path, env) as api:
        deadline = time.time() + 30
        while "could not be loaded" not in (ready := api.get("/readyz")).text and time.time() < deadline:
            time.sleep(0.2)
        assert ready.status_code == 503
        message = ready.json()["error"]
        assert message.startswith("base network efficientnet-lite2 could not be loaded: BaseUnavailable: ")
        assert REMEDY in message

        trained = api.post("/train", json=train_body(site))
        assert trained.status_code == 503, trained.text
        assert REMEDY in trained.json()["error"] and "tensorflow is not installed" in trained.json()["error"]
        assert api.get("/models").json() == {"models": []}
        assert "Traceback" not in api.log()
