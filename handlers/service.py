"""What a worker process holds: settings, its store handle, the fetch policy, a Predictor.

None of it is state about jobs or models: those are always read from the store,
so any worker can answer any request. The Predictor is only a cache (an LRU of
loaded models and one base network), built on the first inference.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from model.config import Settings
from model.context import Context
from model.data.fetch import FetchPolicy, fetch_bytes
from model.errors import FetchRefused
from model.execution.choice import on_cluster
from store import ObjectStore, open_store
from store.errors import StoreUnwritable

if TYPE_CHECKING:
    from model.inference.predictor import Predictor

#: Seconds between attempts to join the Ray cluster (each waits up to ray_executor.CONNECT_TIMEOUT).
JOIN_RETRY_S = 2.0
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def service_policy(settings: Settings) -> FetchPolicy:
    """The strict policy for URLs that clients send: public addresses only, paths only under IMPORT_ROOT."""
    return FetchPolicy(
        timeout=settings.http_timeout,
        max_bytes=settings.max_download_bytes,
        allow_private=False,
        allow_hosts=settings.fetch_allow_hosts,
        allow_paths=bool(settings.import_root),
        import_root=settings.import_root,
    )


def resolve_client_source(source: str, settings: Settings) -> str:
    """A client's URL or path as the fetcher should see it.

    Relative paths are taken relative to IMPORT_ROOT rather than the server's
    working directory, so a request means the same thing on every worker.
    """
    source = source.strip()
    if source.startswith(("http://", "https://", "file://", "sha1:")) or os.path.isabs(source):
        return source
    if _SCHEME.match(source):
        # The fetcher would take "ftp://host/x" for a relative path; say what is wrong instead.
        raise FetchRefused(f"only http(s) URLs are allowed: {source}")
    if settings.import_root:
        return os.path.join(settings.import_root, source)
    return source  # the policy refuses it with a message naming IMPORT_ROOT


def fetch_client_source(
    source: str, settings: Settings, policy: FetchPolicy, store: ObjectStore, sha1: str | None
) -> bytes:
    """Fetch a client's URL or path under the strict policy, verified against ``sha1`` if given."""
    return fetch_bytes(resolve_client_source(source, settings), policy, store, expected_sha1=sha1)


@dataclass
class Service(Context):
    """A worker's context (settings, store, strict policy) and its caches and readiness."""

    _predictor: Predictor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Set once the default base network is loaded (or preloading is off); /readyz waits for it.
    base_loaded: threading.Event = field(default_factory=threading.Event, repr=False)
    #: Why loading the base failed, if it did (named by /readyz).
    base_error: str | None = None
    #: Set once this worker has joined its executor (at once for EXECUTOR=local); /readyz waits.
    executor_joined: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The last failure to join the Ray cluster (the kind only: /readyz answers anyone).
    executor_error: str | None = None

    @staticmethod
    def from_settings(settings: Settings) -> Service:
        store = open_store(settings.store_uri or None, settings.data_dir)
        return Service(settings, store, service_policy(settings))

    @property
    def model_uri_allow(self) -> tuple[str, ...]:
        """Where a client's model.uri may point: the operator's list and this server's own store."""
        return (*self.settings.model_uri_allow, self.settings.store_uri or self.settings.data_dir)

    def predictor(self) -> Predictor:
        # Imported here: model.infer pulls in numpy and, on first use, TensorFlow,
        # which a worker that only serves /healthz or polls should not pay for.
        with self._lock:
            if self._predictor is None:
                from model.inference.predictor import Predictor

                self._predictor = Predictor(self.store, self.settings)
            return self._predictor

    def preload_base(self) -> None:
        """Load the default base network in the background, so that the first /infer is not slow."""
        if not self.settings.preload_base:
            self.base_loaded.set()
            return

        def load() -> None:
            from model.bases.registry import ensure_base_with

            try:
                spec, sha1 = ensure_base_with(self.settings, self.store, self.settings.base)
                self.predictor().extractor(self.settings.base, sha1, spec.native_size)
                self.base_loaded.set()
            except Exception as e:  # reported by /readyz, which stays 503
                self.base_error = f"{type(e).__name__}: {e}"

        threading.Thread(target=load, name="preload-base", daemon=True).start()

    def join_executor(self) -> None:
        """With EXECUTOR=ray, join the cluster in the background, retrying until it answers, so
        that a worker is ready only once it can hand jobs over (and its first POST /train is quick)."""
        if not on_cluster(self.settings):
            self.executor_joined.set()
            return

        def join() -> None:
            from model.errors import ExecutorUnavailable
            from model.execution.ray_cluster import connect

            while True:
                try:
                    connect(self.settings)
                    self.executor_joined.set()
                    return
                except ExecutorUnavailable as e:
                    self.executor_error = type(e.__cause__).__name__ if e.__cause__ else "no answer"
                    time.sleep(JOIN_RETRY_S)

        threading.Thread(target=join, name="join-ray", daemon=True).start()

    def check_free_space(self) -> None:
        """StoreUnwritable (503) when the store's disk has less than MIN_FREE_BYTES free: a
        worker that cannot finish a job is not ready, and takes none."""
        free = self.store.free_bytes()
        if free is not None and free < self.settings.min_free_bytes:
            raise StoreUnwritable(
                f"{free:,} bytes free on the store's disk, under MIN_FREE_BYTES ({self.settings.min_free_bytes:,})"
            )

    def fetch(self, source: str, sha1: str | None = None) -> bytes:
        return fetch_client_source(source, self.settings, self.policy, self.store, sha1)
