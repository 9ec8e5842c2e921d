"""The flask-smorest ``Api``: OpenAPI 3 from the marshmallow schemas, errors documented as
problem+json, Swagger UI served from local files (no CDN)."""

from __future__ import annotations

import base64
import hashlib
import http
import re
from pathlib import Path

import flask_swagger_ui
from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, request, send_from_directory
from flask_smorest import Api
from flask_smorest.utils import prepare_response

from . import schemas
from .auth import SECURITY_SCHEME
from .errors import PROBLEM_CONTENT_TYPE
from .web import HTML_SECURITY_HEADERS

API_PREFIX = "/api/v1"
SWAGGER_ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


_schema_names: dict[str, type] = {}


def schema_name_resolver(schema: type | object) -> str:
    """Name schemas after their class; modifiers (partial, only, exclude) get their own name,
    and two domains' schemas with the same class name are told apart by the domain."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    owner = _schema_names.setdefault(name, cls)
    if owner is not cls:
        domain = cls.__module__.split(".")[1] if cls.__module__.count(".") >= 2 else "common"
        name = domain.title() + name
        _schema_names.setdefault(name, cls)
    if not isinstance(schema, type):
        if schema.partial:  # type: ignore[attr-defined]
            name += "Patch"
        for modifier in ("only", "exclude"):
            fields = getattr(schema, modifier)
            if fields:
                name += modifier.title() + "".join(
                    sorted(str(f).title().replace("_", "") for f in fields)
                )
    return name


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


class RateLimitPlugin(BasePlugin):
    """Every operation may answer 429: the rate limits apply to the whole API (ratelimit.py)."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            if isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("429", "TOO_MANY_REQUESTS")


class MarketplaceApi(Api):
    ERROR_SCHEMA = schemas.ProblemSchema

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            if status == http.HTTPStatus.TOO_MANY_REQUESTS:
                response["description"] = "Over a rate limit: try again after Retry-After seconds."
                response["headers"] = RETRY_AFTER_HEADER
            prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "Error (problem details, RFC 9457)", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_CONTENT_TYPE)
        self.spec.components.response("DEFAULT_ERROR", default, lazy=True)

    def _register_error_handlers(self) -> None:
        """Errors are handled by ``errors.register_error_handlers`` (problem+json)."""


def init_api(app: Flask, blueprints: list) -> MarketplaceApi:
    app.config.update(
        API_TITLE="NHS Open Procurement Marketplace",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="api/v1/openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None, "deepLinking": True},
        API_SPEC_OPTIONS={
            "info": {
                "description": (
                    "One catalogue of NHS commodity items and digital tools, searched and compared in "
                    "the open, with every price shown against what other trusts paid, and personal "
                    "health budgets spent within their care plans. Money is integer pence; errors are "
                    "application/problem+json (RFC 9457)."
                ),
                "license": {"name": "MIT"},
            },
            "servers": [{"url": "/"}],
        },
    )
    api = MarketplaceApi(
        app,
        spec_kwargs={
            "marshmallow_plugin": MarshmallowPlugin(schema_name_resolver=schema_name_resolver),
            "extra_plugins": [RateLimitPlugin()],
        },
    )
    api.spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from 'marketplace tokens create'.",
        },
    )
    api.register_field(schemas.UnitPrice, "number", None)
    for blueprint in blueprints:
        api.register_blueprint(blueprint, url_prefix=API_PREFIX)

    assets = Blueprint("docs_assets", __name__)

    @assets.get("/docs/assets/<path:filename>")
    def docs_asset(filename: str):
        return send_from_directory(SWAGGER_ASSETS, filename, max_age=3600)

    app.register_blueprint(assets)
    app.after_request(_docs_security_headers)
    return api


def _docs_security_headers(response: Response) -> Response:
    """The Swagger UI page gets the same security headers as the public pages. Its one inline
    script (flask-smorest's start-up snippet) is allowed by its hash, nothing else inline is;
    Swagger UI sets inline styles and data: images, so those are allowed for this page only."""
    if not (request.endpoint or "").endswith(".openapi_swagger_ui") or response.direct_passthrough:
        return response
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(response.get_data(as_text=True))
    )
    response.headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'",
    )
    for name, value in HTML_SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
