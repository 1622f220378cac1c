"""Training progress as part of the job's status, so that any worker's poll can report it.

The pipeline reports stages (``fetch``, ``features``, ``head``) through trackers;
:class:`JobProgress` folds them into the job's status record as
``progress: {stage, done, total, eta_s}``. Writes are rate-limited (one per
``interval`` seconds, plus each stage's end), so a million-row job costs the
store a few writes a second at most. The same beat checks whether someone asked
the job to stop: a cancel is honoured at the next tracker update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from model.errors import JobCancelled
from model.identity.refs import cancel_ref
from store import ObjectStore

#: Seconds between two progress writes to the store.
WRITE_INTERVAL = 1.0


def request_cancel(store: ObjectStore, model_sha1: str, owner: str) -> None:
    """Ask the job run by ``owner`` to stop; a later run (another owner) is not affected."""
    store.set_ref(cancel_ref(model_sha1), json.dumps({"owner": owner, "at": time.time()}).encode())


def cancel_requested(store: ObjectStore, model_sha1: str, owner: str) -> bool:
    raw = store.get_ref(cancel_ref(model_sha1))
    return raw is not None and json.loads(raw).get("owner") == owner


def stage_eta(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left in a stage at its mean rate so far; None until something is done."""
    if done <= 0 or total <= done:
        return None if done <= 0 else 0.0
    return round(elapsed / done * (total - done), 1)


class _StageTracker:
    def __init__(self, job: JobProgress, stage: str, total: int) -> None:
        self.job, self.stage, self.total, self.done = job, stage, total, 0
        self.started = job.clock()
        job.report(self, force=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.job.report(self, force=self.done >= self.total)

    def close(self) -> None:
        return None

    def fields(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "eta_s": stage_eta(self.done, self.total, self.job.clock() - self.started),
        }


class JobProgress:
    """A pipeline ``Progress`` that writes each stage's counts into the job's status record."""

    def __init__(
        self,
        store: ObjectStore,
        model_sha1: str,
        owner: str,
        write: Callable[[dict[str, Any]], None],
        interval: float = WRITE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.model_sha1, self.owner = store, model_sha1, owner
        self.write, self.interval, self.clock = write, interval, clock
        self.last_write = float("-inf")
        self.writes = 0

    def __call__(self, stage: str, total: int) -> _StageTracker:
        return _StageTracker(self, stage, total)

    def report(self, tracker: _StageTracker, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_write < self.interval:
            return
        self.last_write = now
        if cancel_requested(self.store, self.model_sha1, self.owner):
            raise JobCancelled("cancelled on request")
        self.write(tracker.fields())
        self.writes += 1


class _Both:
    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def update(self, n: int = 1) -> None:
        for t in self.trackers:
            t.update(n)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def tee(*progresses: Callable[[str, int], Any]) -> Callable[[str, int], Any]:
    """One ``Progress`` feeding several (the CLI's bars and the job's status)."""
    return lambda stage, total: _Both([p(stage, total) for p in progresses])
