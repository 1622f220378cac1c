"""POST /infer: collect the images (URL, stored sha1 or upload), then ask the Predictor."""

from __future__ import annotations

import functools
from typing import Any

from flask import Request
from werkzeug.datastructures import FileStorage

from model.errors import ImageError, InvalidRequest
from model.identity.manifest import holds_model
from model.lifecycle.publish import check_model_uri, ensure_model
from store.errors import ObjectNotFound
from store.hashing import is_sha1

from .bodies import content_type, json_body
from .errors import InvalidInput, UnsupportedContentType, UploadTooLarge
from .service import Service

Probabilities = dict[str, float]

#: The same bound as ``images.maxItems`` in the OpenAPI document.
MAX_IMAGES = 64


def check_model(service: Service, model_sha1: str, uri: str | None = None) -> None:
    """Refuse an unknown model before fetching any image for it; fetch it by hash from ``uri`` if given."""
    if holds_model(service.store, model_sha1):
        return
    if uri:
        check_model_uri(uri, service.model_uri_allow)
    ensure_model(
        service.store, model_sha1, uri, service.settings.data_dir
    )  # verified by hash; a mismatch is an error


def image_bytes(service: Service, ref: dict[str, str], name: str) -> bytes:
    if "url" in ref and "uri" in ref:
        raise InvalidInput(f"{name} has both url and uri (uri is the 2019 spelling of url); give one")
    url, sha1 = ref.get("url") or ref.get("uri"), ref.get("sha1")
    if url:
        return service.fetch(url, sha1)
    if sha1:
        if not service.store.has(sha1):
            raise ObjectNotFound(sha1, "the store")
        return service.store.get(sha1)
    raise InvalidRequest(f"{name} needs a url or a sha1")


def infer_json(service: Service, body: dict[str, Any]) -> Probabilities | list[Probabilities]:
    model_sha1 = body["model"]["sha1"]
    check_model(service, model_sha1, body["model"].get("uri") or None)
    if "image" in body:
        data = image_bytes(service, body["image"], "image")
        return service.predictor().predict(model_sha1, [data], ["image"])[0]
    names = [f"images[{i}]" for i in range(len(body["images"]))]
    # Read one at a time as the predictor decodes them: a request holds one image, not 64.
    readers = [
        functools.partial(image_bytes, service, ref, n) for ref, n in zip(body["images"], names, strict=True)
    ]
    return service.predictor().predict(model_sha1, readers, names)


def _read_upload(upload: FileStorage, name: str, limit: int) -> bytes:
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"{name} is larger than the limit of {limit} bytes (MAX_DOWNLOAD_BYTES)")
    if not data:
        raise ImageError(f"{name} is empty")
    return data


def _files(request: Request, name: str) -> list[FileStorage]:
    # A file input left empty arrives as a part with no file name and no bytes.
    return [f for f in request.files.getlist(name) if f.filename or _nonempty(f)]


def _nonempty(upload: FileStorage) -> bool:
    first = upload.stream.read(1)
    upload.stream.seek(0)
    return bool(first)


def infer_upload(service: Service, request: Request) -> Probabilities | list[Probabilities]:
    model_sha1 = request.form.get("model_sha1", "")
    if not model_sha1:
        raise InvalidInput("missing field: model_sha1")
    if not is_sha1(model_sha1):
        raise InvalidInput(f"model_sha1 must be a sha1 (40 lowercase hex digits), got {model_sha1!r}")
    # Forms (Swagger UI's among them) send an input left empty as an empty field: that is "not given".
    given_text = {k for k, v in request.form.items(multi=True) if v != ""}
    unknown = sorted(given_text - {"model_sha1"}) + sorted(set(request.files) - {"image", "images"})
    if unknown:
        raise InvalidInput("unknown field: " + ", ".join(unknown))
    single, many = (_files(request, "image"), _files(request, "images"))
    if len(single) > 1:
        raise InvalidInput("image takes one file; send several as images")
    if bool(single) == bool(many):
        raise InvalidInput("request body needs exactly one of: image, images")
    if len(many) > MAX_IMAGES:
        raise InvalidInput(f"images has {len(many)} items, at most {MAX_IMAGES} are allowed")
    check_model(service, model_sha1)
    limit = service.settings.max_download_bytes
    uploads = single or many
    names = [u.filename or f"upload {i + 1}" for i, u in enumerate(uploads)]
    readers = [functools.partial(_read_upload, u, n, limit) for u, n in zip(uploads, names, strict=True)]
    result = service.predictor().predict(model_sha1, readers, names)
    return result[0] if single else result


def infer(service: Service, request: Request) -> Probabilities | list[Probabilities]:
    if content_type(request) == "multipart/form-data":
        return infer_upload(service, request)
    if content_type(request) != "application/json":
        raise UnsupportedContentType(
            f"expected Content-Type application/json or multipart/form-data, got {request.mimetype or 'none'}"
        )
    return infer_json(service, json_body(request, "InferRequest"))
