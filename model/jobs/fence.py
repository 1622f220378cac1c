"""The fence between gc's sweep and a model's commit: the two never overlap.

gc marks what the refs name and then deletes the rest. A training that reads a
cache entry after the mark and commits its manifest before the sweep ends would
name objects that the sweep deletes (a ``ready`` model with holes). So both
sides hold one store-wide lease, ``gc/lock``:

* ``stl gc --delete`` holds it from before it lists the refs until its last
  deletion, renewing it, and confirms it still holds it (with half its TTL left)
  before each batch of deletions: a gc that lost it stops deleting;
* a training holds it only while it commits: it checks that every object its
  manifest will name exists, and writes the manifest ref only then. If something
  is missing (a gc swept it since the job read it), the job builds the missing
  pieces again (their cache entries now miss) and tries once more.

Once the manifest ref exists, every later gc marks what it names. So a ready
model never names a deleted object, whatever the timing. Each deleting gc also
bumps ``gc/epoch``: a ready status records the epoch it was checked at, so a
train request for a ready model re-checks its objects only when a gc has run
since (models built before the fence, or damaged by hand, are repaired then).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from model.identity.refs import GC_EPOCH_REF, GC_LOCK_REF
from store import ObjectStore, lease

LOCK_REF = GC_LOCK_REF
EPOCH_REF = GC_EPOCH_REF
#: Seconds a holder that died keeps the lock; renewed every third of it while held.
LOCK_TTL = 60.0
#: How often a waiting commit or gc asks again.
POLL_S = 0.2


class FenceLost(RuntimeError):
    """gc no longer holds the lock (it was paused past the lease): it must stop deleting."""


def epoch(store: ObjectStore) -> int:
    """How many deleting gc runs this store has seen (0: none since the fence exists)."""
    raw = store.get_ref(EPOCH_REF)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return -1  # unreadable: matches no recorded epoch, so every ready model is re-checked


@contextlib.contextmanager
def commit_window(store: ObjectStore, owner: str, on_wait: Callable[[], None] | None = None) -> Iterator[int]:
    """Hold the lock while a model is committed; yields the gc epoch the commit is checked at.

    ``on_wait`` is called while a gc holds the lock (it may raise, e.g. on a cancel)."""
    with lease.held(
        store, LOCK_REF, owner, LOCK_TTL, POLL_S, (lambda _holder: on_wait()) if on_wait else None
    ):
        yield epoch(store)


class SweepWindow:
    """gc's hold on the lock: ``confirm`` before each batch of deletions."""

    def __init__(self, store: ObjectStore, owner: str) -> None:
        self.store, self.owner = store, owner

    def confirm(self) -> None:
        """Renew the lock now; FenceLost unless we still hold it with at least half its TTL left."""
        if not lease.renew(self.store, LOCK_REF, self.owner, LOCK_TTL):
            raise FenceLost("gc lost its lock on the store; stopped deleting")
        held = lease.holder(self.store, LOCK_REF)
        if held is None or held.owner != self.owner or held.expires_at - time.time() < LOCK_TTL / 2:
            raise FenceLost("gc lost its lock on the store; stopped deleting")


@contextlib.contextmanager
def sweep_window(store: ObjectStore, owner: str) -> Iterator[SweepWindow]:
    """Hold the lock for a whole deleting gc (waiting for commits in progress) and bump the epoch."""
    with lease.held(store, LOCK_REF, owner, LOCK_TTL, POLL_S):
        store.set_ref(EPOCH_REF, str(max(epoch(store), 0) + 1).encode())
        yield SweepWindow(store, owner)


__all__ = ["EPOCH_REF", "LOCK_REF", "FenceLost", "SweepWindow", "commit_window", "epoch", "sweep_window"]
