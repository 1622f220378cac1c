"""Operations against the real gunicorn service: metrics, probes, progress, cancel, upload, export, logs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from api_testing import Api, Site, error_of, poll_until_done, run_api, train_body
from prometheus_client.parser import text_string_to_metric_families

from store.hashing import sha1_bytes


def scrape(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics, parsed by prometheus-client's own text-format parser."""
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, dict], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_sum_every_worker_and_cover_requests_jobs_store_and_mismatches(
    api: Api, trained_model: str
) -> None:
    before = scrape(api)
    for _ in range(60):
        r = requests.get(api.url + "/livez", timeout=30)  # a new connection each: any worker answers
        assert r.status_code == 200 and r.json()["status"] == "ok"
    after = scrape(api)
    key = {"endpoint": "/livez", "method": "GET", "status": "200"}
    assert (
        value(after, "stl_http_requests_total", **key) - value(before, "stl_http_requests_total", **key) == 60
    )
    assert value(after, "stl_http_request_duration_seconds_count", endpoint="/livez", method="GET") >= 60
    assert value(after, "stl_jobs", status="ready") >= 1
    assert value(after, "stl_store_operation_duration_seconds_count", backend="local", operation="get") > 0
    assert "stl_feature_cache_lookups_total" in after
    # A corrupt object: the read is refused, and counted.
    sha1 = api.post("/objects", files={"file": ("x.bin", b"bytes that will rot")}).json()["sha1"]
    path = api.data_dir / "objects" / sha1[:2] / sha1[2:]
    path.write_bytes(b"bytes that did rot!")
    assert api.get(f"/objects/{sha1}").status_code == 500
    rotted = scrape(api)
    assert value(rotted, "stl_hash_mismatches_total") == value(after, "stl_hash_mismatches_total") + 1


def test_livez_and_readyz(api: Api) -> None:
    assert api.get("/livez").json()["status"] == "ok"
    assert api.get("/healthz").json()["status"] == "ok"
    # Every worker has loaded its base network by now (readyz answers for the worker it hits).
    answers = [requests.get(api.url + "/readyz", timeout=30) for _ in range(10)]
    assert all(r.status_code == 200 and r.json()["status"] == "ready" for r in answers)


def test_readyz_waits_for_the_base_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers.app import create_app

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRELOAD_BASE", "0")
    app = create_app()
    service = app.extensions["stl"]
    service.base_loaded.clear()  # as a worker is until its base is loaded
    client = app.test_client()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json == {"error": "loading the base network efficientnet-lite2"}
    service.base_error = "BaseModelError: no such file"
    assert client.get("/readyz").json == {
        "error": "base network efficientnet-lite2 could not be loaded: BaseModelError: no such file"
    }
    service.base_loaded.set()
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200  # alive all along


def test_polls_report_progress_while_training(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=71, image_size=80)  # a new size: features are computed afresh
    first = api.post("/train", json=body).json()
    model = first["model_sha1"]
    seen: list[dict[str, Any]] = []
    deadline = time.time() + 240
    while time.time() < deadline:
        job = api.get(f"/models/{model}").json()
        if job["status"] in ("ready", "error"):
            break
        if job.get("job", {}).get("progress"):
            seen.append(job["job"]["progress"])
        time.sleep(0.05)
    assert job["status"] == "ready", job
    assert "progress" not in job["job"]
    assert seen, "no poll saw the job's progress"
    assert {p["stage"] for p in seen} <= {"fetch", "features", "head", "commit"}
    assert all(0 <= p["done"] <= p["total"] for p in seen)
    features = [p for p in seen if p["stage"] == "features"]
    assert features and features[0]["total"] == 72


