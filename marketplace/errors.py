"""One error format: RFC 9457 problem details (``application/problem+json``).

Services raise ``Problem`` (or one of its subclasses); the handlers registered here turn it, and
every Werkzeug/webargs error, into a problem response. Unexpected exceptions become a 500 whose
body carries the request id and nothing else of the failure.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, json
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://marketplace.nhs.example/problems/"

log = logging.getLogger(__name__)


class Problem(Exception):
    """A failure the client can act on. ``code`` is a short machine-readable slug."""

    status: int = 400
    code: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
        errors: Any = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.title = title or HTTPStatus(self.status).phrase
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


class NotFound(Problem):
    status = 404
    code = "not-found"


class Conflict(Problem):
    status = 409
    code = "conflict"


class ValidationFailed(Problem):
    status = 422
    code = "validation-failed"


class Forbidden(Problem):
    status = 403
    code = "forbidden"


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str, **kwargs: Any):
        kwargs.setdefault("headers", {})
        kwargs["headers"].setdefault(
            "WWW-Authenticate", 'Bearer realm="marketplace", error="invalid_token"'
        )
        super().__init__(detail, **kwargs)


class PaymentRequired(Problem):
    status = 402
    code = "payment-required"


class ServiceUnavailable(Problem):
    status = 503
    code = "service-unavailable"


def database_unavailable(error: OperationalError) -> ServiceUnavailable:
    """The database cannot be reached (down, restarting, connection lost, a statement
    cancelled by a timeout): a 503 the client may retry, never a 500. The request's transaction
    dies with its connection, so nothing of it is written; only a connection lost during COMMIT
    itself leaves the outcome unknown, and a retry with the same Idempotency-Key then replays
    the stored result if the commit had gone through."""
    log.error("database unavailable: %s", error.orig)
    return ServiceUnavailable(
        "The database is unavailable; try again shortly.",
        code="database-unavailable",
        headers={"Retry-After": "5"},
    )


def not_found(kind: str, object_id: str) -> NotFound:
    return NotFound(
        f"No {kind} with id {object_id!r} is visible to you.",
        code=f"{kind.replace(' ', '-')}-not-found",
    )


def problem_response(problem: Problem) -> Response:
    body = problem.to_dict()
    request_id = getattr(g, "request_id", None)
    if request_id:
        body.setdefault("request_id", request_id)
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


_HTTP_DETAILS = {
    400: "The request could not be understood.",
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The request body is larger than this server accepts.",
}


def _from_http_exception(error: HTTPException) -> Problem:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if status == 422 and isinstance(errors, dict):
        errors = _flatten_webargs_errors(errors)
        detail = "The request did not pass validation; see errors for each field."
        code = "validation-failed"
    else:
        detail = data.get("message") or _HTTP_DETAILS.get(status) or error.description or ""
        code = HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
        if status == 400 and ("JSON" in (error.description or "") or "JSON" in str(errors)):
            detail = "The request body is not valid JSON."
            code = "malformed-json"
            errors = None
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    return Problem(detail, status=status, code=code, errors=errors, headers=headers)


def _flatten_webargs_errors(messages: dict[str, Any]) -> dict[str, Any]:
    """webargs nests errors under the location (``json``, ``query``...); clients want fields."""
    locations = {"json", "query", "querystring", "form", "headers", "files", "view_args", "path"}
    if set(messages) <= locations:
        merged: dict[str, Any] = {}
        for location_errors in messages.values():
            if isinstance(location_errors, dict):
                merged.update(location_errors)
            else:
                merged["_schema"] = location_errors
        return merged
    return messages


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        return problem_response(problem)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        return problem_response(_from_http_exception(error))

    @app.errorhandler(IntegrityError)
    def _integrity(error: IntegrityError) -> Response:
        log.warning("integrity error: %s", error.orig)
        return problem_response(
            Conflict("The change conflicts with existing data.", code="integrity-conflict")
        )

    @app.errorhandler(OperationalError)
    def _operational(error: OperationalError) -> Response:
        return problem_response(database_unavailable(error))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(
            Problem(
                "Something went wrong on our side. Quote the request id if you report it.",
                status=500,
                code="internal-error",
            )
        )
