"""EXECUTOR=ray against a real Ray cluster started here (`ray start --head`, 2 CPUs, token auth).

The claims: a job run on Ray gives the golden bytes of the local executor, with
its chunks spread over more than one worker process; a job outlives the process
that submitted it; a worker killed mid-chunk is retried and changes nothing; and
batch labelling on Ray prints what local labelling prints.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster import RayCluster, ray_cluster
from stl_testing import EXAMPLE, REPO, free_port, run_stl
from test_portable_bits import EMULATED_EXAMPLE, EMULATED_FLAGS

from store import LocalStore, lease

pytestmark = pytest.mark.cluster

TRAIN = ["train", "example-data/train.csv", "--seed", "7", *EMULATED_FLAGS]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(cpus=2) as c:
        yield c


def _run_records(store: LocalStore, model_sha1: str) -> list[dict]:
    return [
        json.loads(store.get(store.get_ref(name).decode()))  # type: ignore[union-attr]
        for name in store.list_refs(f"models/{model_sha1}/runs")
    ]


def test_training_on_ray_gives_the_golden_bytes_from_chunks_on_two_workers(
    cluster: RayCluster, tmp_path: Path
) -> None:
    trained = run_stl(TRAIN, tmp_path / "data", env=cluster.env)
    assert trained.code == 0, trained.err[-3000:]
    assert trained.json == EMULATED_EXAMPLE  # the local executor's golden model, weights and manifest
    (record,) = _run_records(LocalStore(tmp_path / "data"), EMULATED_EXAMPLE["model_sha1"])
    environment = record["environment"]
    assert environment["executor"] == "ray"
    workers = environment["feature_workers"]  # 72 images: two chunks, run at once on 2 CPUs
    assert len(workers) >= 2, workers
    assert all(not w.endswith(f":{record['pid']}") for w in workers), "a chunk ran in the driver"


def test_a_job_outlives_the_process_that_submitted_it(cluster: RayCluster, tmp_path: Path) -> None:
    """Like POST /train with EXECUTOR=ray: record, take the lease, submit a detached actor, return."""
    data = tmp_path / "data"
    submit = textwrap.dedent(
        f"""
        import os
        from model.jobs import state as jobs
        from model.context import Context, Job
        from model.training.pipeline import prepare_recipe
        from model.run.ray_actor import start_job_actor
        ctx = Context.open()
        params = {{"random_seed": 7, "base": "efficientnet-lite0", "views": ["original", "mirrored", "top-right"],
                  "image_size": 128}}
        csv = {str(EXAMPLE / "train.csv")!r}
        recipe = prepare_recipe(ctx, params, csv, None)
        jobs.record_recipe(ctx.store, recipe, csv)
        owner = f"submitter-{{os.getpid()}}"
        record = jobs.submit(ctx.store, recipe.sha1, owner, ctx.settings.lease_ttl,
                             start=lambda: start_job_actor(ctx, Job(recipe, csv, owner)))
        print(recipe.sha1, record["status"], os.getpid())
        """
    )
    env = {**os.environ, **cluster.env, "DATA_DIR": str(data), "LEASE_TTL": "10"}
    out = subprocess.run(
        [sys.executable, "-c", submit], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    model_sha1, status, submitter_pid = out.stdout.split()
    assert (model_sha1, status) == (EMULATED_EXAMPLE["model_sha1"], "new")
    store = LocalStore(data)
    deadline = time.time() + 300
    while time.time() < deadline:
        record = json.loads(store.get_ref(f"models/{model_sha1}/status") or b"{}")
        if record.get("status") not in ("new", "in_progress"):
            break
        time.sleep(0.5)
    assert record["status"] == "ready", record
    assert (record["manifest_sha1"], record["weights_sha1"]) == (
        EMULATED_EXAMPLE["manifest_sha1"],
        EMULATED_EXAMPLE["weights_sha1"],
    )
    (run,) = _run_records(store, model_sha1)
    assert run["environment"]["executor"] == "ray" and run["pid"] != int(submitter_pid)
    holder = lease.holder(store, f"models/{model_sha1}/lease")
    assert holder is not None and holder.owner.startswith("submitter-") and holder.expired()  # released


class _SlowImages(http.server.SimpleHTTPRequestHandler):
    """Serves example-data, each response a little late, so a fetch chunk lasts seconds."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, directory=str(EXAMPLE), **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        time.sleep(0.15)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def test_a_worker_killed_mid_chunk_is_retried_and_changes_no_bit(cluster: RayCluster, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/train.csv"
        env = {
            **os.environ,
            **cluster.env,
            "DATA_DIR": str(tmp_path / "data"),
            "DOWNLOAD_POOL_SIZE": "2",  # 72 images at 0.15 s, two at a time: over 5 s of fetching
        }
        job = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", *TRAIN[:1], url, *TRAIN[2:]],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        killed = None
        deadline = time.time() + 120
        while killed is None and time.time() < deadline and job.poll() is None:
            pids = cluster.task_pids("_chunk_task")
            if pids:
                time.sleep(1.0)  # well into the chunk: some of its images are stored, some not
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
            time.sleep(0.05)
        out, err = job.communicate(timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    assert killed is not None, "no chunk task was seen running"
    assert job.returncode == 0, err[-3000:]
    trained = json.loads(out.strip().splitlines()[-1])
    # Another CSV (URLs, not paths), so another model and manifest; the same rows, so the same weights.
    assert trained["status"] == "ready"
    assert trained["weights_sha1"] == EMULATED_EXAMPLE["weights_sha1"]


def test_a_cancelled_job_stops_its_tasks(cluster: RayCluster, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/train.csv"
        env = {**os.environ, **cluster.env, "DATA_DIR": str(data), "DOWNLOAD_POOL_SIZE": "1"}
        job = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", *TRAIN[:1], url, *TRAIN[2:], "--seed", "11"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        while not cluster.task_pids("_chunk_task") and time.time() < deadline and job.poll() is None:
            time.sleep(0.05)
        store = LocalStore(data)
        (name,) = [n for n in store.list_refs("models") if n.endswith("/status")]
        model_sha1 = name.split("/")[1]
        cancelled = run_stl(["cancel", model_sha1], data)
        assert cancelled.code == 0, cancelled.err
        _out, err = job.communicate(timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert job.returncode != 0 and "cancelled on request" in err, err[-2000:]
    assert json.loads(store.get_ref(name) or b"{}")["status"] == "cancelled"
    deadline = time.time() + 30  # the fetch task is cancelled with the job, not left to finish
    while cluster.task_pids("_chunk_task") and time.time() < deadline:
        time.sleep(0.2)
    assert not cluster.task_pids("_chunk_task")
    assert len(list((data / "objects").rglob("*"))) < 72 + 20, "the chunk went on fetching every image"


def test_batch_labelling_on_ray_prints_what_local_labelling_prints(
    cluster: RayCluster, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    trained = run_stl(TRAIN, data)  # the local executor
    assert trained.code == 0, trained.err[-3000:]
    label = ["infer", "--model", trained.json["model_sha1"], "--csv", "example-data/train.csv"]
    local = run_stl(label, data)
    on_ray = run_stl(label, data, env=cluster.env)
    assert local.code == 0 and on_ray.code == 0, (local.err + on_ray.err)[-3000:]
    assert len(on_ray.out.splitlines()) == 72  # three chunks of 32 rows, in CSV order
    assert on_ray.out == local.out
    assert hashlib.sha1(on_ray.out.encode()).hexdigest() == BATCH_STDOUT_SHA1


#: sha1 of `stl infer --csv example-data/train.csv` with the emulated recipe's model.
BATCH_STDOUT_SHA1 = "0c6e252ee72c5c448acc51b0f79c54d86f0979f7"


def _head_on_ray(cluster: RayCluster, data: Path, *args: str) -> dict:
    env = {**os.environ, **cluster.env, "DATA_DIR": str(data)}
    out = subprocess.run(
        [sys.executable, str(REPO / "tests/head_on_ray.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Ray's log lines about the killed worker may share stdout; the result is the last JSON line.
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def test_the_head_on_shards_held_by_one_or_two_workers_gives_the_local_bits(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """Cross-validation with the rows in 4 shards: in this process, read from the store, and held
    by 1 and by 2 Ray actors (the driver sees only sums): one set of bits, a golden one."""
    placements = _head_on_ray(cluster, tmp_path / "data")
    assert placements == dict.fromkeys(["local", "local shards", "ray 1", "ray 2"], HEAD_ON_SHARDS_SHA1)


HEAD_ON_SHARDS_SHA1 = "3d86d66076901615b4d05bde70f4b5742b3f4b06"


def test_a_worker_lost_mid_fit_is_replaced_and_the_fit_goes_on_to_the_same_bits(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """Two shard-holding workers killed (SIGKILL) at rounds 5 and 40: each is replaced by a new
    actor that reads its shards from the store and replays the fits' requests; the fit finishes
    with the golden bits of the undisturbed placements."""
    result = _head_on_ray(cluster, tmp_path / "data", "kill")
    assert result["error"] is None, result
    assert result["killed"] == 2 and result["rounds"] > 40
    assert result["sha1"] == HEAD_ON_SHARDS_SHA1


def test_a_shard_that_no_longer_verifies_is_the_workers_error_not_a_lost_worker(
    cluster: RayCluster, tmp_path: Path
) -> None:
    result = _head_on_ray(cluster, tmp_path / "data", "corrupt")
    assert result["error"] == "HashMismatch", result


def test_an_unreachable_cluster_is_a_clear_error_within_the_timeout(tmp_path: Path) -> None:
    """ray.init waits as long as it takes; a web request must not: ExecutorUnavailable instead."""
    probe = textwrap.dedent(
        """
        import time
        from model.config import Settings
        from model.errors import ExecutorUnavailable
        from model.execution.ray_cluster import connect
        started = time.monotonic()
        try:
            connect(Settings(executor="ray", ray_address=ADDRESS), timeout=3)
        except ExecutorUnavailable as e:
            print(round(time.monotonic() - started, 1), e)
        """
    ).replace("ADDRESS", repr(f"127.0.0.1:{free_port()}"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 64, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    waited, message = out.stdout.strip().split(" ", 1)
    assert float(waited) < 10 and "did not answer within 3 s" in message, out.stdout + out.stderr[-2000:]


def test_a_worker_is_not_ready_until_it_has_joined_the_cluster(tmp_path: Path) -> None:
    probe = (
        textwrap.dedent(
            """
        import time
        from handlers.app import create_app
        from model.config import Settings
        app = create_app(Settings(data_dir=DATA, executor="ray", ray_address=ADDRESS, preload_base=False))
        time.sleep(1)
        r = app.test_client().get("/readyz")
        print(r.status_code, r.get_json()["error"])
        """
        )
        .replace("ADDRESS", repr(f"127.0.0.1:{free_port()}"))
        .replace("DATA", repr(str(tmp_path / "data")))
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 64, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "503 joining the Ray cluster (EXECUTOR=ray)", out.stdout + out.stderr[-2000:]