def test_cancel_a_running_job_then_train_it_again(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=72, image_size=72)
    started = api.post("/train", json=body).json()
    assert started["status"] == "new"
    model = started["model_sha1"]
    cancel = api.post(f"/models/{model}/cancel")
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    deadline = time.time() + 120
    while (job := api.get(f"/models/{model}").json())["status"] in ("new", "in_progress"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert job["status"] == "cancelled" and job["job"]["message"] == "cancelled on request", job
    # The worker logs after it writes the status: give its line a moment.
    line = f"training cancelled model={model} reason=cancelled on request"
    while not any(line in ln for ln in api.log().splitlines()):
        assert time.time() < deadline, api.log()[-3000:]
        time.sleep(0.1)
    assert error_of(api.post(f"/models/{model}/cancel"), 409) == (
        f"model {model} is cancelled; only a running job can be cancelled"
    )
    # The same request starts it again, as attempt 2.
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "ready" and final["attempt"] == 2, final
    assert error_of(api.post(f"/models/{'c' * 40}/cancel"), 404) == f"unknown model {'c' * 40}"


def test_upload_a_csv_and_its_images_then_train_by_sha1(api: Api, site: Site) -> None:
    rows = (site.root / "train.csv").read_text().splitlines()[::6]  # 12 rows, all three labels
    for row in rows:
        source, _label, sha1 = row.split(",")
        data = (site.root / source).read_bytes()
        stored = api.post("/objects", files={"file": (Path(source).name, data)})
        assert stored.status_code == 201 and stored.json() == {"sha1": sha1, "filename": Path(source).name}
    csv = ("\n".join(r.replace("images/", "uploaded/") for r in rows) + "\n").encode()
    csv_sha1 = api.post("/objects", files={"file": ("train.csv", csv)}).json()["sha1"]
    assert csv_sha1 == sha1_bytes(csv)
    body = {
        "csv": {"sha1": csv_sha1},
        "metadata": {"random_seed": 73, "image_size": 64},
        "model": {"uri": ""},
    }
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "ready", final  # no image was fetched: the paths do not even exist
    assert error_of(api.post("/objects", data={"sha1": csv_sha1}), 400) == (
        "send the file as multipart/form-data field 'file'"
    )


def test_export_endpoint_serves_the_tflite_with_the_model_hash(api: Api, trained_model: str) -> None:
    from ai_edge_litert import schema_py_generated as schema

    r = api.get(f"/models/{trained_model}/export?format=tflite")
    assert r.status_code == 200 and r.content[4:8] == b"TFL3"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{trained_model[:12]}.tflite"'
    model = schema.ModelT.InitFromPackedBuf(r.content, 0)
    meta = json.loads(bytes(model.buffers[model.metadata[0].buffer].data))
    assert meta["model_sha1"] == trained_model and meta["labels"] == ["checks", "dots", "stripes"]
    assert error_of(api.get(f"/models/{trained_model}/export?format=onnx"), 400) == (
        "unknown export format 'onnx'; known: tflite"
    )
    assert error_of(api.get(f"/models/{'d' * 40}/export"), 404) == f"unknown model {'d' * 40}"


def test_json_logs_name_a_failed_jobs_reason(tmp_path: Path, site: Site) -> None:
    env = {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}", "LOG_FORMAT": "json", "PRELOAD_BASE": "0"}
    with run_api(tmp_path, env, workers=1) as server:
        final = poll_until_done(server, train_body(site, csv="mismatch.csv"))[-1].json()
        assert final["status"] == "error"

        def logged() -> list[dict[str, Any]]:
            return [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{")]

        def failed_lines() -> list[dict[str, Any]]:
            return [
                ln
                for ln in logged()
                if ln.get("model_sha1") == final["model_sha1"] and ln.get("status") == "error"
            ]

        deadline = time.time() + 60
        while not failed_lines():  # the worker logs just after it writes the status
            assert time.time() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        lines, failed = logged(), failed_lines()
    assert len(failed) == 1, lines
    assert failed[0]["level"] == "warning" and failed[0]["reason"] == final["message"]
    assert failed[0]["message"].startswith(f"training failed model={final['model_sha1']} reason=")
    assert {"time", "logger", "pid"} <= set(failed[0])
    assert any(ln.get("logger") == "gunicorn.access" for ln in lines)  # the access log too
