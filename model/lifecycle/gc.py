"""Garbage collection: mark what is still referenced, sweep old objects nothing references.

Content is never deleted by anything else: deleting a model drops its refs only.
``collect`` then marks, from the refs:

* every sha1 a ref names (manifests, runs, job records, recipes, bases, publications);
* every sha1 inside a marked JSON object (a manifest names its CSV, images, tensors,
  features and weights), transitively;
* for each job that is new or running, its CSV's images and the cache entries its
  recipe will read, so that a training running during gc keeps its inputs, and the head
  shards its build has stored so far (``model.jobs.in_flight``), which a long fit reads
  long after writing them; a stopped job's list of them protects nothing;
* cache entries (tensors, features) that a remaining model uses, or that are younger than
  the grace period, or all of them with ``keep_caches``. Other cache entries are
  recomputable and are dropped with the objects they name.

Staged copies in the store's local staging folder (``tmp/tmp-*``) that are older than the
grace were left by a process killed mid-write; they are counted, and removed with the rest.

An unmarked object is deleted only if the backend knows its age and it is older than
``grace_s``: objects being written by a job whose ref does not exist yet are young
(re-putting an existing object renews its age). A backend that cannot tell an age
(IPFS) keeps everything. The default is a dry run.

A deleting run holds gc's fence (``model.jobs.fence``) from before it reads the
refs until its last deletion, and a training commits its manifest only inside
the same fence, after checking that every object it names exists. So a job
that starts after the mark, reads cache entries that the sweep then drops, and
finishes during the sweep, waits, finds what went missing, and builds it again:
no ready model ever names a deleted object. The grace period still protects
what no ref names yet and no job will check: an upload waiting for the
training that will name it (``MIN_GRACE_S``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from model.data.csvfile import parse_csv
from model.errors import PipelineError
from model.features.cache import FeatureKey, TensorKey
from model.identity.refs import CACHE_PREFIX, HEAD_SHARDS, status_ref
from model.identity.views import tensor_sizes
from model.jobs import fence as gc_fence
from model.jobs.state import RUNNING, read_recipe
from store import ObjectStore, StoreError

_SHA1 = re.compile(rb"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])")
#: Objects larger than this are never read as JSON while marking.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
#: The shortest grace period ``stl gc`` takes without --force: an object uploaded (POST /objects,
#: the web page) for a training that has not been sent yet is protected by its age alone.
MIN_GRACE_S = 3600.0
#: Deletions between two confirmations that this gc still holds the fence.
CONFIRM_EVERY = 64


def sha1s_in(data: bytes) -> set[str]:
    """Every 40-hex-digit word in ``data``: over-marking a look-alike only keeps an object longer."""
    return {m.decode() for m in _SHA1.findall(data)}


@dataclass
class Report:
    dry_run: bool
    objects: int = 0
    referenced: int = 0
    marked: set[str] = field(default_factory=set)
    #: Objects no ref reaches that are older than the grace: deleted unless a dry run.
    unreferenced: list[str] = field(default_factory=list)
    unreferenced_bytes: int = 0
    kept_young: int = 0
    kept_unknown_age: int = 0
    #: (sha1, bytes, modified) of each object no ref reaches, young or old; None where the age is unknown.
    unreached: list[tuple[str, int | None, float | None]] = field(default_factory=list)
    cache_refs_dropped: list[str] = field(default_factory=list)
    deleted: int = 0
    #: Staged copies older than the grace, left by a process killed while it wrote them.
    stale_staging_files: int = 0
    stale_staging_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "objects": self.objects,
            "referenced": self.referenced,
            # Every object no ref reaches, and what becomes of it: the same counts in a dry run
            # and a deleting one (with the same grace).
            "unreferenced": len(self.unreached),
            "deletable": len(self.unreferenced),
            "deletable_bytes": self.unreferenced_bytes,
            "kept_young": self.kept_young,
            "kept_unknown_age": self.kept_unknown_age,
            "cache_entries_dropped": len(self.cache_refs_dropped),
            "deleted": self.deleted,
            "stale_staging_files": self.stale_staging_files,
            "stale_staging_bytes": self.stale_staging_bytes,
        }


def _is_document(store: ObjectStore, sha1: str) -> bool:
    return store.peek(sha1, 1) == b"{"


def _mark(store: ObjectStore, roots: set[str], marked: set[str]) -> None:
    """Add ``roots`` and everything the JSON objects among them name, transitively."""
    todo = [s for s in roots if s not in marked]
    marked.update(todo)
    while todo:
        sha1 = todo.pop()
        stat = store.stat_object(sha1)
        if stat is None or stat[1] > MAX_DOCUMENT_BYTES or not _is_document(store, sha1):
            continue
        try:
            found = sha1s_in(store.get(sha1)) - marked
        except StoreError:
            continue  # corrupt: it names nothing we can trust; its own sha1 stays marked
        marked.update(found)
        todo.extend(found)


def in_flight_cache_refs(store: ObjectStore, model_sha1: str, marked: set[str]) -> set[str]:
    """Mark a new or running job's CSV images; the cache refs its recipe will read."""
    found = read_recipe(store, model_sha1)
    if found is None:
        return set()
    recipe, _source = found
    try:
        rows = parse_csv(store.get(recipe.csv_sha1), sys.maxsize)
    except (StoreError, PipelineError):
        return set()  # the CSV is not here (yet) or unusable: the job will fail or fetch it afresh
    sizes = tensor_sizes(recipe.image_size, recipe.views)
    refs = set()
    for row in rows:
        marked.add(row.sha1)
        refs.update(TensorKey(row.sha1, s).ref for s in sizes)
        refs.update(
            FeatureKey(row.sha1, recipe.image_size, base_sha1, v).ref
            for _name, base_sha1 in recipe.bases()
            for v in recipe.views
        )
    return refs


