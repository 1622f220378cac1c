"""Local or Ray: the one place that reads ``settings.executor``.

Ray is imported only when the settings ask for it, so the embedded default never
pays for it.
"""

from __future__ import annotations

from model.config import Settings
from model.execution.local import Executor, LocalExecutor
from store import ObjectStore


def on_cluster(settings: Settings) -> bool:
    """Whether jobs and chunks run on a Ray cluster (EXECUTOR=ray) rather than in this process."""
    return settings.executor == "ray"


def executor_for(settings: Settings, store: ObjectStore) -> Executor:
    """The executor ``settings.executor`` names."""
    if on_cluster(settings):
        from model.execution.ray_tasks import RayExecutor

        return RayExecutor(settings)
    return LocalExecutor(store)
