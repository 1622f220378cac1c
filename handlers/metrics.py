"""Prometheus metrics: ``GET /metrics`` in the text format, across every gunicorn worker.

Counters and histograms live in prometheus-client's multiprocess files when
PROMETHEUS_MULTIPROC_DIR is set (``stl serve`` sets it to a fresh directory), so
one scrape sums all workers; without it (a test client, one process) they live
in the default registry. Gauges about jobs are read from the store at scrape
time, so every worker reports the same counts.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from flask import Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from model.lifecycle.catalog import model_rows
from store import ObjectStore
from store.errors import MISMATCH_LISTENERS, HashMismatch
from store.transport import Entry, Transport

disable_created_metrics()  # the same series single- and multi-process; _created means nothing here

REQUESTS = Counter("stl_http_requests", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "stl_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STORE_LATENCY = Histogram(
    "stl_store_operation_duration_seconds",
    "Time of one store operation (for reads: until the first byte can be read)",
    ["backend", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
FEATURE_CACHE = Counter(
    "stl_feature_cache_lookups", "Per-image feature vectors a training needed, by outcome", ["outcome"]
)
HASH_MISMATCHES = Counter("stl_hash_mismatches", "Reads or uploads whose bytes did not hash to their name")


def _count_mismatch(_error: HashMismatch) -> None:
    HASH_MISMATCHES.inc()


if _count_mismatch not in MISMATCH_LISTENERS:
    MISMATCH_LISTENERS.append(_count_mismatch)


def observe_training(cache_stats: dict[str, int]) -> None:
    """Count a finished training's feature-cache hits and misses (its status's ``cache`` field)."""
    FEATURE_CACHE.labels("hit").inc(cache_stats.get("feature_cache_hits", 0))
    FEATURE_CACHE.labels("miss").inc(cache_stats.get("base_forward", 0))


class TimedTransport(Transport):
    """A transport that times every call into ``STORE_LATENCY``; otherwise the one it wraps."""

    def __init__(self, inner: Transport, backend: str) -> None:
        self.inner, self.backend = inner, backend
        self.location = inner.location
        self.verify_before_put = inner.verify_before_put
        self.staging_dir = inner.staging_dir

    def _timed(self, operation: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            STORE_LATENCY.labels(self.backend, operation).observe(time.perf_counter() - started)

    def get(self, key: str) -> Entry | None:
        return self._timed("get", lambda: self.inner.get(key))

    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        return self._timed("put", lambda: self.inner.put(key, src, size, if_absent=if_absent, if_tag=if_tag))

    def exists(self, key: str) -> bool:
        return self._timed("exists", lambda: self.inner.exists(key))

    def list(self, prefix: str) -> list[str]:
        return self._timed("list", lambda: self.inner.list(prefix))

    def delete(self, key: str) -> None:
        self._timed("delete", lambda: self.inner.delete(key))

    def stat(self, key: str) -> tuple[float, int] | None:
        return self._timed("stat", lambda: self.inner.stat(key))

    def touch(self, key: str) -> None:
        self._timed("touch", lambda: self.inner.touch(key))

    def native_id(self, key: str) -> str | None:
        return self.inner.native_id(key)

    def link_native_id(self, key: str, native_id: str) -> None:
        self.inner.link_native_id(key, native_id)

    def get_native(self, native_id: str) -> bytes:
        return self._timed("get", lambda: self.inner.get_native(native_id))

    def close(self) -> None:
        self.inner.close()


def backend_name(transport: Transport) -> str:
    """local, s3, ipfs, memory: the scheme of the transport's location."""
    location = transport.location
    return location.split(":", 1)[0] if ":" in location else type(transport).__name__.lower()


def instrument(store: ObjectStore) -> None:
    """Time every transport of ``store`` (objects, refs, and a local cache in front of them)."""
    if store.refs is store.transport:
        store.transport = store.refs = TimedTransport(store.transport, backend_name(store.transport))
    else:
        store.transport = TimedTransport(store.transport, backend_name(store.transport))
        store.refs = TimedTransport(store.refs, backend_name(store.refs))
    if store.cache is not None:
        instrument(store.cache)


class JobsCollector:
    """``stl_jobs{status}``: how many models the store holds in each status, read at scrape time
    (as ``GET /models`` lists them: a model published here without a job counts as ready)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = Tally(r["status"] for r in model_rows(self.store))
        family = GaugeMetricFamily("stl_jobs", "Training jobs in the store, by status", labels=["status"])
        for status in ("new", "in_progress", "ready", "error", "cancelled"):
            family.add_metric([status], counts.get(status, 0))
        yield family


def endpoint() -> str:
    """The route's rule (``/models/<model_sha1>``), never the raw path: bounded label values."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def record_request(response: Response, started: float) -> None:
    name = endpoint()
    REQUESTS.labels(name, request.method, str(response.status_code)).inc()
    LATENCY.labels(name, request.method).observe(time.perf_counter() - started)


def exposition(store: ObjectStore) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in (REQUESTS, LATENCY, STORE_LATENCY, FEATURE_CACHE, HASH_MISMATCHES):
            registry.register(collector)
    registry.register(JobsCollector(store))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


__all__ = ["exposition", "instrument", "observe_training", "record_request"]
