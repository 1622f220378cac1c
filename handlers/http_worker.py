"""``stl serve``'s gunicorn worker: gthread, except that a request is read whole before a thread takes it.

gunicorn's threaded worker gives a connection to a thread as soon as a byte arrives, and the thread
then waits on the socket with no deadline: eight clients that send half a head, one byte, or the
first bytes of a body and stall hold every thread of a default worker, and all other requests wait
behind them. Here the main loop, which already watches every kept-alive connection, reads each
request (its head, then the body the head declares: ``handlers.request_framing``) without blocking,
into memory and past 256 KiB into a spool file on the store's disk, and submits only a whole request
to a thread. Two deadlines, from the application's config (``REQUEST_HEAD_TIMEOUT_S``,
``REQUEST_BODY_TIMEOUT_S``):

* a head must be whole within the head timeout of the connection's accept (of the first byte of a
  next request, on a kept-alive one);
* a body may pause at most the body timeout between two reads (a large upload on a slow line goes
  on as long as it moves).

A connection past either gets 408 and is closed. A stalled client costs a socket and the bytes it
sent, never a thread: only ``--worker-connections`` bounds how many may wait. A thread writes the
answer with the body timeout as the socket's send timeout, so a client that stops reading lets its
thread go as well. Plain HTTP/1.x only: TLS and HTTP/2 are refused at start (terminate them in
front, as the compose gateway does, or run ``--worker-class gthread``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import BinaryIO

from gunicorn import http
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from store.errors import StoreUnwritable, unwritable

from .errors import BODY_TOO_LARGE
from .request_framing import RequestFramer

#: Bytes of one request kept in memory; the rest go to a spool file.
MEMORY_BYTES = 256 * 1024
#: Bytes read from one connection per readiness event, so that one fast upload does not starve
#: the others (nor the heartbeat) of the main loop.
READS_PER_EVENT, READ_BYTES = 16, 64 * 1024
#: How long a closing connection may take to read our last answer (gunicorn's own linger).
CLOSE_LINGER_S = 2.0
DEFAULT_HEAD_TIMEOUT_S, DEFAULT_BODY_TIMEOUT_S = 10.0, 30.0


class RequestBytes:
    """One request's bytes as they are read: in memory up to ``MEMORY_BYTES``, then in a spool."""

    def __init__(self, spool: Callable[[], BinaryIO]) -> None:
        self._spool, self._memory, self._file = spool, bytearray(), None

    def write(self, data: bytes) -> None:
        if self._file is None and len(self._memory) + len(data) <= MEMORY_BYTES:
            self._memory += data
            return
        if self._file is None:
            self._file = self._spool()
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(data)

    def chunks(self) -> Iterator[bytes]:
        if self._file is None:
            yield bytes(self._memory)
            return
        self._file.seek(0)
        while chunk := self._file.read(READ_BYTES):
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _answer(status: str, message: str) -> bytes:
    """A whole HTTP answer from the main loop, in the body form of the application's errors."""
    body = json.dumps({"error": message}).encode() + b"\n"
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


