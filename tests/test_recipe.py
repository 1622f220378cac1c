"""Recipe identity: the same request hashes the same everywhere; any change moves the hash."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from model.config import Settings
from model.errors import InvalidRequest
from model.recipe import CODE_VERSION, Recipe, make_recipe, parse_hyperparameters, recipe_sha1

CSV = "a" * 40
BASE = "b" * 40


def _recipe(**params: object) -> Recipe:
    return make_recipe(parse_hyperparameters(dict(params), Settings()), CSV, BASE, 224)


def test_same_request_same_hash_in_another_process() -> None:
    here = _recipe(epochs=7).sha1
    code = (
        "from model.config import Settings;from model.recipe import *;"
        f"print(make_recipe(parse_hyperparameters({{'epochs': 7}}, Settings()), {CSV!r}, {BASE!r}, 224).sha1)"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("csv_sha1", "c" * 40),
        ("random_seed", 99),
        ("base_sha1", "d" * 40),
        ("base", "mobilenet-v2"),
        ("image_size", 260),
        ("epochs", 61),
        ("batch_size", 16),
        ("learning_rate", 0.02),
        ("train_percentage", 70),
        ("data_limit", 10),
        ("l2", 0.5),
        ("flip", True),
        ("code_version", CODE_VERSION + "x"),
    ],
)
def test_every_field_changes_the_hash(field: str, value: object) -> None:
    base = _recipe()
    changed = dataclasses.replace(base, **{field: value})
    assert recipe_sha1(changed) != recipe_sha1(base)


def test_every_recipe_field_is_covered_above() -> None:
    # A new Recipe field must be added to the parametrised test, or it might not enter the hash.
    names = {f.name for f in dataclasses.fields(Recipe)}
    assert names == {
        "csv_sha1",
        "random_seed",
        "base",
        "base_sha1",
        "image_size",
        "epochs",
        "batch_size",
        "learning_rate",
        "train_percentage",
        "data_limit",
        "l2",
        "flip",
        "code_version",
    }


def test_epochs_change_the_hash_unlike_the_original() -> None:
    assert _recipe(epochs=10).sha1 != _recipe(epochs=11).sha1


def test_defaults_fill_in_and_native_size_applies() -> None:
    r = _recipe()
    assert r.image_size == 224 and r.epochs == Settings().epochs and r.random_seed == 1234


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epoch": 3}, "unknown field(s): epoch"),
        ({"epochs": "3"}, "epochs must be a number"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"epochs": 0}, "epochs must be between 1 and 1000"),
        ({"learning_rate": True}, "learning_rate must be a number"),
        ({"base": ""}, "base must be a base network name"),
        ({"flip": "yes"}, "flip must be true or false"),
    ],
)
def test_bad_hyperparameters_are_named(params: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hyperparameters(params, Settings())
