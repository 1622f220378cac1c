"""A store that turns read-only or fills up: polls of a finished model still answer, and a job that
runs out of space says so in its status (this namespace's own mounts; nothing touches the host)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from api_testing import Api, Site, poll_until_done, run_api, train_body


def _wait_ready(server: Api) -> None:
    deadline = time.time() + 60
    while requests.get(server.url + "/readyz", timeout=30).status_code != 200:
        assert time.time() < deadline, server.log()[-3000:]
        time.sleep(0.1)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def test_a_ready_model_answers_ready_from_a_store_that_became_read_only(tmp_path: Path, site: Site) -> None:
    """The 2019 contract: send the same request again to poll; nothing needs writing for that."""
    with run_api(tmp_path, {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}"}, workers=1) as server:
        _wait_ready(server)
        with_sha1, url_only = (
            train_body(site, random_seed=61),
            train_body(site, with_sha1=False, random_seed=61),
        )
        ready = poll_until_done(server, with_sha1)[-1].json()
        assert ready["status"] == "ready", ready
        data = str(server.data_dir)
        _mount("--bind", data, data)
        _mount("-o", "remount,ro,bind", data)
        try:
            for body in (with_sha1, url_only):
                again = server.post("/train", json=body)
                assert again.status_code == 200, again.text
                assert again.json() == ready
            assert server.get(f"/models/{ready['model_sha1']}").json()["status"] == "ready"
        finally:
            subprocess.run(["umount", data], check=True)
        assert "Traceback" not in server.log()


@contextlib.contextmanager
def _small_disk(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    # Room for the base network the worker copies in (5.6 MB) and a few of the job's tensors.
    _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data))
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=True)


def test_a_job_that_fills_the_disk_says_so_in_its_status(tmp_path: Path, site: Site) -> None:
    # MIN_FREE_BYTES=0: let the job start, to see how it ends when the disk fills mid-way.
    env = {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}", "MIN_FREE_BYTES": "0"}
    with _small_disk(tmp_path), run_api(tmp_path, env, workers=1) as server:
        _wait_ready(server)
        failed = poll_until_done(server, train_body(site, random_seed=62))[-1].json()
        assert failed["status"] == "error", failed
        assert failed["error_kind"] == "transient"
        assert (
            failed["message"]
            == "store unavailable: the local store is not writable (No space left on device)"
        )
        assert str(server.data_dir) not in failed["message"]


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))


def test_uploads_spool_on_the_stores_disk_not_the_system_temp(tmp_path: Path) -> None:
    """A full TMPDIR does not matter (it was a 500); a full store is the store's 503, nothing kept."""
    spool = tmp_path / "tiny-tmp"
    _tmpfs(spool, "1m")
    env = {"TMPDIR": str(spool), "PRELOAD_BASE": "0", "MAX_DOWNLOAD_BYTES": str(8 * 2**20)}
    upload = {"file": ("big.bin", bytes(range(256)) * (3 * 2**20 // 256))}  # 3 MiB
    (tmp_path / "roomy").mkdir()
    try:
        with run_api(tmp_path / "roomy", env, workers=1) as server:
            stored = server.post("/objects", files=upload)
            assert stored.status_code == 201, stored.text
        data = tmp_path / "small" / "data"
        _tmpfs(data, "2m")
        try:
            with run_api(tmp_path / "small", env, workers=1) as server:
                full = server.post("/objects", files=upload)
                assert (full.status_code, full.json()) == (
                    503,
                    {"error": "store unavailable: the local store is not writable (No space left on device)"},
                )
                kept = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("lock-")]
                assert [p for p in kept if "objects" in p.parts or "tmp" in p.parts] == []  # spool gone too
                assert "Traceback" not in server.log()
        finally:
            subprocess.run(["umount", "-l", str(data)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=True)


def test_a_nearly_full_store_is_not_ready_and_takes_no_job(tmp_path: Path, site: Site) -> None:
    """Under MIN_FREE_BYTES (default 100 MiB) free: /readyz and a new /train are 503 with the reason
    (its probe's few bytes fit, so it answered 200 and took jobs that could not finish)."""
    with (
        _small_disk(tmp_path) as data,
        run_api(tmp_path, {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}"}, workers=1) as server,
    ):
        deadline = time.time() + 60
        while "loading the base" in (ready := server.get("/readyz")).text and time.time() < deadline:
            time.sleep(0.2)
        reason = re.compile(
            r"store unavailable: ([\d,]+) bytes free on the store's disk, under MIN_FREE_BYTES \(104,857,600\)"
        )
        assert ready.status_code == 503 and (said := reason.fullmatch(ready.json()["error"])), ready.text
        assert abs(int(said.group(1).replace(",", "")) - shutil.disk_usage(data).free) < 2**20
        refused = server.post("/train", json=train_body(site, random_seed=63))
        assert refused.status_code == 503 and reason.fullmatch(refused.json()["error"]), refused.text
        assert server.get("/models").json() == {"models": []}
