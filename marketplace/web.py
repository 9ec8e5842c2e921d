"""Flask glue shared by every blueprint: the request's database session, request ids,
structured JSON logs and the request metrics (``metrics.observe_request``).

One session per request. A request that writes (POST, PUT, PATCH, DELETE) begins its
transaction as a writer (``db.begin_write``) and commits once, after the view returned a
success; any error rolls the whole request back, so a failed request never leaves a partial
write.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import flask_smorest
from flask import Flask, Response, current_app, g, request
from marshmallow import RAISE
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from . import metrics
from .db import begin_write
from .errors import (
    Conflict,
    NotFound,
    Problem,
    ValidationFailed,
    database_unavailable,
    problem_response,
)


class StrictQueryParser(FlaskParser):
    """A query-string parameter the endpoint does not take is a 422 naming it (webargs ignores
    it by default): a mistyped ``max_unit_prize=5`` must not quietly return unfiltered results.
    JSON and form bodies already refuse unknown fields through their schemas."""

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }


class Blueprint(flask_smorest.Blueprint):
    """Every API blueprint: flask-smorest's, with ``StrictQueryParser`` for its arguments, and
    a query string refused outright by the views that take no query parameter."""

    ARGUMENTS_PARSER = StrictQueryParser()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.before_request(_refuse_query_the_view_does_not_take)


_QUERY_LOCATIONS = frozenset({"query", "querystring"})


def _takes_query(view: Any) -> bool:
    """Whether a view documents any query parameter (its arguments' schema or a manual one)."""
    doc = getattr(view, "_apidoc", None) or {}
    parameters = [
        *doc.get("arguments", {}).get("parameters", []),
        *doc.get("manual_doc", {}).get("parameters", []),
    ]
    return any(p.get("in") in _QUERY_LOCATIONS for p in parameters)


def _refuse_query_the_view_does_not_take() -> None:
    """``?anything=1`` on a view with no query parameter is a 422 naming it, as a view with
    query arguments answers an unknown one (never silently ignored)."""
    if not request.args or request.method == "OPTIONS":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or _takes_query(view):
        return
    raise ValidationFailed(
        "The request did not pass validation; see errors for each field.",
        errors={name: ["Unknown field."] for name in request.args},
    )


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
access_log = logging.getLogger("marketplace.access")
# Headers every HTML page carries (the public pages and the API docs), besides its own CSP.
HTML_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

STREAMED_BODY_ATTRIBUTE = "streamed_body_max_bytes"
V = TypeVar("V", bound=Callable[..., Any])


def streamed_body(max_bytes: int) -> Callable[[V], V]:
    """Mark a view that reads its request body as a stream itself (a large import): it may take
    bodies up to ``max_bytes`` instead of ``MAX_CONTENT_LENGTH`` (larger ones are refused with
    413 before it runs), and the body is left unread here (the view checks its rows)."""

    def mark(view: V) -> V:
        setattr(view, STREAMED_BODY_ATTRIBUTE, max_bytes)
        return view

    return mark


def get_session() -> Session:
    """The current request's session (created on first use)."""
    session = g.get("db_session")
    if session is None:
        state = current_app.extensions["marketplace"]
        if request.method in WRITE_METHODS:
            session = state.session_factory()
            begin_write(session)
        else:
            session = state.read_session()
        g.db_session = session
    return session


def request_id() -> str | None:
    return g.get("request_id")


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    view = current_app.view_functions.get(request.endpoint or "")
    own_limit = getattr(view, STREAMED_BODY_ATTRIBUTE, None)
    if own_limit is not None:  # a streamed import (``streamed_body``)
        limit = request.max_content_length = own_limit
    if limit and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    _refuse_nul_characters()


NUL = "\x00"
NUL_MESSAGE = "Must not contain NUL (U+0000) characters."


def _nul_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, str):
        if NUL in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                yield name.replace(NUL, "\\u0000")
            yield from _nul_paths(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}.{index}" if path else str(index))


def _refuse_nul_characters() -> None:
    """No text this API reads has a use for NUL, and PostgreSQL text cannot hold it: a request
    carrying one in its path, query or JSON body is refused as bad input on every database,
    before anything is looked up or written."""
    if NUL in request.path:
        raise NotFound("There is nothing at this address.", code="not-found")
    fields = [
        name.replace(NUL, "\\u0000") or "query"
        for name, value in request.args.items(multi=True)
        if NUL in name or NUL in value
    ]
    view = current_app.view_functions.get(request.endpoint or "")
    if request.is_json and getattr(view, STREAMED_BODY_ATTRIBUTE, None) is None:
        fields += _nul_paths(request.get_json(silent=True))
    if fields:
        raise ValidationFailed(
            "Text in the request must not contain NUL characters.",
            errors={name: [NUL_MESSAGE] for name in fields},
        )


def _finish_request(response: Response) -> Response:
    session: Session | None = g.get("db_session")
    if session is not None and session.in_transaction():
        if response.status_code < 400:
            try:
                session.commit()
            except IntegrityError:  # the commit itself failed: nothing was written
                session.rollback()
                response = problem_response(
                    Conflict("The change conflicts with existing data.", code="integrity-conflict")
                )
            except OperationalError as error:  # the database went away (see database_unavailable)
                session.rollback()
                response = problem_response(database_unavailable(error))
            except Exception:
                session.rollback()
                current_app.logger.exception("commit failed")
                response = problem_response(
                    Problem("The change could not be saved.", status=500, code="internal-error")
                )
        else:
            session.rollback()
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    metrics.observe_request(request.endpoint, request.method, response.status_code, seconds)
    duration_ms = seconds * 1000
    access_log.info(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 2),
        },
    )
    return response


def _close_session(_error: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def init_request_handling(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_close_session)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    EXTRA_KEYS = ("method", "path", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        try:
            rid = g.get("request_id")
        except RuntimeError:  # outside a request
            rid = None
        if rid:
            entry["request_id"] = rid
        for key in self.EXTRA_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_marketplace", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._marketplace = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
