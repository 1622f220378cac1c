"""Recipe identity: the same request hashes the same everywhere; any change moves the hash."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from model.config import Settings
from model.errors import InvalidRequest
from model.identity.recipe import CODE_VERSION, Recipe, make_recipe, parse_hyperparameters, recipe_sha1

CSV = "a" * 40
BASE = "b" * 40


def _recipe(**params: object) -> Recipe:
    return make_recipe(parse_hyperparameters(dict(params), Settings()), CSV, BASE, 224)


def test_same_request_same_hash_in_another_process() -> None:
    here = _recipe(head="adam", epochs=7).sha1
    code = (
        "from model.config import Settings;from model.identity.recipe import *;"
        f"print(make_recipe(parse_hyperparameters({{'head': 'adam', 'epochs': 7}}, Settings()), {CSV!r}, {BASE!r}, 224).sha1)"
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
        ("extra_base", "efficientnet-lite1"),
        ("extra_base_sha1", "e" * 40),
        ("image_size", 260),
        ("epochs", 61),
        ("batch_size", 16),
        ("learning_rate", 0.02),
        ("train_percentage", 70),
        ("data_limit", 10),
        ("l2", 0.5),
        ("views", ("original", "mirrored")),
        ("head", "adam"),
        ("calibrate", False),
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
        "extra_base",
        "extra_base_sha1",
        "image_size",
        "epochs",
        "batch_size",
        "learning_rate",
        "train_percentage",
        "data_limit",
        "l2",
        "views",
        "head",
        "calibrate",
        "code_version",
    }


def test_epochs_change_the_hash_unlike_the_original() -> None:
    assert _recipe(head="adam", epochs=10).sha1 != _recipe(head="adam", epochs=11).sha1


def test_defaults_fill_in_and_native_size_applies() -> None:
    r = _recipe()
    assert r.image_size == 224 and r.random_seed == 1234 and r.train_percentage == 100
    assert (r.head, r.epochs, r.calibrate) == ("logistic", 0, True)
    adam = _recipe(head="adam")
    assert (adam.epochs, adam.train_percentage, adam.calibrate) == (Settings().epochs, 80, False)


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
        ({"views": "original"}, "views must be a non-empty list of view names"),
        ({"views": []}, "views must be a non-empty list of view names"),
        (
            {"views": ["original", "upside-down"]},
            "unknown view(s) upside-down; choose from: original, mirrored",
        ),
        ({"views": ["mirrored"], "flip": False}, "flip false and views listing mirrored contradict"),
        ({"head": "svm"}, "head must be one of adam, logistic, got 'svm'"),
        ({"calibrate": 1}, "calibrate must be true or false"),
        ({"extra_base": 3}, "extra_base must be a base network name or empty"),
        (
            {"base": "efficientnet-lite0", "extra_base": "efficientnet-lite0"},
            "extra_base must differ from base",
        ),
        ({"head": "adam", "calibrate": True}, "calibrate needs head logistic"),
        ({"head": "adam", "train_percentage": 100}, "train_percentage 100 needs head logistic"),
        ({"train_percentage": 101}, "train_percentage must be between 1 and 100"),
    ],
)
def test_bad_hyperparameters_are_named(params: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hyperparameters(params, Settings())


def test_views_are_canonical_and_flip_adds_or_removes_the_mirror() -> None:
    assert _recipe(views=["center", "original"]).views == ("original", "center")
    assert _recipe(views=["center", "original"]).sha1 == _recipe(views=["original", "center"]).sha1
    assert _recipe(views=["original"], flip=True).views == ("original", "mirrored")
    assert "mirrored" not in _recipe(flip=False).views
    assert _recipe().views == Settings().views


def test_an_option_the_head_does_not_read_is_refused_not_ignored() -> None:
    # A user who asks for 3 epochs of a head that trains to convergence would believe they got them.
    for given, message in (
        ({"epochs": 3}, "epochs applies to head adam only; the logistic head trains to convergence"),
        ({"learning_rate": 0.5, "batch_size": 7}, "batch_size, learning_rate apply to head adam only"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            _recipe(**given)
    assert _recipe(head="adam", epochs=5).sha1 != _recipe(head="adam", epochs=50).sha1
    # The environment's 2019 EPOCHS etc. are not a request: recorded as 0, the name unchanged.
    assert _recipe().epochs == 0
    assert (
        _recipe().sha1
        == make_recipe(
            parse_hyperparameters({}, dataclasses.replace(Settings(), epochs=9, learning_rate=0.5)),
            CSV,
            BASE,
            224,
        ).sha1
    )


def test_the_2019_adam_variables_warn_once_when_the_head_will_not_read_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from model import config

    monkeypatch.setattr(config, "_warned", set())
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.setenv("BATCH_SIZE", "7")
    with caplog.at_level("WARNING", logger="stl"):
        Settings.from_env()
        Settings.from_env()
    assert [r.getMessage() for r in caplog.records] == [
        "EPOCHS, BATCH_SIZE set only the adam head; the default head (HEAD=logistic) trains to "
        "convergence and ignores them"
    ]
    caplog.clear()
    monkeypatch.setattr(config, "_warned", set())
    monkeypatch.setenv("HEAD", "adam")
    with caplog.at_level("WARNING", logger="stl"):
        assert Settings.from_env().epochs == 3
    assert caplog.records == []


def test_flip_false_with_the_mirrored_view_is_a_contradiction() -> None:
    with pytest.raises(InvalidRequest, match="flip false and views listing mirrored contradict"):
        _recipe(flip=False, views=["mirrored", "center"])
    assert _recipe(flip=False, views=["original", "center"]).views == ("original", "center")


def test_manifests_from_before_views_still_load() -> None:
    old = {**_recipe(head="adam", calibrate=False).to_dict(), "flip": True}
    del old["views"], old["head"], old["calibrate"]
    recipe = Recipe.from_dict(old)
    assert (recipe.views, recipe.head, recipe.calibrate) == (("original", "mirrored"), "adam", False)
