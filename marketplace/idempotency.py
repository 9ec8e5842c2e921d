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

A view whose body is not JSON gives its own fingerprint: ``@idempotent(fingerprint=...)``
takes a function of the request. ``upload_fingerprint`` is the one for file uploads: a multipart
body's boundary is random, so it hashes the form fields and each file's bytes, not the raw body,
reading the files in chunks and leaving them for the view to read again.

Services called outside HTTP can use ``claim``/``complete`` directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from operator import itemgetter
from typing import IO, Any, TypeVar, overload

from flask import Request, Response, make_response, request
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, PublicIdMixin, utcnow
from .errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
CHUNK_BYTES = 64 * 1024  # how much of an uploaded file is read at a time
SPOOL_MEMORY_BYTES = 1024 * 1024  # a raw body larger than this is spooled to a temporary file
FORM_MIMETYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})

F = TypeVar("F", bound=Callable[..., Any])
Fingerprint = Callable[[Request], str]


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
    return _digest([*_request_line(method, path, query), canonical])


def _request_line(method: str, path: str, query: str) -> list[bytes]:
    return [method.upper().encode(), path.encode(), query.encode()]


def body_fingerprint(req: Request) -> str:
    """The default fingerprint: method, path, query string and the (JSON) body."""
    return fingerprint(
        req.method, req.path, req.get_data(cache=True), req.query_string.decode("latin-1")
    )


def upload_fingerprint(req: Request) -> str:
    """The fingerprint of a file upload: method, path, query string, the form fields (sorted)
    and each uploaded file's field name and bytes, so a multipart body's boundary (random for
    each request) does not matter. Files are read in chunks and left at their start for the
    view. A body that is not a form counts as one file without a field name; it is spooled to
    a temporary file, which the view then reads as ``request.stream``."""
    if req.mimetype in FORM_MIMETYPES:
        fields = sorted(req.form.items(multi=True))
        files = sorted(
            ((name, upload.stream) for name, upload in req.files.items(multi=True)),
            key=itemgetter(0),
        )
    else:
        fields, files = [], [("", _spool_body(req))]
    parts: list[bytes | IO[bytes]] = [
        *_request_line(req.method, req.path, req.query_string.decode("latin-1")),
        b"fields %d" % len(fields),
    ]
    for name, value in fields:
        parts += [_text(name), _text(value)]
    parts.append(b"files %d" % len(files))
    for name, stream in files:
        parts += [_text(name), stream]
    return _digest(parts)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _spool_body(req: Request) -> IO[bytes]:
    """Copy the request body, in chunks, to a temporary file (in memory while small), and make
    it the request's ``stream``, so that the view reads the body after it has been hashed."""
    # Not a ``with`` block: the file outlives this function, as the request's body.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    shutil.copyfileobj(req.stream, spool, CHUNK_BYTES)
    spool.seek(0)
    req.stream = spool  # werkzeug's cached property: later reads of ``request.stream`` get this
    return spool


def _digest(parts: Iterable[bytes | IO[bytes]]) -> str:
    """SHA-256 over ``parts``, each preceded by its length (8 bytes), so that no two different
    lists of parts hash alike. A part may be a seekable binary file (see ``_framed``)."""
    digest = hashlib.sha256()
    for part in parts:
        for piece in _framed(part):
            digest.update(piece)
    return digest.hexdigest()


def _framed(part: bytes | IO[bytes]) -> Iterator[bytes]:
    """A part's length, then its bytes; a file's are read in chunks (constant memory), and the
    file is put back at its start for whoever reads it next."""
    if isinstance(part, bytes):
        yield len(part).to_bytes(8, "big")
        yield part
        return
    size = part.seek(0, io.SEEK_END)
    part.seek(0)
    yield size.to_bytes(8, "big")
    while chunk := part.read(CHUNK_BYTES):
        yield chunk
    part.seek(0)


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


KEY_PARAMETER_DOC: dict[str, Any] = {
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


@overload
def idempotent(view: F, /) -> F: ...


@overload
def idempotent(*, fingerprint: Fingerprint) -> Callable[[F], F]: ...


def idempotent(
    view: F | None = None, /, *, fingerprint: Fingerprint = body_fingerprint
) -> F | Callable[[F], F]:
    """Make a POST view honour ``Idempotency-Key`` (see the module docstring). Bare
    ``@idempotent`` fingerprints the JSON body; ``@idempotent(fingerprint=...)`` uses the given
    function of the request (``upload_fingerprint`` for file uploads)."""
    if view is None:
        return lambda inner: _idempotent_view(inner, fingerprint)
    return _idempotent_view(view, fingerprint)


def _idempotent_view(view: F, request_fingerprint: Fingerprint) -> F:
    from .auth import current_principal
    from .web import get_session

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        validate_key(key)
        session = get_session()
        outcome = claim(
            session,
            user_id=current_principal().user_id,
            key=key,
            method=request.method,
            path=request.path,
            request_hash=request_fingerprint(request),
        )
        if isinstance(outcome, StoredResponse):
            return _replay(outcome)
        response = make_response(view(*args, **kwargs))
        if 200 <= response.status_code < 300:
            complete(session, outcome, _stored(response))
        return response

    return document_key_header(wrapper)  # type: ignore[return-value]


def _replay(stored: StoredResponse) -> Response:
    replay = Response(stored.body, status=stored.status, mimetype=None)
    replay.headers["Content-Type"] = stored.content_type
    replay.headers[REPLAYED_HEADER] = "true"
    return replay


def _stored(response: Response) -> StoredResponse:
    return StoredResponse(
        status=response.status_code,
        body=response.get_data(as_text=True),
        content_type=response.headers.get("Content-Type", "application/json"),
    )


def document_key_header(view: F) -> F:
    """List the header among the operation's parameters in the OpenAPI document. It joins the
    parameters that ``@blp.arguments`` documents (flask-smorest keeps them under the view's
    ``_apidoc["arguments"]``), whichever side of it this decorator is: a manual
    ``Blueprint.doc(parameters=...)`` would replace those, hiding query arguments."""
    apidoc = deepcopy(getattr(view, "_apidoc", {}))
    apidoc.setdefault("arguments", {}).setdefault("parameters", []).append(
        deepcopy(KEY_PARAMETER_DOC)
    )
    view._apidoc = apidoc  # type: ignore[attr-defined]
    return view
