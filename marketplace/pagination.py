"""The one pagination helper: keyset (cursor) pagination, cursor in the response body.

A cursor is an opaque, URL-safe encoding of the sort key of the last item returned. Walking
``next_cursor`` until it is ``null`` returns every matching row exactly once, however deep, and
each page costs an index range scan rather than an ever larger OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .db import UTCDateTime
from .errors import ValidationFailed

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 100


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity:
        raise ValidationFailed(
            "The cursor is not valid; start again without one.",
            errors={"cursor": ["Not a cursor this list issued."]},
        )
    return values


def _keyset_after(
    columns: Sequence[ColumnElement[Any]], values: Sequence[Any], descending: bool
) -> ColumnElement[bool]:
    """``(c1, c2, ...) > (v1, v2, ...)`` written out, so it works on every database."""
    clauses = []
    for i, column in enumerate(columns):
        equal_prefix = [columns[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        clauses.append(and_(*equal_prefix, beyond))
    return or_(*clauses)


def _coerce(columns: Sequence[ColumnElement[Any]], values: list[Any]) -> list[Any]:
    coerced = []
    for column, value in zip(columns, values, strict=True):
        if isinstance(getattr(column, "type", None), UTCDateTime) and isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValidationFailed(
                    "The cursor is not valid.", errors={"cursor": ["Corrupt cursor."]}
                ) from None
        coerced.append(value)
    return coerced


def paginate(
    session: Session,
    stmt: Select[Any],
    *,
    order_by: Sequence[ColumnElement[Any]],
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
    descending: bool = False,
    key: Callable[[Any], Sequence[Any]] | None = None,
    scalars: bool = True,
) -> Page[Any]:
    """Return one page of ``stmt`` ordered by ``order_by`` (the last column must be unique).

    ``key`` maps a returned item to its sort values; by default it reads the attributes named
    like the order columns.
    """
    limit = max(1, min(int(limit), MAX_LIMIT))
    if cursor:
        values = _coerce(order_by, decode_cursor(cursor, len(order_by)))
        stmt = stmt.where(_keyset_after(order_by, values, descending))
    ordering = [c.desc() if descending else c.asc() for c in order_by]
    result = session.execute(stmt.order_by(*ordering).limit(limit + 1))
    rows = list(result.scalars() if scalars else result.all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if key is None:
        names = [c.key for c in order_by]

        def key(item: Any) -> Sequence[Any]:
            return [getattr(item, name) for name in names]

    next_cursor = encode_cursor(key(rows[-1])) if has_more and rows else None
    return Page(items=rows, next_cursor=next_cursor)
