"""The list of models a store knows, one summary row each, for ``stl models``, the API and the web page.

A model is known by any ref under ``models/<sha1>/``: a job's status and recipe, or
only a manifest (a model published here from elsewhere). Rows are read from those
small refs, never from the manifests, so listing stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model.errors import InvalidRequest, ModelNotFound
from model.identity.manifest import load_manifest
from model.identity.refs import manifest_ref, recipe_ref, status_ref
from model.jobs.state import RUNNING, lease_lapsed, read_recipe, read_status, shown_status
from store import ObjectStore
from store.errors import HashMismatch
from store.hashing import is_sha1


def _row_status(store: ObjectStore, status: dict[str, Any] | None, has_manifest: bool) -> str:
    if status is None:
        return "ready" if has_manifest else "new"
    return shown_status(store, status)


def model_row(store: ObjectStore, model_sha1: str, names: set[str]) -> dict[str, Any]:
    return _row_and_record(store, model_sha1, names)[0]


def _row_and_record(
    store: ObjectStore, model_sha1: str, names: set[str]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    status = read_status(store, model_sha1) if status_ref(model_sha1) in names else None
    raw_recipe = store.get_ref(recipe_ref(model_sha1)) if recipe_ref(model_sha1) in names else None
    recipe = json.loads(raw_recipe)["recipe"] if raw_recipe else {}
    row: dict[str, Any] = {
        "model_sha1": model_sha1,
        "status": _row_status(store, status, manifest_ref(model_sha1) in names),
        "labels": (status or {}).get("labels"),
        "validation_accuracy": (status or {}).get("validation_accuracy"),
        "base": recipe.get("base"),
        "created_at": (status or {}).get("started_at") or (status or {}).get("updated_at"),
        "updated_at": (status or {}).get("updated_at"),
    }
    if status is not None and "progress" in status and row["status"] == "in_progress":
        row["progress"] = status["progress"]
    if status is not None and status.get("message"):
        row["message"] = status["message"]
    return row, status


def model_rows(store: ObjectStore, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Summary rows, most recently updated first; ``offset``/``limit`` page through them."""
    return [row for row, _record in models_with_records(store, offset, limit)]


def _model_sha1s(names: set[str]) -> set[str]:
    """The models that ref names under ``models/`` speak of (``models/<sha1>/...``)."""
    return {parts[1] for parts in (n.split("/") for n in names) if len(parts) >= 3 and is_sha1(parts[1])}


def models_with_records(
    store: ObjectStore, offset: int = 0, limit: int | None = None
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """``model_rows``, each with the job record it was read from (None: a model with no job here)."""
    names = set(store.list_refs("models"))
    pairs = [_row_and_record(store, s, names) for s in sorted(_model_sha1s(names))]
    pairs.sort(key=lambda p: (p[0]["updated_at"] or 0, p[0]["model_sha1"]), reverse=True)
    return pairs[offset : None if limit is None else offset + limit]


@dataclass(frozen=True)
class ModelState:
    """What the store says of one model: its job record, recipe and (verified) manifest."""

    model_sha1: str
    status: dict[str, Any] | None
    recipe: dict[str, Any] | None
    manifest: dict[str, Any] | None
    corrupt: bool  # a manifest is named but does not hash to its name
    stalled: bool = False  # recorded as running, but nobody holds its lease

    @property
    def state(self) -> str:
        # The manifest is written just before the ready status: it is the truth.
        if self.corrupt:
            return "error"
        if self.manifest is not None:
            return "ready"
        return "stalled" if self.stalled else (self.status or {}).get("status", "new")

    @property
    def job(self) -> dict[str, Any] | None:
        """The job record as it should be read. Between the manifest's write and the ready
        record's, the record still says running: it is left so (the ready record, with the
        weights' sha1, is a moment away) but its last beat is dropped, since the work is done."""
        if self.status is None or self.manifest is None or self.status["status"] not in RUNNING:
            return self.status
        return {k: v for k, v in self.status.items() if k != "progress"}


#: What a stalled job's state says (the same words on the API, the CLI and the page).
STALLED_MESSAGE = (
    "the process running this job stopped; a running server resumes it within half the lease "
    "time (LEASE_TTL), or send the training request again"
)


def model_state(store: ObjectStore, model_sha1: str) -> ModelState:
    """The model's state (ModelNotFound if the store knows nothing of it)."""
    status = read_status(store, model_sha1)
    found = read_recipe(store, model_sha1)
    corrupt = False
    try:
        manifest: dict[str, Any] | None = load_manifest(store, model_sha1)  # verified by hash
    except ModelNotFound:
        manifest = None
    except HashMismatch:
        manifest, corrupt = None, True
    if status is None and found is None and manifest is None and not corrupt:
        raise ModelNotFound(model_sha1)
    recipe = found[0].to_dict() if found else (manifest or {}).get("recipe")
    stalled = (
        manifest is None
        and status is not None
        and status["status"] in RUNNING
        and lease_lapsed(store, model_sha1)
    )
    return ModelState(model_sha1, status, recipe, manifest, corrupt, stalled)


#: The shortest model prefix taken where a person names a model (git's default abbreviation).
MIN_PREFIX = 7


def is_model_name(name: str) -> bool:
    """A model's sha1, or a prefix of one that ``resolve_model`` looks up (its shape alone)."""
    return MIN_PREFIX <= len(name) <= 40 and all(c in "0123456789abcdef" for c in name)


def resolve_model(store: ObjectStore, name: str) -> str:
    """The full sha1 of the model ``name`` names: itself, or the one model of this store whose
    sha1 starts with it (at least MIN_PREFIX hex digits: the pages show 12, export's file names
    too). A full sha1 is taken as it is, known here or not (``stl infer --model-uri`` fetches it)."""
    if is_sha1(name):
        return name
    if not is_model_name(name):
        raise InvalidRequest(
            f"a model is named by its sha1 or a prefix of at least {MIN_PREFIX} lowercase hex digits, got {name!r}"
        )
    found = sorted(s for s in _model_sha1s(set(store.list_refs("models"))) if s.startswith(name))
    if not found:
        raise ModelNotFound(name)
    if len(found) > 1:
        listed = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise InvalidRequest(f"{name} starts {len(found)} models' sha1s: {listed}")
    return found[0]
