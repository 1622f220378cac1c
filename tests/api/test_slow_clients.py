"""Clients that connect and stall cost `stl serve` a socket, never a thread (issue 25, defect 1):
with gunicorn's threaded worker, eight connections that sent half a head, one byte, or the start
of a body held all threads of a worker, and no other request was answered while they stayed.

One worker of four threads, with short deadlines (2 s for a head, 2 s of silence in a body), and
raw sockets, so that every byte and every pause is the test's own."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from api_testing import Api, run_api

HEAD_TIMEOUT_S = BODY_TIMEOUT_S = 2.0
#: The deadlines are checked once per turn of the worker's main loop (about a second).
LATE_S = 3.0

LIVEZ = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
#: The three stalls of the issue: half a head, one byte, a body's first 5 bytes of 1000000.
STALLS = [
    b"GET /livez HTTP/1.1\r\nHo",
    b"G",
    b"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n12345",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = {"REQUEST_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S), "REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with run_api(tmp_path_factory.mktemp("slow"), env, workers=1) as api:
        yield api


def connect(api: Api) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(stream) -> tuple[int, dict[str, str], bytes]:  # type: ignore[no-untyped-def]
    """One response from a socket's file: status, headers (lower-case names), body by its length."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def multipart(url: str, data: bytes) -> tuple[bytes, str]:
    prepared = requests.Request("POST", url, files={"file": ("blob.bin", data)}).prepare()
    return prepared.body, prepared.headers["Content-Type"]  # type: ignore[return-value]


def test_64_stalled_connections_leave_the_service_answering(server: Api) -> None:
    """The issue's target: 64 stalled connections held open while a 65th gets /livez within 1 s;
    each stalled one gets 408 and is closed after its deadline."""
    stalled = []
    for i in range(64):
        sock = connect(server)
        sock.sendall(STALLS[i % 3])
        stalled.append(sock)
    silent = [connect(server) for _ in range(4)]  # connected, sent nothing
    sent_at = time.monotonic()
    time.sleep(0.3)  # every stalled request has reached the worker
    for _ in range(3):
        started = time.monotonic()
        answer = requests.get(server.url + "/livez", timeout=5)
        assert answer.status_code == 200 and time.monotonic() - started < 1.0
    # A request that needs the application (and a thread) is answered too.
    assert requests.post(server.url + "/train", json={}, timeout=5).status_code == 400

    def outcome(sock: socket.socket) -> tuple[bytes, float]:
        data = read_to_close(sock)
        return data, time.monotonic() - sent_at

    with ThreadPoolExecutor(len(stalled) + len(silent)) as pool:
        outcomes = list(pool.map(outcome, stalled + silent))
    for i, (data, after_s) in enumerate(outcomes[:64]):
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (i, data)
        part = b"body" if i % 3 == 2 else b"head"
        assert data.endswith(b'{"error": "the request\'s ' + part + b' did not arrive in time"}\n')
        assert HEAD_TIMEOUT_S - 0.1 < after_s < HEAD_TIMEOUT_S + LATE_S, (i, after_s)
    for data, after_s in outcomes[64:]:
        assert data == b""  # nothing was asked: nothing to answer
        assert HEAD_TIMEOUT_S - 0.1 < after_s < HEAD_TIMEOUT_S + LATE_S
    for sock in stalled + silent:
        sock.close()
    assert "its request's head stalled (2 s)" in server.log()
    assert "its request's body stalled (2 s)" in server.log()


def test_a_slow_body_that_keeps_moving_is_read_whole(server: Api) -> None:
    """The body deadline is between two reads: an upload on a slow line takes as long as it moves."""
    blob = bytes(range(256)) * 64
    body, content_type = multipart(server.url + "/objects", blob)
    head = f"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head[:10].encode())
        time.sleep(0.8)
        sock.sendall(head[10:].encode())
        pieces = 5
        step = len(body) // pieces + 1
        for i in range(pieces):  # 5 pauses of 0.8 s: 4 s in all, twice the body deadline
            time.sleep(0.8)
            sock.sendall(body[i * step : (i + 1) * step])
        status, _headers, answer = read_response(sock.makefile("rb"))
    assert status == 201, answer
    assert json.loads(answer) == {"filename": "blob.bin", "sha1": hashlib.sha1(blob).hexdigest()}


def test_pipelined_and_kept_alive_requests_are_answered_in_order(server: Api) -> None:
    blob = b"pipelined"
    body, content_type = multipart(server.url + "/objects", blob)
    upload = (
        f"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    not_found = b"GET /objects/" + b"0" * 40 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(server) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"\r\n" + LIVEZ + upload + not_found + LIVEZ)  # one write: four requests
        statuses = [read_response(stream)[0] for _ in range(4)]
        assert statuses == [200, 201, 404, 200]
        time.sleep(1.0)  # kept alive: the same connection takes another request later
        sock.sendall(LIVEZ)
        assert read_response(stream)[0] == 200
        # A request split at every byte is still one request.
        for byte in LIVEZ:
            sock.sendall(bytes([byte]))
        assert read_response(stream)[0] == 200


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: Api) -> None:
    blob = b"after continue"
    body, content_type = multipart(server.url + "/objects", blob)
    head = (
        f"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        stream = sock.makefile("rb")
        sock.sendall(head)
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n" and stream.readline() == b"\r\n"
        sock.sendall(body)
        status, _, answer = read_response(stream)
        assert status == 201 and hashlib.sha1(blob).hexdigest().encode() in answer
    # Over the limit: refused from the head, without a 100 and without reading the body.
    with connect(server) as sock:
        sock.sendall(
            b"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n"
        )
        status, headers, _ = read_response(sock.makefile("rb"))
        assert status == 413 and headers["connection"] == "close"


def test_a_chunked_upload_is_read_whole(server: Api) -> None:
    blob = bytes(range(256)) * 1024  # 256 KiB: past what a request keeps in memory, into the spool
    body, content_type = multipart(server.url + "/objects", blob)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 10_000):
            yield body[i : i + 10_000]

    answer = requests.post(
        server.url + "/objects", data=pieces(), headers={"Content-Type": content_type}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["sha1"] == hashlib.sha1(blob).hexdigest()


def test_requests_that_cannot_be_framed_get_the_parsers_answer_and_a_close(server: Api) -> None:
    for request, status in (
        (
            b"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ):
        with connect(server) as sock:
            sock.sendall(request + LIVEZ)  # the pipelined request after it is never answered
            data = read_to_close(sock)
        assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:200]
        assert data.count(b"HTTP/1.1 ") == 1
