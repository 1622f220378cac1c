"""``stl serve``: run the API under gunicorn with defaults fit for training jobs.

Defaults, each overridable by the arguments (later options win) or by
``GUNICORN_CMD_ARGS``:

* bind ``$API_HOST:$API_PORT`` (the 2019 names; ``PORT`` is an alias of ``API_PORT``),
  by default ``0.0.0.0:8080``, ``$WEB_CONCURRENCY`` workers (2), ``$THREADS`` threads each (4):
  threads keep a worker answering polls while its training thread computes;
* ``--worker-class handlers.http_worker.RequestReadingWorker``: gunicorn's threaded worker,
  except that a request is read whole, under head and body deadlines, before a thread takes it,
  so that stalled clients cost no thread (plain HTTP/1.x: TLS and HTTP/2 end in front);
* ``--timeout 120``: the worker's heartbeat comes from its main loop, but the
  first inference builds the base network and can hold a request for a while;
* ``--graceful-timeout 30``; a stopping worker hands its training threads' leases over
  (``handlers.training.hand_over_running``) and every worker resumes stalled jobs;
* no ``--preload``: TensorFlow must be imported after the fork, never half-initialised in the master;
* no control socket (gunicorn >= 24 opens one at a fixed path, so two servers on one
  machine would clash), unless ``--control-socket`` is given;
* PROMETHEUS_MULTIPROC_DIR, where the workers' metrics meet for ``/metrics``: a fresh
  private directory unless set (then it is emptied first, as prometheus-client requires);
* at most two glibc malloc arenas (``MALLOC_ARENA_MAX``, unless set): with one arena per thread,
  a burst of large photos left 34 MiB per worker that no trim returns (39% of a fresh worker).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import tempfile
from collections.abc import MutableMapping, Sequence

APP = "handlers.wsgi:app"
WORKER = "handlers.http_worker.RequestReadingWorker"


def _given(argv: Sequence[str], *flags: str) -> bool:
    return any(a in flags or a.startswith(tuple(f"{f}=" for f in flags)) for a in argv)


def _has_setting(name: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == name for s in KNOWN_SETTINGS)


def gunicorn_argv(argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """Our defaults, then ``argv``; options that gunicorn accumulates are only defaulted when absent."""
    env = dict(os.environ if env is None else env)
    defaults = []
    # --bind appends to a list, so a default would add a second address rather than yield.
    if not _given(argv, "-b", "--bind"):
        host = env.get("API_HOST") or "0.0.0.0"
        port = env.get("API_PORT") or env.get("PORT") or "8080"
        defaults += ["--bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if not _given(argv, "--control-socket") and _has_setting("control_socket_disable"):
        defaults += ["--no-control-socket"]
    defaults += [
        "--workers", env.get("WEB_CONCURRENCY") or "2",
        "--worker-class", WORKER,
        "--threads", env.get("THREADS") or "4",
        "--timeout", "120",
        "--graceful-timeout", "30",
        "--access-logfile", "-",
        "--error-logfile", "-",
        "--log-level", env.get("LOG_LEVEL") or "info",
    ]  # fmt: skip
    return [*defaults, *argv, APP]


def prepare_metrics_dir(env: MutableMapping[str, str]) -> str:
    """An empty directory for the workers' metric files, named in PROMETHEUS_MULTIPROC_DIR.

    Set before any worker forks, so that each worker's prometheus-client writes there; old
    files would add a previous run's counts, so a given directory is emptied.
    """
    path = env.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="stl-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def usage(env: dict[str, str] | None = None) -> str:
    """``stl serve --help``: the options this command passes to gunicorn (with this environment),
    not gunicorn's own defaults (127.0.0.1:8000, one sync worker), which never apply here."""
    argv = gunicorn_argv([], env)[:-1]
    pairs, i = [], 0
    while i < len(argv):
        takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        pairs.append(f"{argv[i]} {argv[i + 1]}" if takes_value else argv[i])
        i += 2 if takes_value else 1
    return "\n".join(
        [
            "usage: stl serve [GUNICORN OPTION...]",
            "",
            "Run the HTTP API and the web pages under gunicorn, with these options (from API_HOST,",
            "API_PORT or PORT, WEB_CONCURRENCY, THREADS, LOG_LEVEL where set):",
            "",
            *(f"  {pair}" for pair in pairs),
            "",
            "Any further argument is a gunicorn option and wins over these (e.g. --workers 4);",
            "`gunicorn --help` lists them all, but its defaults are not the ones used here.",
        ]
    )


#: mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8


def limit_malloc_arenas(env: MutableMapping[str, str]) -> None:
    """Two malloc arenas for the workers' threads, set in the master so every forked worker has it
    (glibc reads MALLOC_ARENA_MAX only when a process starts). Elsewhere than glibc: nothing."""
    if env.get("MALLOC_ARENA_MAX"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_ARENA_MAX, 2)


def serve(argv: Sequence[str] = ()) -> int:
    """Run gunicorn in this process until it is stopped; returns its exit status."""
    from gunicorn.app.wsgiapp import WSGIApplication

    from model.config import Settings

    if _given(argv, "-h", "--help"):
        print(usage())
        return 0

    try:
        Settings.from_env()  # refuse bad settings here, with their message, not in every worker
    except ValueError as e:
        print(f"stl serve: error: {e}", file=sys.stderr)
        return 2
    prepare_metrics_dir(os.environ)
    limit_malloc_arenas(os.environ)
    sys.argv = ["stl serve", *gunicorn_argv(argv)]
    try:
        WSGIApplication("%(prog)s [OPTIONS]").run()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def main() -> None:
    sys.exit(serve(sys.argv[1:]))


if __name__ == "__main__":
    main()
