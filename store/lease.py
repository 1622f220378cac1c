"""Expiring leases on top of a store's compare-and-swap refs.

A lease says "owner X is working on this until time T". Whoever finds no lease,
or an expired one, may take it with a single compare-and-swap, so among many
processes racing for the same job exactly one wins. A holder that dies simply
stops renewing; after ``ttl`` seconds the next caller takes over.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .cas import ObjectStore
from .errors import StoreError


@dataclass(frozen=True)
class Lease:
    owner: str
    expires_at: float
    acquired_at: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(raw: bytes) -> Lease | None:
        try:
            d = json.loads(raw)
            return Lease(str(d["owner"]), float(d["expires_at"]), float(d["acquired_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable lease is treated as expired

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def acquire(store: ObjectStore, name: str, owner: str, ttl: float) -> bool:
    """Take the lease ``name`` for ``owner`` if it is free or expired."""
    now = time.time()
    new = Lease(owner, now + ttl, now).encode()
    if store.create_ref(name, new):
        return True
    current = store.get_ref(name)
    if current is None:  # released between our two calls: try once more
        return store.create_ref(name, new)
    held = Lease.decode(current)
    if held is not None and not held.expired(now) and held.owner != owner:
        return False
    return store.replace_ref(name, current, new)


def renew(store: ObjectStore, name: str, owner: str, ttl: float) -> bool:
    """Extend a lease we hold; False if someone else has taken it over."""
    current = store.get_ref(name)
    held = Lease.decode(current) if current is not None else None
    if held is None or held.owner != owner:
        return False
    now = time.time()
    return store.replace_ref(name, current, Lease(owner, now + ttl, held.acquired_at).encode())  # type: ignore[arg-type]


def release(store: ObjectStore, name: str, owner: str) -> None:
    """Give the lease up early (mark it expired) if we still hold it."""
    current = store.get_ref(name)
    held = Lease.decode(current) if current is not None else None
    if held is not None and held.owner == owner:
        store.replace_ref(name, current, Lease(owner, 0.0, held.acquired_at).encode())  # type: ignore[arg-type]


def holder(store: ObjectStore, name: str) -> Lease | None:
    current = store.get_ref(name)
    return Lease.decode(current) if current is not None else None


class Heartbeat:
    """Renews a lease in the background while its holder works."""

    def __init__(self, store: ObjectStore, name: str, owner: str, ttl: float) -> None:
        self._stop = threading.Event()
        self._args = (store, name, owner, ttl)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{name}")

    def _run(self) -> None:
        store, name, owner, ttl = self._args
        while not self._stop.wait(ttl / 3):
            # A missed beat is fine: the lease outlives several intervals.
            with contextlib.suppress(StoreError):
                renew(store, name, owner, ttl)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def held(
    store: ObjectStore,
    name: str,
    owner: str,
    ttl: float,
    poll: float = 0.2,
    on_wait: Callable[[Lease | None], None] | None = None,
) -> Iterator[None]:
    """Hold the lease ``name`` for the block: wait (calling ``on_wait`` with the holder each poll,
    which may raise to give up) until it is free, renew it while the block runs, release it after."""
    while not acquire(store, name, owner, ttl):
        if on_wait is not None:
            on_wait(holder(store, name))
        time.sleep(poll)
    try:
        with Heartbeat(store, name, owner, ttl):
            yield
    finally:
        release(store, name, owner)
