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

from flask import Flask, Response, current_app, g, jsonify, redirect, request, send_file, url_for

from model.config import Settings
from model.errors import ChecksumMismatch
from model.jobs import publications
from model.jobs import state as jobs
from model.lifecycle.catalog import STALLED_MESSAGE, model_state, models_with_records
from store.errors import BackendUnavailable, HashMismatch, StoreError
from store.hashing import is_sha1

from . import errors, swagger, ui, web_guard
from .auth import check_token, presents_token, refuse_if_throttled
from .bodies import LimitedReader, SpoolingRequest, json_body
from .errors import CrossSiteRefused, InvalidInput, NotReady, Unauthorized, UnknownHost, WrongToken
from .inference import infer
from .logs import use_json_logs
from .metrics import exposition, instrument, record_request
from .openapi import query_parameters
from .service import Service
from .training import public_status, retry_training, start_resumer, submit_training

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


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    # ASCII digits only: str.isdigit() also accepts "²" (int() fails) and "٣" (read as 3).
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def list_models() -> Response:
    limit = int_arg("limit", 100, 1, MAX_LIST_LIMIT)
    offset = int_arg("offset", 0, 0, 10**9)
    store = service().store
    out = []
    for row, record in models_with_records(store, offset, limit):  # every model, as the page and CLI
        # A model published here from elsewhere has a manifest and no job: its row says it all.
        out.append(public_status({**record, "status": row["status"]}) if record else _present(row))
    return jsonify(models=out)


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None and k in ("model_sha1", "status", "base")}


def get_model(model_sha1: str) -> Response:
    store = service().store
    path_sha1(model_sha1, "model_sha1")
    found = model_state(store, model_sha1)
    body: dict[str, Any] = {
        "model_sha1": model_sha1,
        "status": found.state,
        "recipe": found.recipe,
        "manifest": found.manifest,
    }
    if found.corrupt:
        body["message"] = "the stored manifest does not match its hash; POST /train again to rebuild it"
    if found.stalled:
        body["message"] = STALLED_MESSAGE
    if found.job is not None:
        body["job"] = public_status(found.job)
    body["publications"] = [publications.public(r) for r in publications.all_for(store, model_sha1)]
    return jsonify(body)


def delete_model(model_sha1: str) -> Response:
    """Forget a model: its refs go (status, recipe, manifest name, runs); objects wait for ``stl gc``.

    A failed job's record is cleared this way too (the 2019 meaning), so the next
    POST /train starts afresh. A running job must be cancelled first (409).
    """
    path_sha1(model_sha1, "model_sha1")
    previous = jobs.delete(service().store, model_sha1)
    body = {**public_status(previous), "deleted": True}
    if previous["status"] == "error":
        body["cleared"] = True
    return jsonify(body)


def cancel_model(model_sha1: str) -> Response:
    path_sha1(model_sha1, "model_sha1")
    record = jobs.cancel(service().store, model_sha1)
    response = jsonify({**public_status(record), "cancel_requested": True})
    response.status_code = 202
    return response


def retry_model(model_sha1: str) -> Response:
    path_sha1(model_sha1, "model_sha1")
    return jsonify(retry_training(service(), model_sha1))


def verify_model(model_sha1: str) -> Response:
    """Rebuild the model from its stored inputs in a fresh process and compare every stage's bytes."""
    from model.lifecycle.verify import verify_model as rebuild_and_compare

    path_sha1(model_sha1, "model_sha1")
    return jsonify(rebuild_and_compare(service().store, model_sha1))


