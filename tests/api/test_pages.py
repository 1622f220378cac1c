"""The pages' server side, in-process (Flask's test client): paging, sign-in, escaping.

The browser test (test_web_ui.py) drives the same pages end to end in Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from model.jobs import state as jobs


def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str = "") -> tuple[FlaskClient, object]:
    from handlers.app import create_app

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRELOAD_BASE", "0")
    monkeypatch.setenv("API_TOKEN", token)
    app = create_app()
    return app.test_client(), app.extensions["stl"].store


def test_the_models_table_pages_by_25_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, store = client(tmp_path, monkeypatch)
    empty = web.get("/").get_data(as_text=True)
    assert "No models yet" in empty and 'href="/ui/train"' in empty
    names = [f"{i:040x}" for i in range(30)]
    for i, sha1 in enumerate(names):
        record = jobs.write_status(store, sha1, "ready", labels=["a", "b"], validation_accuracy=i / 100)
        record["updated_at"] = 1_800_000_000 + i  # a fixed order: the last written is the newest
        store.set_ref(jobs.status_ref(sha1), json.dumps(record).encode())
    first = web.get("/").get_data(as_text=True)
    shown = re.findall(r'<tr data-sha1="([0-9a-f]{40})">', first)
    assert shown == names[::-1][:25]
    assert (
        "page 1 of 2 (30 models)" in first
        and 'id="next" href="?page=2"' in first
        and 'id="prev"' not in first
    )
    second = web.get("/ui/models?page=2").get_data(as_text=True)
    assert re.findall(r'<tr data-sha1="([0-9a-f]{40})">', second) == names[::-1][25:]
    assert 'id="prev" href="?page=1"' in second and 'id="next"' not in second
    assert "29.0%" in first and "a, b" in first
    # Out of range pages land on the last; nonsense is page 1.
    assert "page 2 of 2" in web.get("/ui/models?page=99").get_data(as_text=True)
    assert "page 1 of 2" in web.get("/ui/models?page=x").get_data(as_text=True)


def test_failed_jobs_are_hidden_until_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A training that failed made no model: the list leaves it out, and says how many it left."""
    web, store = client(tmp_path, monkeypatch)
    ready, failed, cancelled = "a" * 40, "b" * 40, "c" * 40
    jobs.write_status(store, ready, "ready", labels=["x", "y"])
    jobs.write_status(store, failed, "error", message="CSV line 3: HTTP 404")
    jobs.write_status(store, cancelled, "cancelled")
    page = web.get("/").get_data(as_text=True)
    assert re.findall(r'<tr data-sha1="([0-9a-f]{40})">', page) == [ready]
    assert "2 failed or cancelled training(s) hidden: they made no model." in page
    assert 'id="show-failed" href="?failed=1"' in page and "page 1 of 1 (1 models)" in page
    everything = web.get("/?failed=1").get_data(as_text=True)
    assert set(re.findall(r'<tr data-sha1="([0-9a-f]{40})">', everything)) == {ready, failed, cancelled}
    assert 'id="hide-failed"' in everything
    jobs.write_status(store, ready, "error", message="gone")  # nothing left but failures
    none = web.get("/").get_data(as_text=True)
    assert "No models yet" in none and "3 failed or cancelled training(s) hidden" in none


