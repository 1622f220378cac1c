"""The ML side of static-transfer-learning: it knows the store, never HTTP.

Its face, for notebooks, scripts and the edges (the CLI, the Flask handlers)::

    >>> import model
    >>> m = model.train("example-data/train.csv", seed=1234)  # blocks; same recipe, same hash
    >>> m.predict(["example-data/infer/dots.png"])            # [{label: probability}, ...]
    >>> model.verify(m.sha1)["identical"]
    True

Each name in ``__all__`` is imported from its room on first use, so ``import model`` stays
cheap (no LiteRT, no Ray until something needs them). Below the face, each room imports only
rooms beneath it (``tests/test_structure.py`` holds it so), from the top: ``api`` · ``run``
(a job to its end) · ``lifecycle`` (publish, export, verify, gc, catalog) · ``training`` and
``inference`` · ``features`` · ``jobs`` (state in the store) · ``execution`` (local or Ray) ·
``bases`` · ``head`` · ``data`` · ``identity`` (what names a model) · ``config`` and
``errors``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_FACE = {
    "Model": "model.api",
    "train": "model.api",
    "load": "model.api",
    "verify": "model.api",
    "models": "model.api",
    "train_job": "model.api",
    "Context": "model.context",
    "Job": "model.context",
    "Settings": "model.config",
    "Recipe": "model.identity.recipe",
    "Predictor": "model.inference.predictor",
    "PipelineError": "model.errors",
    "InvalidRequest": "model.errors",
    "ModelNotFound": "model.errors",
    "DataError": "model.errors",
    "JobCancelled": "model.errors",
}

__all__ = sorted(_FACE)


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
