"""What a running job has stored that nothing names yet: its head shards.

A job's head shards are derived objects that no manifest names (the model does not
need them once its head is fitted), yet the fit reads them again and again: each
round when they do not fit in memory, and whenever a Ray worker that held some is
replaced. A fit on a large set can outlast gc's grace period, so their age alone does
not protect them. The job lists them in one ref, rewritten as each shard is stored
and deleted when the build ends; gc keeps what that ref names while the job's status
says it runs (a job that crashed leaves a ref that protects nothing).
"""

from __future__ import annotations

import json
from types import TracebackType

from model.identity.refs import head_shards_ref
from store import ObjectStore


class HeadShardLedger:
    """The ref that names one build's head shards, from the first shard to the end of the build."""

    def __init__(self, store: ObjectStore, model_sha1: str) -> None:
        self.store, self.ref = store, head_shards_ref(model_sha1)
        self.shards: list[str] = []

    def add(self, sha1: str) -> None:
        """Name ``sha1`` before anything reads it back (rewrites the whole ref: shards are few)."""
        self.shards.append(sha1)
        self.store.set_ref(self.ref, json.dumps({"head_shards": self.shards}).encode())

    def __enter__(self) -> HeadShardLedger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.shards:
            self.store.delete_ref(self.ref)
