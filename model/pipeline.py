"""The training pipeline: CSV -> images -> tensors -> features -> head -> manifest.

(Interface fixed; implementation lands in the next commits.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store import ObjectStore

from .config import Settings
from .fetch import FetchPolicy
from .recipe import Recipe

Progress = Callable[[str, int, int], None]


def prepare_recipe(
    store: ObjectStore,
    settings: Settings,
    params: dict[str, Any],
    csv_source: str | None,
    csv_sha1: str | None,
    policy: FetchPolicy,
) -> Recipe:
    """Validate a request and bind it to content hashes (CSV, base weights).

    Cheap: no TensorFlow. If ``csv_sha1`` is not given the CSV is fetched and
    stored to learn it. Raises InvalidRequest / DataError / BaseModelError.
    """
    raise NotImplementedError


def train_model(
    store: ObjectStore,
    recipe: Recipe,
    csv_source: str | None,
    settings: Settings,
    policy: FetchPolicy,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the model for ``recipe``; return the ready-status fields (manifest and artifact sha1s)."""
    raise NotImplementedError