def _running(store: ObjectStore, model_sha1: str) -> bool:
    raw = store.get_ref(status_ref(model_sha1))
    return raw is not None and json.loads(raw).get("status") in RUNNING


def collect(
    store: ObjectStore,
    grace_s: float,
    delete: bool = False,
    keep_caches: bool = False,
    now: float | None = None,
) -> Report:
    """Mark and sweep (see the module doc); with ``delete`` False nothing is changed."""
    if not delete:
        return _collect(store, grace_s, keep_caches, now, None)
    owner = f"gc-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with gc_fence.sweep_window(store, owner) as window:
        return _collect(store, grace_s, keep_caches, now, window)


def _collect(
    store: ObjectStore,
    grace_s: float,
    keep_caches: bool,
    now: float | None,
    window: gc_fence.SweepWindow | None,
) -> Report:
    now = time.time() if now is None else now
    report = Report(dry_run=window is None)
    names = store.list_refs("")
    cache_names = [n for n in names if n.startswith(CACHE_PREFIX)]
    marked: set[str] = set()
    protected_cache: set[str] = set()
    for name in names:
        if name.startswith(CACHE_PREFIX):
            continue
        raw = store.get_ref(name)
        if raw is None:
            continue
        if name.endswith("/status") and json.loads(raw).get("status") in RUNNING:
            protected_cache |= in_flight_cache_refs(store, name.split("/")[1], marked)
        if name.endswith("/" + HEAD_SHARDS) and not _running(store, name.split("/")[1]):
            continue  # left by a job that stopped without ending its build: it protects nothing
        _mark(store, sha1s_in(raw), marked)
    # The mark above is complete for everything but caches: keep the cache entries it reaches.
    for name in cache_names:
        value = store.get_ref(name) or b""
        stat = store.stat_ref(name)
        young = stat is None or stat[0] > now - grace_s
        if keep_caches or name in protected_cache or value.decode() in marked or young:
            _mark(store, sha1s_in(value), marked)
        else:
            report.cache_refs_dropped.append(name)
    report.marked = marked
    objects = store.list_objects()
    report.objects = len(objects)
    for sha1 in objects:
        if sha1 in marked:
            report.referenced += 1
            continue
        stat = store.stat_object(sha1)
        report.unreached.append((sha1, stat[1], stat[0]) if stat else (sha1, None, None))
        if stat is None:
            report.kept_unknown_age += 1
        elif stat[0] > now - grace_s:
            report.kept_young += 1
        else:
            report.unreferenced.append(sha1)
            report.unreferenced_bytes += stat[1]
    stale = store.stale_staging(now - grace_s)
    report.stale_staging_files, report.stale_staging_bytes = len(stale), sum(n for _, n in stale)
    if window is not None:
        store.remove_staged(stale)  # no ref or object names them: outside the fence
        window.confirm()
        for name in report.cache_refs_dropped:
            store.delete_ref(name)
        for i, sha1 in enumerate(report.unreferenced):
            if i and i % CONFIRM_EVERY == 0:
                window.confirm()  # FenceLost: stop here; what is left goes at the next run
            store.delete_object(sha1)
            report.deleted += 1
    return report


__all__ = ["MIN_GRACE_S", "Report", "collect", "sha1s_in"]