class RequestReadingWorker(ThreadWorker):
    """See the module's docstring. Connections being read (or closed) are watched by the main loop
    in ``self.reading``; a thread holds one only while it answers a whole request."""

    @classmethod
    def check_config(cls, cfg, log) -> None:  # type: ignore[no-untyped-def]
        super().check_config(cfg, log)
        http2 = (
            "h2" in (getattr(cfg, "http_protocols", None) or ())
            or getattr(cfg, "http2_cleartext", "off") != "off"
        )
        other = getattr(cfg, "protocol", "http") != "http" or getattr(cfg, "proxy_protocol", False) not in (
            False,
            "off",
        )
        if cfg.is_ssl or http2 or other:
            log.error(
                "stl serve's worker reads plain HTTP/1.x only: terminate TLS, HTTP/2 and the PROXY or "
                "uwsgi protocols in front of it (as the compose gateway does), or pass --worker-class gthread"
            )
            raise SystemExit(2)

    def run(self) -> None:
        config = getattr(self.wsgi, "config", None) or {}
        self.head_timeout = float(config.get("REQUEST_HEAD_TIMEOUT_S") or DEFAULT_HEAD_TIMEOUT_S)
        self.body_timeout = float(config.get("REQUEST_BODY_TIMEOUT_S") or DEFAULT_BODY_TIMEOUT_S)
        self.max_body = config.get("MAX_CONTENT_LENGTH")
        self.spool: Callable[[], BinaryIO] = config.get("REQUEST_SPOOL") or tempfile.TemporaryFile
        # Longer than any head gunicorn's parser takes, so that it is the parser that refuses one.
        cfg = self.cfg
        self.max_head = (
            cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4096
        )
        self.reading: set[TConn] = set()
        self._stopping_capped = False
        super().run()

    # -- the main loop's side ---------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking
        self._read_next(conn, b"", idle_s=self.head_timeout, fresh=True)

    def _read_next(self, conn: TConn, surplus: bytes, idle_s: float, fresh: bool = False) -> None:
        """Start reading the connection's next request (``surplus``: its bytes read already)."""
        conn.framer = RequestFramer(self.max_head, self.max_body)
        conn.request = RequestBytes(self.spool)
        conn.surplus, conn.closing, conn.started = b"", False, False
        # A new connection's head is due within the head timeout of its accept; a kept-alive one
        # may first stay idle for the keepalive time, and then its head is due like a new one's.
        conn.idle, conn.timeout = not fresh, time.monotonic() + idle_s
        if surplus and not self._take(conn, surplus):
            return
        if conn.framer.complete:
            self._dispatch(conn)
            return
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: TConn, _sock: socket.socket) -> None:
        for _ in range(READS_PER_EVENT):
            try:
                data = conn.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the client went away (or, when closing, has read our answer)
                self._drop(conn)
                return
            if conn.closing or not self._take(conn, data):
                continue
            if conn.framer.complete:
                self._unwatch(conn)
                self._dispatch(conn)
                return

    def _dispatch(self, conn: TConn) -> None:
        """A whole request to a thread; a chunked body past the limit is refused here (413)."""
        if conn.framer.too_large:
            self._close_with(conn, _answer("413 Request Entity Too Large", BODY_TOO_LARGE))
        else:
            self.enqueue_req(conn)

    def _take(self, conn: TConn, data: bytes) -> bool:
        """Give the current request its share of ``data``; False where the connection was closed."""
        framer: RequestFramer = conn.framer
        had_head = framer.head_done
        used = framer.feed(data)
        try:
            conn.request.write(data[:used])
        except (StoreUnwritable, OSError) as e:  # a full or read-only spool disk: the store's own 503
            error = e if isinstance(e, StoreUnwritable) else unwritable(e)
            message = f"store unavailable: {error}" if error else "the server's disk failed: request not read"
            self.log.warning("request from %s not read: its spool failed (%s)", conn.client, e)
            self._close_with(conn, _answer("503 Service Unavailable", message))
            return False
        now = time.monotonic()
        conn.started = True
        if conn.idle:
            conn.idle, conn.timeout = False, now + self.head_timeout
        if framer.head_done:
            conn.timeout = now + self.body_timeout
            if not had_head and framer.expects_continue and not framer.complete:
                self._send_now(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.surplus = data[used:]
        return True

    def murder_pending(self) -> None:
        """Each turn of the main loop (about once a second): close the connections past a deadline."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and not self._stopping_capped:
            # A stopping worker waits briefly for a request on an idle connection, not its timeout.
            self._stopping_capped = True
            for conn in self.reading:
                if conn.idle:
                    conn.timeout = min(conn.timeout, now + STOP_KEEPALIVE_LINGER)
        for conn in [c for c in self.reading if c.timeout <= now]:
            if conn.closing or not conn.started:  # nothing sent: no answer is due
                self._drop(conn)
                continue
            part = "body" if conn.framer.head_done else "head"
            limit = self.body_timeout if conn.framer.head_done else self.head_timeout
            self.log.info(
                "closing a connection from %s: its request's %s stalled (%g s)", conn.client, part, limit
            )
            self._close_with(
                conn, _answer("408 Request Timeout", f"the request's {part} did not arrive in time")
            )

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:
            for conn in list(self.reading):
                self._drop(conn)

    def finish_request(self, conn: TConn, fs) -> None:  # type: ignore[no-untyped-def]
        """A thread has answered (on the main loop): read the next request, or close."""
        conn.request.close()
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:  # handle() reports its own errors
            keep = False
        if not keep:
            self._linger(conn)
            return
        conn.sock.setblocking(False)
        idle = self.cfg.keepalive if self.alive else min(self.cfg.keepalive, STOP_KEEPALIVE_LINGER)
        self._read_next(conn, conn.surplus, idle_s=idle)

    def _send_now(self, conn: TConn, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(data)  # a few bytes into an empty send buffer: they fit

    def _close_with(self, conn: TConn, answer: bytes) -> None:
        self._send_now(conn, answer)
        self._unwatch(conn)
        conn.request.close()
        self._linger(conn)

    def _linger(self, conn: TConn) -> None:
        """Close after the client has read our last answer (RFC 9112 section 9.6): send FIN, then
        read and drop what still comes until it closes or ``CLOSE_LINGER_S`` passes."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        conn.closing, conn.timeout = True, time.monotonic() + CLOSE_LINGER_S
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _unwatch(self, conn: TConn) -> None:
        if conn in self.reading:
            self.reading.discard(conn)
            self.poller.unregister(conn.sock)

    def _drop(self, conn: TConn) -> None:
        self._unwatch(conn)
        conn.request.close()
        self.nr_conns -= 1
        conn.close()

    # -- a thread's side --------------------------------------------------------------------

    def handle(self, conn: TConn) -> bool:
        """Answer one whole request from its read bytes; whether the connection stays open."""
        req = None
        try:
            conn.sock.settimeout(self.body_timeout)  # blocking writes, for a bounded time
            conn.parser = http.get_parser(self.cfg, conn.request.chunks(), conn.client)
            req = next(conn.parser)
            if not req:
                return False
            req._expected_100_continue = False  # sent by the main loop (or not wanted: no body is read)
            if conn.framer.close_after:
                req.must_close = True  # the answer says so: a next request on it would not be read
            keep = self.handle_request(req, conn)
            return keep and not conn.framer.close_after and bool(conn.parser.finish_body())
        except (http.errors.NoMoreData, StopIteration) as e:
            self.log.debug("closing connection: %s", e)
        except TimeoutError:
            self.log.info("closing a connection from %s: it stopped reading its answer", conn.client)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("socket error answering a request")
        except Exception as e:  # gunicorn's own answer to a malformed request
            self.handle_error(req, conn.sock, conn.client, e)
        return False
