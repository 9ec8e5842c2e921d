"""Feed positions that are safe against transactions committing out of order.

A row's position is ``(xid, seq)``. On PostgreSQL ``xid`` is the writing transaction's id and a
reader only sees rows whose ``xid`` is older than every transaction of this database still
running in its snapshot (``PG_HORIZON``): those transactions have all finished, so nothing can
later appear at a position a reader has already passed. A row written by a transaction that is still open (or
that began before one that is still open) is simply held back until that transaction ends. On
SQLite writers are serialised by the database's write lock, held until commit, so ``seq``
(handed out under that lock) is commit order and ``xid`` is always 0.

Cursors are the project's opaque keyset cursors over ``(xid, seq)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..errors import ValidationFailed
from ..pagination import decode_cursor, encode_cursor

PG_CURRENT_XID = "pg_current_xact_id()::text::bigint"
# The horizon: the oldest transaction still running in the statement's snapshot, leaving out
# those positively known to belong to another database on the same server (they cannot write
# these tables, and a long one must not stall this feed). One that committed after the snapshot
# was taken is no longer in pg_stat_activity, so it is *not* left out: it still holds the
# horizon for this read, as it must (its rows are invisible to this snapshot). Backends whose
# xid this role may not see are not left out either. With nothing running: the snapshot's xmax.
PG_HORIZON = """(SELECT coalesce(
    (SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
      WHERE (x::text::bigint % 4294967296) NOT IN (
        SELECT backend_xid::text::bigint FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())),
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint))"""

Position = tuple[int, int]
START: Position = (0, 0)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def writer_xid(session: Session) -> Any:
    """The value to store in ``xid`` for a row this transaction writes."""
    return literal_column(PG_CURRENT_XID) if is_postgresql(session) else 0


def encode(position: Position) -> str:
    return encode_cursor(list(position))


def decode(cursor: str) -> Position:
    xid, seq = decode_cursor(cursor, 2)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (xid, seq)):
        raise ValidationFailed(
            "The cursor is not valid; start again without one.",
            errors={"cursor": ["Not a cursor this feed issued."]},
        )
    return xid, seq


def _visible(session: Session, model: Any) -> list[ColumnElement[bool]]:
    if is_postgresql(session):
        return [model.xid < literal_column(PG_HORIZON)]
    return []


def _after(model: Any, position: Position) -> ColumnElement[bool]:
    xid, seq = position
    return or_(model.xid > xid, and_(model.xid == xid, model.seq > seq))


@dataclass(frozen=True)
class FeedPage:
    rows: list[Any]
    has_more: bool
    position: Position  # where the next read starts: after the last row returned


def read(
    session: Session,
    model: Any,
    *,
    after: Position | None,
    limit: int,
    filters: Sequence[ColumnElement[bool]] = (),
    first_match: Sequence[ColumnElement[bool]] = (),
) -> FeedPage:
    """Up to ``limit`` visible rows after ``after``, in feed order.

    Without a position, ``first_match`` picks where to start: at the first visible row (in
    feed order) that matches it (e.g. ``recorded_at >= since``), or, when none does, after the
    last visible row, so that only later rows are returned.
    """
    visible = _visible(session, model)
    if after is None:
        after = _start(session, model, visible, filters, first_match)
    stmt: Select[Any] = (
        select(model)
        .where(*visible, *filters, _after(model, after))
        .order_by(model.xid, model.seq)
        .limit(limit + 1)
    )
    rows = list(session.scalars(stmt))
    has_more = len(rows) > limit
    rows = rows[:limit]
    position = (rows[-1].xid, rows[-1].seq) if rows else after
    return FeedPage(rows=rows, has_more=has_more, position=position)


def _start(
    session: Session,
    model: Any,
    visible: list[ColumnElement[bool]],
    filters: Sequence[ColumnElement[bool]],
    first_match: Sequence[ColumnElement[bool]],
) -> Position:
    if not first_match:
        return START
    first = session.execute(
        select(model.xid, model.seq)
        .where(*visible, *filters, *first_match)
        .order_by(model.xid, model.seq)
        .limit(1)
    ).first()
    if first is not None:
        xid, seq = first
        return (xid, seq - 1)  # just before it
    last = session.execute(
        select(model.xid, model.seq)
        .where(*visible)
        .order_by(model.xid.desc(), model.seq.desc())
        .limit(1)
    ).first()
    return (last[0], last[1]) if last is not None else START
