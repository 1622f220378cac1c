"""The web pages: models, one model, label an image, train. Plain server-rendered HTML.

Pages read the store through the same functions as the JSON API; the little
JavaScript they carry (``static/ui/ui.js``) only calls that API: uploads, the
training request, polling progress, labelling, verify. Every asset is served from
this package, nothing from a CDN.

With API_TOKEN set, a browser signs in once at ``/ui/login``: the token is kept in
an HttpOnly, SameSite=Strict cookie that the API accepts like the bearer header,
and that other sites' pages cannot make the browser send.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import math
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from model.bases.registry import BASES
from model.config import BALANCED, NO_LIMIT
from model.errors import InvalidRequest, ModelNotFound
from model.identity.manifest import load_manifest, manifest_rows, missing_objects
from model.identity.recipe import fields_in_use, make_recipe, parse_hyperparameters
from model.identity.views import VIEWS
from model.jobs import fence as gc_fence
from model.jobs import publications
from model.jobs.state import read_recipe
from model.lifecycle.catalog import STALLED_MESSAGE, model_rows, model_state, resolve_model
from store import StoreError
from store.hashing import is_sha1

from . import web_guard
from .auth import TOKEN_COOKIE, refuse_if_throttled
from .errors import TooManyAttempts
from .training import public_status

blueprint = Blueprint(
    "ui", __name__, template_folder="templates", static_folder="static/ui", static_url_path="/ui/static"
)

PAGE_SIZE = 25
#: Images listed on a model page before "and N more" (the manifest has them all).
MAX_LISTED_IMAGES = 200


def _service() -> Any:
    return current_app.extensions["stl"]


def is_page(path: str) -> bool:
    """A path that answers HTML to a browser (a failed sign-in redirects rather than answering 401)."""
    return path == "/" or (path.startswith("/ui/") and not path.startswith(("/ui/static/", "/ui/login")))


@blueprint.app_template_filter("when")
def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@blueprint.app_template_filter("sig")
def sig(value: float | None) -> str:
    """A measured number as people read it: three significant digits (0.366, not 0.36598122402126443);
    nothing for what a manifest does not hold."""
    return f"{value:.3g}" if isinstance(value, (int, float)) else ""


@blueprint.app_template_filter("pct")
def pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def recipe_rows(recipe: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The model page's recipe table: the fields the recipe's head reads, each with what its
    value means where a bare number would mislead."""
    meanings = {
        ("data_limit", NO_LIMIT): "all photos",
        ("data_limit", BALANCED): "balanced: every label cut to the smallest label's count",
        ("l2", -1.0): "chosen by 5-fold cross-validation",
        ("train_percentage", 100): "validation from the head's cross-validation folds",
    }
    rows = []
    for key, value in sorted(fields_in_use(recipe).items()):
        meaning = meanings.get((key, value), "") if isinstance(value, (int, float)) else ""
        if key == "data_limit" and isinstance(value, int) and value > 0:
            meaning = f"at most {value} photos per label"
        rows.append((key, value, meaning))
    return rows


def confusion_svg(labels: list[str], matrix: list[list[int]]) -> Markup:
    """The confusion matrix as an SVG heat map: rows true labels, columns predictions, counts inside."""
    n, cell = len(labels), 56
    pad, top = 110, 44  # the grid's left and top edges: room for the row and column labels
    width, height = pad + n * cell + 10, top + n * cell + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="confusion" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="confusion matrix">',
        f'<text x="{pad + n * cell / 2}" y="14" text-anchor="middle" class="axis">predicted</text>',
        f'<text x="12" y="{top + n * cell / 2}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 12 {top + n * cell / 2})">true</text>',
    ]
    for i, label in enumerate(labels):
        x = pad + i * cell + cell / 2
        parts.append(
            f'<text x="{x}" y="{top - 8}" text-anchor="middle" class="col">{escape(label)}</text>'
            f'<text x="{pad - 8}" y="{top + i * cell + cell / 2 + 5}" text-anchor="end" class="row">'
            f"{escape(label)}</text>"
        )
    for r, row in enumerate(matrix):
        total = sum(row) or 1
        for c, count in enumerate(row):
            share = count / total
            # Dark blue for the whole row's mass, white for none: the diagonal should be dark.
            level = round(255 - 200 * share)
            fill = f"rgb({level},{level},255)" if r == c else f"rgb(255,{level},{level})"
            ink = "#fff" if share > 0.6 else "#000"
            x, y = pad + c * cell, top + r * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#999" '
                f'data-row="{r}" data-col="{c}" data-count="{count}"/>'
                f'<text x="{x + cell / 2}" y="{y + cell / 2 + 5}" text-anchor="middle" fill="{ink}">{count}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


@blueprint.get("/")
@blueprint.get("/ui/models")
def models_page() -> str:
    page = max(1, request.args.get("page", 1, type=int) or 1)
    rows = model_rows(_service().store)
    # Failed and cancelled jobs made no model: hidden unless asked for (?failed=1).
    show_failed = request.args.get("failed") == "1"
    failed = sum(r["status"] in FAILED for r in rows)
    if not show_failed:
        rows = [r for r in rows if r["status"] not in FAILED]
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(page, pages)
    shown = [{**r, **told_apart(r["model_sha1"])} for r in rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]]
    return render_template(
        "models.html",
        rows=shown,
        page=page,
        pages=pages,
        total=len(rows),
        failed=failed,
        show_failed=show_failed,
        query="&failed=1" if show_failed else "",
    )


