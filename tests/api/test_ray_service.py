"""The service with EXECUTOR=ray: gunicorn only records and submits; a real Ray cluster trains.

POST /train answers at once while a detached actor on the cluster (not a thread
of a gunicorn worker) runs the job under the service's own fetch policy, and the
model is the local executor's golden one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from api_testing import Api, Site, poll_until_done, run_api
from ray_cluster import ray_cluster
from test_portable_bits import EMULATED_EXAMPLE

from store import LocalStore

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def ray_api(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Api]:
    with ray_cluster(cpus=2) as cluster:
        env = {**cluster.env, "FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}", "PRELOAD_BASE": "false"}
        with run_api(tmp_path_factory.mktemp("ray-api"), env) as api:
            yield api


def test_train_on_ray_from_the_service_gives_the_golden_model(ray_api: Api, site: Site) -> None:
    body = {
        "metadata": {
            "random_seed": 7,
            "base": "efficientnet-lite0",
            "views": ["original", "mirrored", "top-right"],
            "image_size": 128,
        },
        "csv": {"url": f"{site.url}/train.csv", "sha1": site.csv_sha1()},
    }
    responses = poll_until_done(ray_api, body)
    final = responses[-1].json()
    assert final["status"] == "ready", final
    assert {k: final[k] for k in ("model_sha1", "manifest_sha1", "weights_sha1")} == {
        k: EMULATED_EXAMPLE[k] for k in ("model_sha1", "manifest_sha1", "weights_sha1")
    }
    assert "training submitted to Ray" in ray_api.log()
    store = LocalStore(ray_api.data_dir)
    (name,) = store.list_refs(f"models/{final['model_sha1']}/runs")
    run = json.loads(store.get(store.get_ref(name).decode()))  # type: ignore[union-attr]
    assert run["environment"]["executor"] == "ray"
    assert run["pid"] not in ray_api.worker_pids(), "the job ran in a gunicorn worker"


def test_the_submitting_request_answers_before_any_work(ray_api: Api, site: Site) -> None:
    body = {
        "metadata": {"random_seed": 8, "base": "efficientnet-lite0", "views": ["original"], "image_size": 96},
        "csv": {"url": f"{site.url}/train.csv", "sha1": site.csv_sha1()},
    }
    responses = poll_until_done(ray_api, body)
    assert responses[-1].json()["status"] == "ready", responses[-1].json()
    assert responses[0].json()["status"] == "new"  # the submitting request returned before any work
