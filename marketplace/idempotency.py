"""Idempotent POSTs: a retry with the same ``Idempotency-Key`` returns the first result.

Any domain's money-moving view wraps itself with ``@idempotent`` (between ``@authenticated`` and
``@blp.arguments``)::

    @blp.route("/budgets/<string:budget_id>/holds", methods=["POST"])
    @authenticated(Role.BUDGET_HOLDER, Role.BUDGET_MANAGER)
    @idempotent
    @blp.arguments(HoldSchema)
    @blp.response(201, LedgerEntrySchema)
    def create_hold(body, budget_id): ...

How it works, inside the request's one transaction:

1. No header: the view runs as usual.
2. The key is looked up for the caller (keys are per user). Found with the same request
   fingerprint (method, path, query string and canonical JSON body): the stored status and body
   are returned, marked ``Idempotent-Replayed: true``; the view does not run, so no money moves
   twice. Found with a different fingerprint: 422 ``idempotency-key-reused``.
3. Not found: the key is claimed by inserting its row (unique on ``(user_id, key)``), the view
   runs, and a successful (2xx) response is stored in that row. The claim commits with the
   view's own writes, or rolls back with them: a failed request stores nothing and may be
   retried with the same key.

Concurrent duplicates cannot both execute. On SQLite writers are serialised (``BEGIN
IMMEDIATE``), so the second sees the first's row. On PostgreSQL the second's INSERT waits on the
unique index until the first commits, then fails; it rolls back to its savepoint and replays the
first's stored response (or, had the first failed, its INSERT succeeds and it runs).

Services called outside HTTP can use ``claim``/``complete`` directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from flask import Response, make_response, request
from flask_smorest import Blueprint
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, PublicIdMixin, utcnow
from .errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces

F = TypeVar("F", bound=Callable[..., Any])


class IdempotencyKey(PublicIdMixin, Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    id_prefix = "idk"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(512))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_content_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    content_type: str


def fingerprint(method: str, path: str, body: bytes, query: str = "") -> str:
    """SHA-256 of the request as the server understands it: JSON bodies are canonicalised, so
    whitespace and key order do not make a retry "different"."""
    try:
        canonical = json.dumps(
            json.loads(body or b"null"), sort_keys=True, separators=(",", ":")
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ValidationFailed(
            "The Idempotency-Key header must be 1 to 255 printable characters without spaces.",
            code="invalid-idempotency-key",
            errors={HEADER: ["1 to 255 printable ASCII characters, no spaces."]},
        )
    return key


def _find(session: Session, user_id: str, key: str) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    )


def claim(
    session: Session, *, user_id: str, key: str, method: str, path: str, request_hash: str
) -> IdempotencyKey | StoredResponse:
    """Claim ``key`` for this request (returns the new row) or return the first result."""
    existing = _find(session, user_id, key)
    if existing is None:
        record = IdempotencyKey(
            user_id=user_id, key=key, method=method, path=path, request_hash=request_hash
        )
        try:
            with session.begin_nested():
                session.add(record)
            return record
        except IntegrityError:  # a concurrent duplicate committed first
            existing = _find(session, user_id, key)
            if existing is None:  # pragma: no cover - the other request rolled back meanwhile
                raise Conflict(
                    "Another request with this Idempotency-Key was in progress; retry.",
                    code="idempotency-key-in-progress",
                ) from None
    if existing.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was already used for a different request. Use a new key for "
            "a new request.",
            code="idempotency-key-reused",
            errors={HEADER: ["Already used with a different method, path or body."]},
        )
    if existing.response_status is None:  # pragma: no cover - claims commit with their result
        raise Conflict(
            "A request with this Idempotency-Key is still in progress; retry shortly.",
            code="idempotency-key-in-progress",
        )
    return StoredResponse(
        status=existing.response_status,
        body=existing.response_body or "",
        content_type=existing.response_content_type or "application/json",
    )


def complete(session: Session, record: IdempotencyKey, result: StoredResponse) -> None:
    record.response_status = result.status
    record.response_body = result.body
    record.response_content_type = result.content_type
    session.flush()


def idempotent(view: F) -> F:
    """Make a POST view honour ``Idempotency-Key`` (see the module docstring)."""
    from .auth import current_principal
    from .web import get_session

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        validate_key(key)
        principal = current_principal()
        session = get_session()
        outcome = claim(
            session,
            user_id=principal.user_id,
            key=key,
            method=request.method,
            path=request.path,
            request_hash=fingerprint(
                request.method,
                request.path,
                request.get_data(cache=True),
                request.query_string.decode("latin-1"),
            ),
        )
        if isinstance(outcome, StoredResponse):
            replay = Response(outcome.body, status=outcome.status, mimetype=None)
            replay.headers["Content-Type"] = outcome.content_type
            replay.headers[REPLAYED_HEADER] = "true"
            return replay
        response = make_response(view(*args, **kwargs))
        if 200 <= response.status_code < 300:
            complete(
                session,
                outcome,
                StoredResponse(
                    status=response.status_code,
                    body=response.get_data(as_text=True),
                    content_type=response.headers.get("Content-Type", "application/json"),
                ),
            )
        return response

    documented = Blueprint.doc(
        parameters=[
            {
                "in": "header",
                "name": HEADER,
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": KEY_PATTERN.pattern,
                },
                "description": (
                    "Makes the request safe to retry: a retry with the same key and body returns "
                    "the first result (marked `Idempotent-Replayed: true`) and moves no money "
                    "twice; the same key with a different body is a 422."
                ),
            }
        ],
    )
    return documented(wrapper)  # type: ignore[return-value]