def told_apart(model_sha1: str) -> dict[str, Any]:
    """What tells one model from another in a list: its data (the CSV's hash and rows), its seed,
    and each recipe field that is not what this service's defaults would make of the same data
    and base. Read for the shown rows only."""
    store, settings = _service().store, _service().settings
    found = read_recipe(store, model_sha1)
    if found is None:
        return {}
    recipe = found[0]
    spec = BASES.get(recipe.base)
    usual = make_recipe(
        {**parse_hyperparameters({}, settings), "base": recipe.base, "extra_base": ""},
        recipe.csv_sha1,
        recipe.base_sha1,
        spec.native_size if spec else 0,
    )
    mine, theirs = fields_in_use(recipe.to_dict()), fields_in_use(usual.to_dict())
    hashes = ("csv_sha1", "base_sha1", "extra_base_sha1", "random_seed", "base")
    differs = [
        f"{name} {value if isinstance(value, str) else json.dumps(value)}"
        for name, value in sorted(mine.items())
        if name not in hashes and theirs.get(name) != value
    ]
    rows = None
    with contextlib.suppress(ModelNotFound, StoreError):
        rows = load_manifest(store, model_sha1)["inputs"]["csv"]["rows"]
    return {"csv_sha1": recipe.csv_sha1, "csv_rows": rows, "seed": recipe.random_seed, "differs": differs}


#: Job states that end without a model.
FAILED = ("error", "cancelled")


@blueprint.get("/ui/models/<model_sha1>")
def model_page(model_sha1: str) -> str | tuple[str, int] | Response:
    store = _service().store
    try:
        if not is_sha1(model_sha1):
            # A prefix (7+ hex digits, as the pages show them) goes to the model's own address.
            full = resolve_model(store, model_sha1)
            return redirect(url_for("ui.model_page", model_sha1=full))
        found = model_state(store, model_sha1)
    except InvalidRequest as e:  # not a name, or the start of several
        return render_template("missing.html", sha1=model_sha1, reason=str(e)), 404
    except ModelNotFound:
        return render_template("missing.html", sha1=model_sha1), 404
    manifest = found.manifest or {}
    metrics = manifest.get("metrics", {})
    labels = manifest.get("labels", [])
    # The first rows from the row table (read only here, never on the API's hot path).
    images = list(itertools.islice(manifest_rows(store, manifest), MAX_LISTED_IMAGES)) if manifest else []
    # Only after a gc (or for a model from before gc's fence): a ready model checked at the
    # current gc epoch cannot have lost anything since.
    missing = (
        missing_objects(store, manifest)
        if manifest and (found.status or {}).get("gc_epoch") != gc_fence.epoch(store)
        else []
    )
    inputs = manifest.get("inputs", {})
    image_count = inputs["rows"]["rows"] if "rows" in inputs else len(inputs.get("images", []))
    return render_template(
        "model.html",
        sha1=model_sha1,
        state=found.state,
        job=public_status(found.job) if found.job else None,
        recipe=recipe_rows(found.recipe or {}),
        manifest=found.manifest,
        metrics=metrics,
        labels=labels,
        training=manifest.get("training", {}),
        matrix=confusion_svg(labels, metrics["confusion_matrix"])
        if metrics.get("confusion_matrix")
        else None,
        images=images,
        image_count=image_count,
        publications=[publications.public(r) for r in publications.all_for(store, model_sha1)],
        corrupt=found.corrupt,
        stalled_message=STALLED_MESSAGE,
        missing=missing[:MAX_LISTED_IMAGES],
        missing_count=len(missing),
    )


@blueprint.get("/ui/label")
def label_page() -> str:
    ready = [
        {**r, **told_apart(r["model_sha1"])} for r in model_rows(_service().store) if r["status"] == "ready"
    ]
    return render_template("label.html", models=ready, chosen=request.args.get("model", ""))


@blueprint.get("/ui/train")
def train_page() -> str:
    settings = _service().settings
    return render_template(
        "train.html",
        bases=sorted(BASES),
        default_base=settings.base,
        views=list(VIEWS),
        default_views=list(settings.views),
        settings=settings,
    )


@blueprint.route("/ui/login", methods=["GET", "POST"])
def login() -> Response | str:
    settings = _service().settings
    token, trusted = settings.api_token, settings.forwarded_allow_ips
    error = ""
    if request.method == "POST":
        throttle = current_app.extensions["stl-throttle"]
        address = web_guard.client_address(request, trusted)
        try:
            refuse_if_throttled(throttle, address)
        except TooManyAttempts as e:
            page = render_template("login.html", error=str(e), needed=bool(token))
            return Response(page, 429, {"Retry-After": str(e.retry_after)}, mimetype="text/html")
        given = request.form.get("token", "")
        if token and hmac.compare_digest(given.encode(), token.encode()):
            throttle.succeeded(address)
            target = web_guard.safe_redirect_target(request.args.get("next"), "/")
            response = redirect(target)
            secure = web_guard.via_https(request, trusted)  # behind a trusted TLS proxy too
            response.set_cookie(
                TOKEN_COOKIE, given, httponly=True, samesite="Strict", secure=secure, path="/"
            )
            return response
        throttle.failed(address)
        error = "That is not the server's API token."
    return render_template("login.html", error=error, needed=bool(token))


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


blueprint.add_app_template_filter(as_json, "as_json")
