"""Where one HTTP/1.1 request ends in a byte stream: its head, then the body the head declares.

``stl serve``'s worker (``handlers.http_worker``) reads each request whole in its main loop,
without a thread, and only then hands it to one, so that a client that stalls costs a socket and
a few bytes instead of a thread. For that it must know where a request ends (RFC 9112 section 6)
before anything parses it: this module counts bytes, it interprets nothing else.

A request it cannot frame (contradictory lengths, an unknown transfer coding, a broken chunk) is
handed on as it stands with ``close_after`` set: gunicorn's parser then answers as it always has
(400, 501), and the connection closes, since where a next request would begin is unknown. So is
a body declared larger than the application takes: the application refuses it (413) from its head.
A chunked body that grows past that is ``too_large``: the worker refuses it itself (413), since
the application would read on into bytes that were never read.
"""

from __future__ import annotations

import re

#: A chunk-size line (RFC 9112 section 7.1): hex digits, then optional extensions.
CHUNK_LINE_LIMIT = 4096
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}(?=[ \t;]|$)")

_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _DONE = range(7)


class RequestFramer:
    """Fed a connection's bytes piecewise; says how many belong to the current request.

    ``max_head_bytes`` bounds the head (a longer one is handed on unfinished: the parser refuses
    it); ``max_body_bytes`` is the body the application takes at most (None: any).
    """

    def __init__(self, max_head_bytes: int, max_body_bytes: int | None = None) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        #: Whether the request is whole (or as whole as it will be read: see ``close_after``).
        self.complete = False
        #: The connection must close after the answer: where the next request begins is unknown.
        self.close_after = False
        #: The head asked for ``100 Continue`` before its body (and a body will be read).
        self.expects_continue = False
        #: A chunked body passed ``max_body_bytes``: the request ends there, to be refused (413).
        self.too_large = False
        self.head_done = False
        self._state = _HEAD
        self._line = bytearray()  # the head, a chunk-size line or the trailer section so far
        self._left = 0  # bytes of the body (or of the current chunk) still to come
        self._body = 0  # body bytes so far (chunked)
        self._lead = 0  # empty lines before the request line

    def feed(self, data: bytes) -> int:
        """How many of ``data``'s leading bytes belong to this request; the rest begin the next.

        Once ``complete``, it takes no more (returns 0).
        """
        used = 0
        while used < len(data) and self._state != _DONE:
            used += self._step(memoryview(data)[used:])
        return used

    def _step(self, data: memoryview) -> int:
        if self._state == _HEAD:
            return self._take_head(data)
        if self._state in (_LENGTH, _CHUNK_DATA):
            n = min(self._left, len(data))
            self._left -= n
            if self._left == 0:
                self._state = _CHUNK_END if self._state == _CHUNK_DATA else self._finish()
            return n
        if self._state == _CHUNK_END:
            return self._take_chunk_end(data)
        return self._take_line(data)

    def _finish(self, close: bool = False) -> int:
        self.complete, self.close_after = True, self.close_after or close
        return _DONE

    def _take_head(self, data: memoryview) -> int:
        before = len(self._line)
        self._line += data
        if self._lead == before:  # so far only empty lines, which may come before a request
            self._lead = len(self._line) - len(self._line.lstrip(b"\r\n"))
        end = self._line.find(b"\r\n\r\n", max(self._lead, before - 3))
        if end < 0:
            if len(self._line) > self.max_head_bytes:
                self._state = self._finish(close=True)
            return len(data)
        used = end + 4 - before
        head, self._line = bytes(self._line[self._lead : end]), bytearray()
        self.head_done = True
        self._frame_body(head)
        return used

    def _frame_body(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version = lines[0].rsplit(b" ", 1)[-1]
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():  # no name, or obsolete folding
                self._state = self._finish(close=True)
                return
            fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
        if not version.startswith(b"HTTP/1."):
            self._state = self._finish(close=True)
            return
        lengths = {v.strip() for value in fields.get(b"content-length", []) for v in value.split(b",")}
        codings = [
            c.strip().lower() for value in fields.get(b"transfer-encoding", []) for c in value.split(b",")
        ]
        if codings:
            if lengths or version == b"HTTP/1.0" or codings[-1] != b"chunked":
                self._state = self._finish(close=True)
                return
            self._state = _CHUNK_LINE
        elif lengths:
            [length] = lengths if len(lengths) == 1 else [b""]
            if not length.isdigit():
                self._state = self._finish(close=True)
                return
            self._left = int(length)
            if self.max_body_bytes is not None and self._left > self.max_body_bytes:
                self._state = self._finish(close=True)  # refused from the head; the body is never read
                return
            self._state = _LENGTH if self._left else self._finish()
        else:
            self._state = self._finish()  # no body
            return
        expect = b",".join(fields.get(b"expect", [])).lower()
        self.expects_continue = version == b"HTTP/1.1" and expect == b"100-continue"

    def _take_line(self, data: memoryview) -> int:
        """A chunk-size line, or the trailer section after the last chunk."""
        before = len(self._line)
        self._line += data
        if self._state == _CHUNK_LINE:
            end = self._line.find(b"\r\n", max(0, before - 1))
            if end < 0:
                if len(self._line) > CHUNK_LINE_LIMIT:
                    self._state = self._finish(close=True)
                return len(data)
            size = _CHUNK_SIZE.match(bytes(self._line[:end]))
            self._line = bytearray()
            if size is None:
                self._state = self._finish(close=True)
                return end + 2 - before
            self._left = int(size.group(), 16)
            self._body += self._left
            if self.max_body_bytes is not None and self._body > self.max_body_bytes:
                # Its length is known only now: the reader refuses it (413) without reading on.
                self.too_large = True
                self._state = self._finish(close=True)
            else:
                self._state = _CHUNK_DATA if self._left else _TRAILER
            self._line = bytearray(b"\r\n") if self._state == _TRAILER else self._line
            return end + 2 - before
        # The trailer section ends with an empty line; the last chunk's CRLF was kept as a start,
        # so an empty section ends at the first CRLFCRLF.
        end = self._line.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(self._line) > self.max_head_bytes:
                self._state = self._finish(close=True)
            return len(data)
        self._state = self._finish()
        return end + 4 - before

    def _take_chunk_end(self, data: memoryview) -> int:
        """The CRLF after a chunk's data."""
        need = 2 - len(self._line)
        self._line += data[:need]
        if len(self._line) == 2:
            self._state = _CHUNK_LINE if self._line == b"\r\n" else self._finish(close=True)
            self._line = bytearray()
        return min(need, len(data))