def test_labels_and_messages_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, store = client(tmp_path, monkeypatch)
    sha1 = "e" * 40
    jobs.write_status(store, sha1, "error", message="<script>alert(1)</script>", labels=["<b>x</b>"])
    page = web.get("/?failed=1").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    model = web.get(f"/ui/models/{sha1}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in model and "<script>alert" not in model


def test_with_a_token_a_browser_signs_in_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, _store = client(tmp_path, monkeypatch, token="s3cret")
    r = web.get("/ui/label")
    assert r.status_code == 302 and r.headers["Location"] == "/ui/login?next=/ui/label"
    assert web.get("/ui/static/ui.css").status_code == 200  # assets are public
    assert web.get("/models").status_code == 401  # the API still wants the token
    wrong = web.post("/ui/login", data={"token": "nope"})
    assert wrong.status_code == 200 and "not the server&#39;s API token" in wrong.get_data(as_text=True)
    right = web.post("/ui/login?next=/ui/label", data={"token": "s3cret"})
    assert right.status_code == 302 and right.headers["Location"] == "/ui/label"
    cookie = right.headers["Set-Cookie"]
    assert "stl_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert web.get("/ui/label").status_code == 200
    assert web.get("/models").status_code == 200  # the pages' own API calls carry the cookie


def test_an_unknown_model_page_is_an_html_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, _store = client(tmp_path, monkeypatch)
    r = web.get(f"/ui/models/{'a' * 40}")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert f'This store knows no model <code class="hash">{"a" * 40}</code>' in r.get_data(as_text=True)
    assert web.get("/ui/models/not-a-hash").status_code == 404  # nothing is looked up for it


def test_a_model_page_is_found_by_a_prefix_of_its_sha1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 41, item 7: the pages show 12-digit prefixes; a URL with one (7 digits or more) goes
    to the model's own page, an ambiguous one says which models it starts."""
    web, store = client(tmp_path, monkeypatch)
    one, two = "ab12cd3" + "4" * 33, "ab12cd3" + "5" * 33
    for sha1 in (one, two):
        jobs.write_status(store, sha1, "error", message="gone")
    r = web.get(f"/ui/models/{one[:8]}")
    assert r.status_code == 302 and r.headers["Location"] == f"/ui/models/{one}"
    ambiguous = web.get("/ui/models/ab12cd3")
    assert ambiguous.status_code == 404
    assert f"ab12cd3 starts 2 models&#39; sha1s: {one}, {two}." in ambiguous.get_data(as_text=True)
    assert web.get("/ui/models/ab12cd").status_code == 404  # 6 digits: not a name
    assert web.get("/ui/models/ab12cd9").status_code == 404


def test_a_model_page_names_the_objects_its_store_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stl_testing import small_dataset

    from model import api
    from model.identity.manifest import manifest_rows
    from model.lifecycle import gc

    web, store = client(tmp_path, monkeypatch)
    csv = small_dataset(tmp_path / "set")
    model = api.train(str(csv), store=store, epochs=5, l2=0.001, image_size=96, head="adam")
    page = web.get(f"/ui/models/{model.sha1}").get_data(as_text=True)
    assert 'id="missing"' not in page
    row = next(manifest_rows(store, model.manifest))
    store.delete_object(row["features_sha1"][0])  # as a gc before the fence could have
    gc.collect(store, grace_s=86400.0, delete=True)
    page = web.get(f"/ui/models/{model.sha1}").get_data(as_text=True)
    assert "1 object(s) that the manifest names are not in the store" in page
    assert (
        f'<li>features of CSV line {row["line"]} <code class="hash">{row["features_sha1"][0]}</code></li>'
        in page
    )


def test_the_confusion_picture_puts_each_label_beside_its_row_and_above_its_column() -> None:
    """Each row label's baseline lies within its row of cells, each column label above the grid
    and within its column: a reader must not take one label's errors for another's."""
    import xml.etree.ElementTree as ET

    from handlers.ui import confusion_svg

    labels = ["checks", "dots", "stripes"]
    svg = ET.fromstring(str(confusion_svg(labels, [[3, 1, 0], [0, 4, 0], [1, 0, 2]])))
    ns = "{http://www.w3.org/2000/svg}"
    cells = {(int(r.get("data-row")), int(r.get("data-col"))): r for r in svg.iter(ns + "rect")}
    assert len(cells) == 9 and cells[(0, 1)].get("data-count") == "1"
    grid_top = min(float(r.get("y")) for r in cells.values())
    texts = list(svg.iter(ns + "text"))
    rows = [t for t in texts if t.get("class") == "row"]
    cols = [t for t in texts if t.get("class") == "col"]
    assert [t.text for t in rows] == labels and [t.text for t in cols] == labels
    for i, text in enumerate(rows):
        cell = cells[(i, 0)]
        top, height = float(cell.get("y")), float(cell.get("height"))
        assert top < float(text.get("y")) < top + height, (text.text, text.get("y"), top)
        assert float(text.get("x")) <= float(cell.get("x"))  # left of the grid
    for j, text in enumerate(cols):
        cell = cells[(0, j)]
        left, width = float(cell.get("x")), float(cell.get("width"))
        assert float(text.get("y")) < grid_top, (text.text, text.get("y"), grid_top)
        assert left < float(text.get("x")) < left + width


def test_the_recipe_table_shows_what_the_head_reads_and_what_the_values_mean() -> None:
    from handlers.ui import recipe_rows

    logistic = {"head": "logistic", "epochs": 0, "batch_size": 0, "learning_rate": 0.0, "data_limit": 0}
    logistic |= {"l2": -1.0, "extra_base": "", "extra_base_sha1": "", "random_seed": 1}
    rows = {key: (value, meaning) for key, value, meaning in recipe_rows(logistic)}
    assert set(rows) == {"head", "data_limit", "l2", "random_seed"}
    assert rows["data_limit"] == (0, "all photos")
    assert rows["l2"][1] == "chosen by 5-fold cross-validation"
    adam = {**logistic, "head": "adam", "epochs": 3, "batch_size": 7, "learning_rate": 0.5, "data_limit": -1}
    rows = {key: (value, meaning) for key, value, meaning in recipe_rows(adam)}
    assert rows["epochs"] == (3, "") and rows["batch_size"] == (7, "")
    assert rows["data_limit"] == (-1, "balanced: every label cut to the smallest label's count")
    assert recipe_rows({"data_limit": 40})[0] == ("data_limit", 40, "at most 40 photos per label")


def recorded(web: FlaskClient, params: dict, csv_sha1: str, status: str, **fields: object) -> Any:
    """A job as the store records it, with no training behind it: the recipe ``params`` make of
    ``csv_sha1`` (Lite2's native size, a made-up base sha1), and a status record."""
    from model.identity.recipe import make_recipe, parse_hyperparameters

    service = web.application.extensions["stl"]
    recipe = make_recipe(parse_hyperparameters(params, service.settings), csv_sha1, "b" * 40, 260)
    jobs.record_recipe(service.store, recipe, None)
    jobs.write_status(service.store, recipe.sha1, status, **fields)
    return recipe


def test_a_failed_model_page_offers_retry_and_delete_and_retry_starts_the_recipe_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 41, item 9: a failed model's page had no way on but a new request by hand."""
    web, store = client(tmp_path, monkeypatch)
    recipe = recorded(web, {}, "c" * 40, "error", message="CSV line 2: empty label")
    page = web.get(f"/ui/models/{recipe.sha1}").get_data(as_text=True)
    assert 'id="retry"' in page and 'id="delete"' in page and "CSV line 2: empty label" in page
    monkeypatch.setattr("handlers.training._start", lambda *args: None)  # started, not run here
    retried = web.post(f"/models/{recipe.sha1}/retry")
    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert retried.get_json()["model_sha1"] == recipe.sha1 and retried.get_json()["status"] == "new"
    assert jobs.read_status(store, recipe.sha1)["status"] == "new"  # type: ignore[index]
    again = web.post(f"/models/{recipe.sha1}/retry")
    assert again.status_code == 409
    assert "only a failed or cancelled training is retried" in again.get_json()["error"]
    assert web.post(f"/models/{'d' * 40}/retry").status_code == 404


def test_measured_numbers_are_rounded_for_people() -> None:
    from handlers.ui import sig

    assert (sig(0.36598122402126443), sig(0.0123456), sig(1.0), sig(None)) == ("0.366", "0.0123", "1", "")


def test_models_are_told_apart_by_data_seed_and_what_differs_in_their_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 41, item 9: the list and the Label page's menu showed hashes and labels only."""
    web, _store = client(tmp_path, monkeypatch)
    usual = recorded(web, {}, "c" * 40, "ready", labels=["a", "b"])
    other = recorded(
        web, {"random_seed": 7, "views": ["original"], "l2": 0.01}, "d" * 40, "ready", labels=["a", "b"]
    )
    page = web.get("/").get_data(as_text=True)
    row = page[page.index(f'data-sha1="{other.sha1}"') :]
    assert (
        f">{'d' * 12}</code>" in row
        and "efficientnet-lite2, seed 7, l2 0.01, views [&#34;original&#34;]" in row
    )
    row = page[page.index(f'data-sha1="{usual.sha1}"') :]
    assert f"efficientnet-lite2, seed {usual.random_seed}</td>" in row
    menu = web.get("/ui/label").get_data(as_text=True)
    assert (
        f"{other.sha1[:12]} · a, b · data {'d' * 8} · seed 7 · l2 0.01 · views [&#34;original&#34;] · "
        in menu
    )
