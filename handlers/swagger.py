"""Swagger UI at /api/doc, its assets served from the swagger-ui-bundle package.

Nothing is loaded from the internet: the page, scripts and styles all come from
this server, and the online spec validator badge is switched off.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from .openapi import spec, spec_text

blueprint = Blueprint("swagger", __name__)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>static-transfer-learning API</title>
  <link rel="icon" type="image/png" href="{icon}">
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script src="{init}"></script>
</body>
</html>
"""
#: Starts Swagger UI; a file of its own, since the page's policy allows no inline script.
INIT = """window.ui = SwaggerUIBundle({{
  url: {spec_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
"""


@blueprint.get("/api/doc")
@blueprint.get("/api/doc/")
def page() -> Response:
    html = PAGE.format(
        icon=url_for("swagger.asset", filename="favicon-32x32.png"),
        css=url_for("swagger.asset", filename="swagger-ui.css"),
        bundle=url_for("swagger.asset", filename="swagger-ui-bundle.js"),
        init=url_for("swagger.init_script"),
    )
    return Response(html, mimetype="text/html")


@blueprint.get("/api/doc/init.js")
def init_script() -> Response:
    return Response(
        INIT.format(spec_url=json.dumps(url_for("swagger.openapi_json"))), mimetype="text/javascript"
    )


@blueprint.get("/api/doc/assets/<path:filename>")
def asset(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=3600)


@blueprint.get("/api/openapi.json")
def openapi_json() -> Response:
    return Response(json.dumps(spec(), indent=2), mimetype="application/json")


@blueprint.get("/api/openapi.yaml")
def openapi_yaml() -> Response:
    return Response(spec_text(), mimetype="application/yaml")
