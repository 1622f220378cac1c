"""Recipe identity: everything that changes a model's bytes, and nothing else.

``model_sha1`` is the SHA1 of the recipe's canonical JSON. The recipe names the
CSV by hash, the base network by the hash of its weights, every hyperparameter
that changes the result, and ``CODE_VERSION`` — bumped whenever preprocessing or
training code changes its output — so two different models can never share a
hash (the 2019 project hashed only seed+CSV, so EPOCHS changed the model but not
its name).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from store.hashing import is_sha1, sha1_bytes

from .config import Settings
from .errors import InvalidRequest

#: Version of the code paths that shape a model's bytes (decode, resize, features, head).
#: stl-2: int8 base on LiteRT/XNNPACK and a float64 exact-arithmetic head, portable across CPUs.
CODE_VERSION = "stl-2"


@dataclass(frozen=True)
class Recipe:
    csv_sha1: str
    random_seed: int
    base: str
    base_sha1: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    train_percentage: int
    data_limit: int
    l2: float
    flip: bool
    code_version: str = CODE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def sha1(self) -> str:
        return recipe_sha1(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Recipe:
        names = {f.name for f in fields(Recipe)}
        return Recipe(**{k: v for k, v in d.items() if k in names})


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: the same value always gives the same bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def recipe_sha1(recipe: Recipe) -> str:
    return sha1_bytes(recipe.canonical_json())


#: Request field -> (type, minimum, maximum). Bounds keep a request from asking
#: for a job that cannot finish; they are part of the API contract.
HYPERPARAMETERS: dict[str, tuple[type, float, float]] = {
    "random_seed": (int, 0, 2**31 - 1),
    "epochs": (int, 1, 1000),
    "batch_size": (int, 1, 4096),
    "image_size": (int, 32, 1024),
    "learning_rate": (float, 1e-6, 10.0),
    "train_percentage": (int, 1, 99),
    "data_limit": (int, -1, 1_000_000),  # -1: balance labels, 0: no limit
    "l2": (float, -1.0, 100.0),
}
OTHER_FIELDS = {"base": str, "flip": bool}


def parse_hyperparameters(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate optional request fields and fill the rest from ``settings``.

    Unknown fields are refused: silently ignoring a misspelt ``epoch`` would train
    a model the user did not ask for.
    """
    if not isinstance(params, dict):
        raise InvalidRequest("hyperparameters must be a JSON object")
    unknown = sorted(set(params) - set(HYPERPARAMETERS) - set(OTHER_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, (kind, lo, hi) in HYPERPARAMETERS.items():
        value = params.get(name, getattr(settings, name))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{name} must be a number, got {value!r}")
        if kind is int and value != int(value):
            raise InvalidRequest(f"{name} must be an integer, got {value!r}")
        value = kind(value)
        if not lo <= value <= hi and not (name == "image_size" and value == 0):
            raise InvalidRequest(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        out[name] = value
    base = params.get("base", settings.base)
    if not isinstance(base, str) or not base:
        raise InvalidRequest(f"base must be a base network name, got {base!r}")
    flip = params.get("flip", settings.flip)
    if not isinstance(flip, bool):
        raise InvalidRequest(f"flip must be true or false, got {flip!r}")
    out["base"] = base
    out["flip"] = flip
    return out


def make_recipe(hyper: dict[str, Any], csv_sha1: str, base_sha1: str, native_size: int) -> Recipe:
    """Bind validated hyperparameters to the content hashes of the CSV and base weights."""
    if not is_sha1(csv_sha1):
        raise InvalidRequest(f"csv sha1 must be 40 lowercase hex digits, got {csv_sha1!r}")
    return Recipe(
        csv_sha1=csv_sha1,
        random_seed=hyper["random_seed"],
        base=hyper["base"],
        base_sha1=base_sha1,
        image_size=hyper["image_size"] or native_size,
        epochs=hyper["epochs"],
        batch_size=hyper["batch_size"],
        learning_rate=hyper["learning_rate"],
        train_percentage=hyper["train_percentage"],
        data_limit=hyper["data_limit"],
        l2=hyper["l2"],
        flip=hyper["flip"],
    )
