"""The same recipe gives the same model on every backend, and models travel between them by hash.

Real servers, started for the session (tests/conftest.py): moto's S3 server
(driven through boto3 as MinIO would be) and a js-ipfs node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stl_testing import EXAMPLE, FAKE_AWS, FAST, run_stl, small_dataset

BUCKET = "stl-e2e"
S3_ENV = FAKE_AWS


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, ipfs_node: Any) -> dict:
    """Train the same CSV into three stores: local, S3, IPFS."""
    tmp = tmp_path_factory.mktemp("e2e")
    csv = small_dataset(tmp / "set")
    envs = {
        "local": {},
        "s3": {**S3_ENV, "STORE_URI": f"s3://{BUCKET}/store", "S3_ENDPOINT_URL": s3_endpoint},
        "ipfs": {"STORE_URI": "ipfs://", "IPFS_ADDRESS": ipfs_node.multiaddr},
    }
    out = {}
    for name, env in envs.items():
        run = run_stl(["train", str(csv), *FAST], tmp / f"cache-{name}", env=env)
        assert run.code == 0, f"{name}: {run.err}"
        out[name] = {"run": run.json, "env": env, "data": tmp / f"cache-{name}"}
    out["tmp"] = tmp
    return out


def test_identical_model_hashes_on_every_backend(trained: dict) -> None:
    runs = {name: trained[name]["run"] for name in ("local", "s3", "ipfs")}
    assert len({r["model_sha1"] for r in runs.values()}) == 1
    assert len({r["weights_sha1"] for r in runs.values()}) == 1
    assert len({r["manifest_sha1"] for r in runs.values()}) == 1  # CIDs stay out of the identity
    assert all(r["status"] == "ready" for r in runs.values())


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_infer_on_each_backend_from_a_fresh_cache(trained: dict, backend: str) -> None:
    model = trained[backend]["run"]["model_sha1"]
    image = str(EXAMPLE / "infer" / "stripes.png")
    # A second machine: same remote store, empty local cache.
    fresh = trained["tmp"] / f"second-{backend}"
    data = trained[backend]["data"] if backend == "local" else fresh
    run = run_stl(["infer", "--model", model, image], data, env=trained[backend]["env"])
    assert run.code == 0, run.err
    reference = run_stl(["infer", "--model", model, image], trained["local"]["data"])
    assert json.loads(run.out) == json.loads(reference.out)


def test_ipfs_publish_and_fetch_by_manifest_cid(trained: dict, ipfs_node: Any) -> None:
    """IPFS refs are per node, so a second machine names the model by its manifest's CID."""
    model = trained["local"]["run"]["model_sha1"]
    csv = trained["tmp"] / "set" / "train.csv"
    env = {"IPFS_ADDRESS": ipfs_node.multiaddr}
    run = run_stl(
        ["train", str(csv), *FAST, "--force", "--publish", "ipfs://"], trained["local"]["data"], env=env
    )
    assert run.code == 0, run.err
    uri = run.json["published"]["model_uri"]
    assert uri.startswith("ipfs:///")
    image = str(EXAMPLE / "infer" / "dots.png")
    served = run_stl(
        ["infer", "--model", model, "--model-uri", uri, image], trained["tmp"] / "ipfs-elsewhere", env=env
    )
    assert served.code == 0, served.err
    reference = run_stl(["infer", "--model", model, image], trained["local"]["data"])
    assert json.loads(served.out) == json.loads(reference.out)


def test_ipfs_cids_live_in_the_store_not_in_the_manifest(trained: dict) -> None:
    """Backend-native ids are the store's business: the manifest (an identity) never holds them."""
    from store import open_store

    run = trained["ipfs"]["run"]
    shown = json.loads(
        run_stl(["show", run["model_sha1"]], trained["ipfs"]["data"], env=trained["ipfs"]["env"]).out
    )
    assert "cid" not in json.dumps(shown)
    store = open_store("ipfs://", str(trained["ipfs"]["data"]))
    cid = store.native_id(run["weights_sha1"])
    assert cid is not None and cid.startswith(("bafkrei", "bafybei"))  # CIDv1, base32


def test_publish_to_s3_and_serve_elsewhere(trained: dict, s3_endpoint: str) -> None:
    model = trained["local"]["run"]["model_sha1"]
    csv = trained["tmp"] / "set" / "train.csv"
    uri = f"s3://{BUCKET}/published"
    env = {**S3_ENV, "S3_ENDPOINT_URL": s3_endpoint}
    run = run_stl(["train", str(csv), *FAST, "--force", "--publish", uri], trained["local"]["data"], env=env)
    assert run.code == 0, run.err
    elsewhere = trained["tmp"] / "elsewhere"
    image = str(EXAMPLE / "infer" / "checks.png")
    served = run_stl(["infer", "--model", model, "--model-uri", uri, image], elsewhere, env=env)
    assert served.code == 0, served.err
    assert (
        json.loads(served.out)["label"]
        == json.loads(run_stl(["infer", "--model", model, image], trained["local"]["data"]).out)["label"]
    )


def test_remote_down_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    env = {**S3_ENV, "STORE_URI": f"s3://{BUCKET}/store", "S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    run = run_stl(["train", str(csv), *FAST], tmp_path / "cache", env=env)
    assert run.code == 1
    assert "Traceback" not in run.err
    assert run.error_line.startswith("stl: error: ") and "127.0.0.1:9" in run.error_line
    cache = tmp_path / "cache" / "objects"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
