"""Recipe identity: everything that changes a model's bytes, and nothing else.

``model_sha1`` is the SHA1 of the recipe's canonical JSON. The recipe names the
CSV by hash, the base network by the hash of its weights, every hyperparameter
that changes the result, and ``CODE_VERSION`` — bumped whenever preprocessing or
training code changes its output — so two different models can never share a
hash (the 2019 project hashed only seed+CSV, so EPOCHS changed the model but not
its name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from model.config import Settings
from model.errors import InvalidRequest
from model.identity.canonical import CODE_VERSION, canonical_json
from model.identity.views import VIEWS
from store.hashing import is_sha1, sha1_bytes

HEADS = ("adam", "logistic")
#: Recipe fields that only the Adam head reads: zero for the logistic head, so they cannot
#: give one model two names.
ADAM_ONLY = ("epochs", "batch_size", "learning_rate")
#: The Adam head needs a holdout for its validation metrics: its split when none is asked for.
ADAM_TRAIN_PERCENTAGE = 80


@dataclass(frozen=True)
class Recipe:
    csv_sha1: str
    random_seed: int
    base: str
    base_sha1: str
    #: A second base whose (view-averaged) features are appended to the first's; "" for none.
    extra_base: str
    extra_base_sha1: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    train_percentage: int
    data_limit: int
    l2: float
    views: tuple[str, ...]
    head: str
    calibrate: bool
    code_version: str = CODE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "views": list(self.views)}

    def bases(self) -> list[tuple[str, str]]:
        """(name, int8 sha1) of each base whose features the model reads, in feature order."""
        return [(self.base, self.base_sha1)] + (
            [(self.extra_base, self.extra_base_sha1)] if self.extra_base else []
        )

    def canonical_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def sha1(self) -> str:
        return recipe_sha1(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Recipe:
        names = {f.name for f in fields(Recipe)}
        # Manifests from before stl-3 have "flip" and the Adam head.
        legacy = {"views": ["original", "mirrored"] if d.get("flip") else ["original"], "head": "adam"}
        d = {"calibrate": False, "extra_base": "", "extra_base_sha1": "", **legacy, **d}
        return Recipe(**{k: tuple(v) if k == "views" else v for k, v in d.items() if k in names})


def fields_in_use(recipe: dict[str, Any]) -> dict[str, Any]:
    """The fields of a recipe (``Recipe.to_dict``) that its head and bases read: not the Adam-only
    ones of a logistic head (recorded as 0), nor an absent second base's."""
    unused = set(ADAM_ONLY) if recipe.get("head") == "logistic" else set()
    if not recipe.get("extra_base"):
        unused |= {"extra_base", "extra_base_sha1"}
    return {k: v for k, v in recipe.items() if k not in unused}


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
    "train_percentage": (int, 1, 100),  # 100: the logistic head's folds give the validation metrics
    "data_limit": (int, -1, 1_000_000),  # -1: balance labels, 0: no limit
    "l2": (float, -1.0, 100.0),
}
OTHER_FIELDS = {"base": str, "extra_base": str, "flip": bool, "views": list, "head": str, "calibrate": bool}


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
    out["base"] = base
    extra = params.get("extra_base", settings.extra_base)
    if not isinstance(extra, str):
        raise InvalidRequest(f"extra_base must be a base network name or empty, got {extra!r}")
    if extra == base:
        raise InvalidRequest(f"extra_base must differ from base ({base}): its features would repeat")
    out["extra_base"] = extra
    out["views"] = _views(params, settings)
    head = params.get("head", settings.head)
    if head not in HEADS:
        raise InvalidRequest(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    out["head"] = head
    given = [name for name in ADAM_ONLY if name in params]
    if head == "logistic" and given:
        raise InvalidRequest(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to head adam only; the "
            "logistic head trains to convergence (drop it, or ask for head adam)"
        )
    calibrate = params.get("calibrate", settings.calibrate if head == "logistic" else False)
    if not isinstance(calibrate, bool):
        raise InvalidRequest(f"calibrate must be true or false, got {calibrate!r}")
    if calibrate and head != "logistic":
        raise InvalidRequest("calibrate needs head logistic (the temperature is fitted on its folds)")
    out["calibrate"] = calibrate
    if head == "adam" and out["train_percentage"] == 100 and "train_percentage" not in params:
        out["train_percentage"] = ADAM_TRAIN_PERCENTAGE  # the default 100 is the logistic head's
    if out["train_percentage"] == 100 and head != "logistic":
        raise InvalidRequest(
            "train_percentage 100 needs head logistic (its folds give the validation metrics)"
        )
    return out


def _views(params: dict[str, Any], settings: Settings) -> tuple[str, ...]:
    """The views to average, in the canonical order (the order of the sum is part of the bits)."""
    views = params.get("views", list(settings.views))
    if not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views):
        raise InvalidRequest(f"views must be a non-empty list of view names, got {views!r}")
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        raise InvalidRequest(f"unknown view(s) {', '.join(unknown)}; choose from: {', '.join(VIEWS)}")
    chosen = set(views)
    if "flip" in params:  # the older switch: with or without the mirrored view
        flip = params["flip"]
        if not isinstance(flip, bool):
            raise InvalidRequest(f"flip must be true or false, got {flip!r}")
        if not flip and "mirrored" in params.get("views", ()):
            raise InvalidRequest("flip false and views listing mirrored contradict each other; give one")
        chosen = chosen | {"mirrored"} if flip else chosen - {"mirrored"}
        if not chosen:
            raise InvalidRequest('flip false leaves no views; add views such as ["original"]')
    return tuple(v for v in VIEWS if v in chosen)


def make_recipe(
    hyper: dict[str, Any], csv_sha1: str, base_sha1: str, native_size: int, extra_base_sha1: str = ""
) -> Recipe:
    """Bind validated hyperparameters to the content hashes of the CSV and base weights."""
    if not is_sha1(csv_sha1):
        raise InvalidRequest(f"csv sha1 must be 40 lowercase hex digits, got {csv_sha1!r}")
    if hyper["head"] == "logistic":
        hyper = {**hyper, **dict.fromkeys(ADAM_ONLY, 0)}
    return Recipe(
        csv_sha1=csv_sha1,
        random_seed=hyper["random_seed"],
        base=hyper["base"],
        base_sha1=base_sha1,
        extra_base=hyper.get("extra_base", ""),
        extra_base_sha1=extra_base_sha1 if hyper.get("extra_base") else "",
        image_size=hyper["image_size"] or native_size,
        epochs=hyper["epochs"],
        batch_size=hyper["batch_size"],
        learning_rate=hyper["learning_rate"],
        train_percentage=hyper["train_percentage"],
        data_limit=hyper["data_limit"],
        l2=hyper["l2"],
        views=hyper["views"],
        head=hyper["head"],
        calibrate=hyper["calibrate"],
    )
