"""The HTTP API: routes, and the wiring of auth, errors and Swagger UI around them.

Handlers are stateless: each request resolves what it needs through the store,
so any worker answers any request. The per-process ``Service`` holds only a
store handle and caches (see ``handlers.service``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from typing import Any

from flask import Flask, Response, current_app, jsonify, request, send_file

from model import jobs, publications
from model.config import Settings
from model.errors import ModelNotFound
from model.manifest import load_manifest
from store.errors import BackendUnavailable, HashMismatch, StoreError
from store.hashing import is_sha1

from . import errors, swagger
from .auth import check_token
from .bodies import json_body
from .errors import Conflict, InvalidInput
from .inference import infer
from .openapi import query_parameters
from .service import Service
from .training import public_status, submit_training

MAX_LIST_LIMIT = 1000


def service() -> Service:
    return current_app.extensions["stl"]


def path_sha1(value: str, name: str) -> str:
    if not is_sha1(value):
        raise InvalidInput(f"{name} must be a sha1 (40 lowercase hex digits), got {value!r}")
    return value


def check_query(rule: str, method: str, args: Any) -> None:
    """Refuse query parameters the OpenAPI document does not declare, as for body fields."""
    declared = query_parameters(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule), method)
    unknown = sorted(set(args) - declared) if declared is not None else []
    if unknown:
        raise InvalidInput("unknown query parameter: " + ", ".join(unknown))


def post_train() -> Response:
    return jsonify(submit_training(service(), json_body(request, "TrainRequest")))


def post_infer() -> Response:
    return jsonify(infer(service(), request))


def list_models() -> Response:
    raw = request.args.get("limit", "100")
    # ASCII digits only: str.isdigit() also accepts "²" (int() fails) and "٣" (read as 3).
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {raw!r}")
    records = jobs.list_models(service().store)[: int(raw)]
    return jsonify(models=[public_status(r) for r in records])


def get_model(model_sha1: str) -> Response:
    store = service().store
    path_sha1(model_sha1, "model_sha1")
    status = jobs.read_status(store, model_sha1)
    found = jobs.read_recipe(store, model_sha1)
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
    body: dict[str, Any] = {
        "model_sha1": model_sha1,
        # The manifest is written just before the ready status: it is the truth.
        "status": "ready" if manifest is not None else (status or {}).get("status", "new"),
        "recipe": recipe,
        "manifest": manifest,
    }
    if corrupt:
        body["status"] = "error"
        body["message"] = "the stored manifest does not match its hash; POST /train again to rebuild it"
    if status is not None:
        body["job"] = public_status(status)
    body["publications"] = [publications.public(r) for r in publications.all_for(store, model_sha1)]
    return jsonify(body)


def delete_model(model_sha1: str) -> Response:
    path_sha1(model_sha1, "model_sha1")
    current = jobs.clear_failed(service().store, model_sha1)
    if current is None:
        raise ModelNotFound(model_sha1)
    if current["status"] != "cleared":
        raise Conflict(f"model {model_sha1} is {current['status']}; only a failed job can be cleared")
    return jsonify({**public_status({**current, "status": "error"}), "cleared": True})


def get_object(sha1: str) -> Response:
    path_sha1(sha1, "sha1")
    stream = service().store.open(sha1)  # verified against its sha1 before a byte is sent
    return send_file(
        stream,
        mimetype="application/octet-stream",
        download_name=sha1,
        etag=sha1,
        conditional=True,
        max_age=365 * 24 * 3600,  # content-addressed: never changes
    )


def healthz() -> Response:
    try:
        service().store.get_ref("healthz")
    except (StoreError, OSError) as e:
        raise BackendUnavailable(f"store unreachable: {e}") from None
    return jsonify(status="ok", pid=os.getpid())


def readyz() -> Response:
    """Ready to take jobs: the store answers reads and takes writes (a read-only disk is not ready)."""
    store = service().store
    try:
        store.get_ref("healthz")
        store.set_ref(f"health/{socket.gethostname()}-{os.getpid()}", str(time.time()).encode())
    except BackendUnavailable:
        raise  # already names the failure (StoreUnwritable: read-only, full)
    except (StoreError, OSError) as e:
        raise BackendUnavailable(f"store not usable: {type(e).__name__}") from None
    return jsonify(status="ready", pid=os.getpid())


def _use_gunicorn_logging() -> None:
    # Under gunicorn, send our log lines to its error log, at its level.
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        ours = logging.getLogger("handlers")
        ours.handlers = gunicorn_log.handlers
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Werkzeug refuses larger bodies with 413 before reading them; the slack is
    # for multipart framing around an upload of the maximum size.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_download_bytes + 64 * 1024
    app.extensions["stl"] = Service.from_settings(settings)
    _use_gunicorn_logging()

    app.add_url_rule("/train", view_func=post_train, methods=["POST"])
    app.add_url_rule("/infer", view_func=post_infer, methods=["POST"])
    app.add_url_rule("/models", view_func=list_models, methods=["GET"])
    app.add_url_rule("/models/<model_sha1>", view_func=get_model, methods=["GET"])
    app.add_url_rule("/models/<model_sha1>", view_func=delete_model, methods=["DELETE"])
    app.add_url_rule("/objects/<sha1>", view_func=get_object, methods=["GET"])
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    app.add_url_rule("/readyz", view_func=readyz, methods=["GET"])
    app.register_blueprint(swagger.blueprint)
    errors.register(app)

    @app.before_request
    def authenticate_then_check_query() -> None:
        check_token(request, settings.api_token)
        if request.url_rule is not None:
            check_query(request.url_rule.rule, request.method, request.args)

    @app.after_request
    def tag_worker(response: Response) -> Response:
        # Which worker answered: lets clients and tests see requests spread over workers.
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
