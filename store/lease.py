"""Expiring leases on top of a store's compare-and-swap refs.

A lease says "owner X is working on this until time T". Whoever finds no lease,
or an expired one, may take it with a single compare-and-swap, so among many
processes racing for the same job exactly one wins. A holder that dies simply
stops renewing; after ``ttl`` seconds the next caller takes over.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from .cas import ObjectStore


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