def export_model(model_sha1: str) -> Response:
    from model.lifecycle.export import export_bytes

    path_sha1(model_sha1, "model_sha1")
    fmt = request.args.get("format", "tflite")
    data = export_bytes(service().store, model_sha1, fmt)
    response = Response(data, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{model_sha1[:12]}.{fmt}"'
    return response


def post_object() -> Response:
    """Store an uploaded file (multipart ``file``) under its sha1: images and CSVs for a training."""
    svc = service()
    files, form = request.files, request.form
    unknown = sorted((set(files) - {"file"}) | (set(form) - {"sha1"}))
    if unknown:
        raise InvalidInput(f"unknown field: {', '.join(unknown)} (send 'file', and optionally its 'sha1')")
    upload = files.get("file")
    if upload is None:
        raise InvalidInput("send the file as multipart/form-data field 'file'")
    declared = form.get("sha1")
    if declared is not None and not is_sha1(declared):
        raise InvalidInput(f"sha1 must be a sha1 (40 lowercase hex digits), got {declared!r}")
    # The file's own bytes count against the limit (the body's limit leaves room for the framing).
    limited = LimitedReader(upload.stream, svc.settings.max_download_bytes)
    try:
        sha1 = svc.store.put_stream(limited, expect=declared)  # type: ignore[arg-type]
    except HashMismatch as e:
        raise ChecksumMismatch(
            f"the file's sha1 is {e.actual}, not the declared {declared}; nothing was stored"
        ) from None
    response = jsonify(sha1=sha1, filename=upload.filename or "")
    response.status_code = 201
    return response


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


def livez() -> Response:
    """Alive: the process answers and can reach its store (``/healthz`` is the 2019 name)."""
    try:
        service().store.get_ref("healthz")
    except (StoreError, OSError) as e:
        raise BackendUnavailable(f"store unreachable: {e}") from None
    return jsonify(status="ok", pid=os.getpid())


def readyz() -> Response:
    """Ready for traffic: the store answers reads and takes writes (a read-only disk is not ready),
    this worker has loaded the default base network, so that a first /infer is fast, and with
    EXECUTOR=ray it has joined the cluster, so that it can hand jobs over."""
    svc = service()
    if not svc.executor_joined.is_set():
        reason = f" (last attempt: {svc.executor_error})" if svc.executor_error else ""
        raise NotReady(f"joining the Ray cluster (EXECUTOR=ray){reason}")
    if not svc.base_loaded.is_set():
        if svc.base_error:
            raise NotReady(f"base network {svc.settings.base} could not be loaded: {svc.base_error}")
        raise NotReady(f"loading the base network {svc.settings.base}")
    store = svc.store
    try:
        store.get_ref("healthz")
        store.set_ref(f"health/{socket.gethostname()}-{os.getpid()}", str(time.time()).encode())
    except BackendUnavailable:
        raise  # already names the failure (StoreUnwritable: read-only, full)
    except (StoreError, OSError) as e:
        raise BackendUnavailable(f"store not usable: {type(e).__name__}") from None
    svc.check_free_space()
    return jsonify(status="ready", pid=os.getpid())


def _use_gunicorn_logging(log_format: str) -> None:
    # Under gunicorn, send our log lines to its error log, at its level.
    gunicorn_log = logging.getLogger("gunicorn.error")
    # handlers: requests; model.runner: how each job this worker ran ended; stl: notices (a
    # setting nothing reads, a one-off base conversion, a refused publication target).
    ours = [logging.getLogger("handlers"), logging.getLogger("model.run.runner"), logging.getLogger("stl")]
    if gunicorn_log.handlers:
        for logger in ours:
            logger.handlers = gunicorn_log.handlers
            logger.setLevel(gunicorn_log.level)
            logger.propagate = False
    if log_format == "json":
        use_json_logs(gunicorn_log, logging.getLogger("gunicorn.access"), *ours)


#: A staged copy untouched for this long belongs to no live write (each is written in one go).
STALE_STAGING_S = 3600


def _remove_stale_staging(svc: Service) -> None:
    """What a worker killed mid-write left in the store's staging folder (a zip's photos: 40 MB in
    one case), older than an hour; ``stl gc`` removes it too, past its grace."""
    files, size = svc.store.remove_stale_staging(time.time() - STALE_STAGING_S)
    if files:
        logging.getLogger(__name__).warning("removed %d stale staged file(s), %d bytes", files, size)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.request_class = SpoolingRequest
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Werkzeug refuses larger bodies with 413 before reading them; the slack is
    # for multipart framing around an upload of the maximum size.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_download_bytes + 64 * 1024
    svc = Service.from_settings(settings)
    _remove_stale_staging(svc)
    # For stl serve's worker (handlers.http_worker), which reads requests before this app sees them.
    app.config["REQUEST_HEAD_TIMEOUT_S"] = settings.request_head_timeout_s
    app.config["REQUEST_BODY_TIMEOUT_S"] = settings.request_body_timeout_s
    app.config["REQUEST_SPOOL"] = svc.store.spool
    instrument(svc.store)
    app.extensions["stl"] = svc
    _use_gunicorn_logging(settings.log_format)
    svc.preload_base()
    svc.join_executor()
    start_resumer(svc)

    app.add_url_rule("/train", view_func=post_train, methods=["POST"])
    app.add_url_rule("/infer", view_func=post_infer, methods=["POST"])
    app.add_url_rule("/models", view_func=list_models, methods=["GET"])
    app.add_url_rule("/models/<model_sha1>", view_func=get_model, methods=["GET"])
    app.add_url_rule("/models/<model_sha1>", view_func=delete_model, methods=["DELETE"])
    app.add_url_rule("/models/<model_sha1>/cancel", view_func=cancel_model, methods=["POST"])
    app.add_url_rule("/models/<model_sha1>/retry", view_func=retry_model, methods=["POST"])
    app.add_url_rule("/models/<model_sha1>/export", view_func=export_model, methods=["GET"])
    app.add_url_rule("/models/<model_sha1>/verify", view_func=verify_model, methods=["POST"])
    app.add_url_rule("/objects", view_func=post_object, methods=["POST"])
    app.add_url_rule("/objects/<sha1>", view_func=get_object, methods=["GET"])
    app.add_url_rule("/livez", view_func=livez, methods=["GET"])
    app.add_url_rule("/healthz", view_func=livez, methods=["GET"], endpoint="healthz")
    app.add_url_rule("/readyz", view_func=readyz, methods=["GET"])
    app.add_url_rule(
        "/metrics", view_func=lambda: exposition(service().store), methods=["GET"], endpoint="metrics"
    )
    app.register_blueprint(swagger.blueprint)
    app.register_blueprint(ui.blueprint)
    errors.register(app)

    allowed_hosts = settings.allowed_hosts or web_guard.default_allowed_hosts(settings.api_host)
    throttle = web_guard.SignInThrottle(settings.signin_max_failures, settings.signin_window_s)
    app.extensions["stl-throttle"] = throttle

    @app.before_request
    def guard_then_authenticate_then_check_query() -> Response | None:
        g.started = time.perf_counter()
        if not web_guard.host_allowed(request.host, allowed_hosts):
            raise UnknownHost(f"host {request.host!r} is not one this service answers to (ALLOWED_HOSTS)")
        trusted = settings.forwarded_allow_ips
        foreign = web_guard.foreign_origin(request, settings.allowed_origins)
        if foreign is not None:
            raise CrossSiteRefused(
                f"cross-site request refused: origin {foreign} is not this service's (ALLOWED_ORIGINS)"
            )
        address = web_guard.client_address(request, trusted)
        if settings.api_token and presents_token(request):
            refuse_if_throttled(throttle, address)
        try:
            check_token(request, settings.api_token)
        except WrongToken:
            throttle.failed(address)
            raise
        except Unauthorized:
            if ui.is_page(request.path):  # a browser: to the sign-in page, then back
                return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
            raise
        if request.url_rule is not None:
            check_query(request.url_rule.rule, request.method, request.args)
        return None

    @app.after_request
    def tag_worker(response: Response) -> Response:
        # Which worker answered: lets clients and tests see requests spread over workers.
        response.headers["X-Worker-Pid"] = str(os.getpid())
        web_guard.add_security_headers(response, request.path)
        record_request(response, g.get("started", time.perf_counter()))
        return response

    return app
