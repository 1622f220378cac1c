"""Values that used to give a 500 (or a silent misreading) now give a clear 4xx, or a 503 naming the store."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from api_testing import MAX_DOWNLOAD_BYTES, Api, Site, error_of, run_api


def test_nul_byte_in_a_path(api: Api, site: Site) -> None:
    body = {"csv": {"url": "train.csv\u0000.png"}}
    source = f"{site.root}/train.csv\u0000.png"  # relative paths are taken under IMPORT_ROOT
    assert error_of(api.post("/train", json=body), 403) == f"path contains a NUL byte: {source!r}"


def test_csv_field_over_the_csv_module_limit(api: Api, site: Site) -> None:
    (site.root / "long.csv").write_text("x" * 140_000 + ",dots," + "0" * 40 + "\n")
    message = error_of(api.post("/train", json={"csv": {"url": f"{site.url}/long.csv"}}), 422)
    assert message == "CSV line 1: a field is longer than 131072 characters"


@pytest.mark.parametrize("limit", ["²", "٣", "1\n", "+5", " 5"])
def test_limit_takes_ascii_digits_only(api: Api, limit: str) -> None:
    r = api.get("/models", params={"limit": limit})
    assert error_of(r, 400) == f"limit must be an integer from 1 to 1000, got {limit!r}"


def test_sha1_with_a_trailing_newline(api: Api) -> None:
    assert error_of(api.get("/models/" + "a" * 40 + "%0A"), 400) == (
        f"model_sha1 must be a sha1 (40 lowercase hex digits), got {'a' * 40 + chr(10)!r}"
    )
    body = {"csv": {"url": "train.csv", "sha1": "a" * 40 + "\n"}}
    assert error_of(api.post("/train", json=body), 400) == (
        f"csv.sha1 must be a sha1 (40 lowercase hex digits), got {'a' * 40 + chr(10)!r}"
    )


def test_a_chunked_body_over_the_limit_is_413(api: Api) -> None:
    # It used to be cut at the limit and reported as malformed JSON. The server may answer
    # (and close) before the whole body is sent, so send on a raw socket and read what comes back.
    host, port = api.url.removeprefix("http://").split(":")
    chunk = b" " * 65536
    sock = socket.create_connection((host, int(port)), timeout=60)
    try:
        sock.sendall(
            b"POST /train HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(MAX_DOWNLOAD_BYTES // len(chunk) + 4):  # whitespace: valid JSON if it were whole
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b'15\r\n{"csv": {"url": "x"}}\r\n0\r\n\r\n')
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while part := sock.recv(65536):
                answer += part
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"larger than the limit" in answer


def test_image_uri_is_the_2019_spelling_of_url(api: Api, site: Site, trained_model: str) -> None:
    url = f"{site.url}/infer/dots.png"
    by_url = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {"url": url}}).json()
    by_uri = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {"uri": url}})
    assert by_uri.status_code == 200 and by_uri.json() == by_url
    both = {"model": {"sha1": trained_model}, "image": {"url": url, "uri": url}}
    assert error_of(api.post("/infer", json=both), 400) == (
        "image has both url and uri (uri is the 2019 spelling of url); give one"
    )


def test_an_upload_with_the_empty_fields_a_form_sends(api: Api, site: Site, trained_model: str) -> None:
    # What Swagger UI sent: the file, plus an empty `images=` for the array input left blank.
    image = (site.root / "infer" / "dots.png").read_bytes()
    r = api.post(
        "/infer",
        data={"model_sha1": trained_model, "images": ""},
        files={"image": ("dots.png", image, "image/png")},
    )
    assert r.status_code == 200, r.text
    assert max(r.json(), key=r.json().get) == "dots"


@pytest.fixture
def read_only_api(tmp_path: Path, site: Site):
    """A server whose data directory is then mounted read-only (this namespace's own mount table)."""
    with run_api(tmp_path, {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}"}, workers=1) as server:
        # Ready first: the worker has copied its base network into the store and holds no file
        # open for writing, which would make the read-only remount fail (EBUSY).
        deadline = time.time() + 60
        while requests.get(server.url + "/readyz", timeout=30).status_code != 200:
            assert time.time() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        data = str(server.data_dir)
        subprocess.run(["mount", "--bind", data, data], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", data], check=True)
        try:
            yield server
        finally:
            subprocess.run(["umount", data], check=True)


def test_a_read_only_store_is_503_and_not_ready(read_only_api: Api, site: Site) -> None:
    r = read_only_api.post("/train", json={"csv": {"url": f"{site.url}/train.csv"}})
    message = error_of(r, 503)
    assert message == "store unavailable: the local store is not writable (Read-only file system)"
    assert str(read_only_api.data_dir) not in message
    assert error_of(read_only_api.get("/readyz"), 503) == message
    assert read_only_api.get("/healthz").status_code == 200  # alive, just not ready
    assert "Traceback" not in read_only_api.log()


def test_readyz_when_ready(api: Api) -> None:
    assert requests.get(api.url + "/readyz", timeout=30).json()["status"] == "ready"
