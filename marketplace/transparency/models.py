"""The open-data tables: published OCDS releases and the public change feed.

Both are append-only logs read by crawlers, so both carry a *feed position* that is safe
against transactions committing out of order (see ``feed.py``):

- ``seq``: a counter handed out at insert time (the rowid on SQLite: ``max + 1``, and since rows
  are never deleted it only grows; a sequence on PostgreSQL);
- ``xid``: on PostgreSQL the inserting transaction's id (``pg_current_xact_id()``), on SQLite 0.

A reader orders by ``(xid, seq)`` and, on PostgreSQL, only returns rows whose ``xid`` is below
the oldest transaction still running (the snapshot's ``xmin``): every transaction below it has
finished, so no row can ever appear behind a position a reader has already passed. SQLite
serialises writers (one write lock, held to commit), so ``seq`` alone is already commit order.

Rows are never updated or deleted: the ORM refuses (below) and so does the database (triggers
in migration ``0007_transparency``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..db import Base, utcnow

# INTEGER PRIMARY KEY is SQLite's rowid; BIGSERIAL on PostgreSQL.
FeedSeq = BigInteger().with_variant(Integer(), "sqlite")


class OcdsRelease(Base):
    """One published OCDS release, exactly as published (``data`` is its JSON text)."""

    __tablename__ = "ocds_releases"
    __table_args__ = (
        Index("ix_ocds_releases_position", "xid", "seq"),
        Index("ix_ocds_releases_ocid_date", "ocid", "date"),
    )

    seq: Mapped[int] = mapped_column(FeedSeq, primary_key=True, autoincrement=True)
    xid: Mapped[int] = mapped_column(BigInteger, default=0)
    release_id: Mapped[str] = mapped_column(String(200), unique=True)
    ocid: Mapped[str] = mapped_column(String(100))
    order_id: Mapped[str] = mapped_column(String(40), index=True)
    supplier_order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(32))  # placed, dispatched, delivered, ...
    tags: Mapped[str] = mapped_column(String(200))  # the release's tags, comma-separated
    # For refund releases: the supplier order's refunded total at publication, so the next
    # refund release carries only the new amount.
    refunded_pence: Mapped[int] = mapped_column(Integer, default=0)
    date: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[str] = mapped_column(Text)


class ChangeEntry(Base):
    """One entry of the public change feed: what changed (``kind``, object), when, and the
    public facts after the change (``data``, JSON text)."""

    __tablename__ = "open_data_changes"
    __table_args__ = (
        Index("ix_open_data_changes_position", "xid", "seq"),
        Index("ix_open_data_changes_recorded_at", "recorded_at"),
    )

    seq: Mapped[int] = mapped_column(FeedSeq, primary_key=True, autoincrement=True)
    xid: Mapped[int] = mapped_column(BigInteger, default=0)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text)


class OpenDataIsAppendOnly(RuntimeError):
    """Raised when code tries to change or delete a published release or a feed entry."""


def _refuse_change(_mapper: Any, _connection: Any, target: Any) -> None:
    raise OpenDataIsAppendOnly(
        f"{type(target).__tablename__} rows are never changed once published"
    )


for _model in (OcdsRelease, ChangeEntry):
    event.listen(_model, "before_update", _refuse_change)
    event.listen(_model, "before_delete", _refuse_change)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_change(state: Any) -> None:
    mapper = state.bind_mapper
    if (
        (state.is_update or state.is_delete)
        and mapper is not None
        and mapper.class_ in (OcdsRelease, ChangeEntry)
    ):
        raise OpenDataIsAppendOnly("published open data is append-only")


# The change feed records catalogue changes from ORM events on every Session: importing the
# models (as ``marketplace.models`` does for the app, the CLI and Alembic) registers them.
from . import changes as _changes  # noqa: E402, F401
