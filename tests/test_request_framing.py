"""Where a request ends in a byte stream (handlers.request_framing): the worker reads each request
whole by these counts before a thread parses it, so a wrong count either stalls a client (too many
bytes awaited) or splits a request (too few)."""

from __future__ import annotations

import pytest

from handlers.request_framing import RequestFramer

NEXT = b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n"


def framer(max_body: int | None = 1000) -> RequestFramer:
    return RequestFramer(max_head_bytes=8192, max_body_bytes=max_body)


def frame(request: bytes, max_body: int | None = 1000) -> tuple[RequestFramer, int]:
    """Feed the request and a pipelined next one at once; how much went to the first."""
    f = framer(max_body)
    return f, f.feed(request + NEXT)


def frame_bytewise(data: bytes, max_body: int | None = 1000) -> tuple[RequestFramer, int]:
    """Feed one byte at a time, as the slowest client sends: each split point must hold."""
    f, used = framer(max_body), 0
    for i in range(len(data)):
        n = f.feed(data[i : i + 1])
        used += n
        if n == 0:
            assert f.complete
            break
    return f, used


CONTENT_LENGTH = b"POST /objects HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"POST /objects HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1A\r\n" + b"x" * 26 + b"\r\n"
    b"0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"
)
CHUNKED_NO_TRAILER = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        NEXT,
        CONTENT_LENGTH,
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",  # identical duplicates
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        CHUNKED,
        CHUNKED_NO_TRAILER,
        b"\r\n\r\n" + CONTENT_LENGTH,  # empty lines before a request are allowed (RFC 9112 2.2)
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=[
        "no-body",
        "length",
        "length-0",
        "dup-length",
        "list-length",
        "chunked",
        "chunked-no-trailer",
        "leading-crlf",
        "http-1.0",
    ],
)
def test_a_whole_request_ends_where_its_body_does(request_bytes: bytes) -> None:
    f, used = frame(request_bytes)
    assert (used, f.complete, f.close_after) == (len(request_bytes), True, False)
    assert f.feed(NEXT) == 0  # once complete, it takes nothing more
    bytewise, used = frame_bytewise(request_bytes + NEXT)
    assert (used, bytewise.complete, bytewise.close_after) == (len(request_bytes), True, False)


def test_a_partial_request_is_not_complete() -> None:
    for request in (CONTENT_LENGTH, CHUNKED):
        for cut in (1, len(request) // 2, len(request) - 1):
            f = framer()
            assert f.feed(request[:cut]) == cut
            assert not f.complete
    f = framer()
    f.feed(b"GET /livez HTTP/1.1\r\nHo")  # the stalled client of issue 25
    assert not f.head_done and not f.complete


def test_expect_100_continue_is_seen_once_the_head_is_read() -> None:
    f = framer()
    head = b"POST /objects HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    assert f.feed(head) == len(head)
    assert f.head_done and f.expects_continue and not f.complete
    assert f.feed(b"hello") == 5 and f.complete
    # No body to wait for, or HTTP/1.0: nothing to continue.
    for head in (
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    ):
        f = framer()
        f.feed(head)
        assert not f.expects_continue


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling's shape
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",  # chunked must come last
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",  # no CRLF after the data
        b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\n: no name\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ],
    ids=[
        "length-and-chunked",
        "two-lengths",
        "negative",
        "hex-length",
        "chunked-not-last",
        "1.0-chunked",
        "bad-chunk-size",
        "bad-chunk-end",
        "obs-fold",
        "no-name",
        "http-2",
    ],
)
def test_an_unframeable_request_is_handed_on_and_the_connection_closes(request_bytes: bytes) -> None:
    """The parser answers it (400, 501); after it, where a next request would begin is unknown."""
    f, used = frame(request_bytes)
    assert f.complete and f.close_after
    assert used <= len(request_bytes)


def test_a_body_over_the_limit_is_refused_from_its_head() -> None:
    head = b"POST /objects HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
    f = framer(max_body=1000)
    assert f.feed(head + b"12345") == len(head)  # the body is never read: the app answers 413
    assert f.complete and f.close_after
    f = framer(max_body=None)  # no limit: the body is awaited
    assert f.feed(head + b"12345") == len(head) + 5 and not f.complete


def test_a_chunked_body_over_the_limit_ends_where_it_passes_it_to_be_refused() -> None:
    head = b"POST /objects HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    f = framer(max_body=10)
    f.feed(head + b"8\r\n12345678\r\n")
    assert not f.complete and not f.too_large
    f.feed(b"8\r\n")  # 16 bytes declared in all: over the limit
    assert f.complete and f.close_after and f.too_large
    f = framer(max_body=None)
    f.feed(head + b"8\r\n12345678\r\n8\r\n")
    assert not f.complete and not f.too_large


def test_a_head_longer_than_the_limit_is_handed_on_for_the_parser_to_refuse() -> None:
    f = RequestFramer(max_head_bytes=100)
    f.feed(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 200)
    assert f.complete and f.close_after
    f = RequestFramer(max_head_bytes=100)
    f.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 5000)  # endless size line
    assert f.complete and f.close_after
