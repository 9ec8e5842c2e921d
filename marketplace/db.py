"""Database engine, sessions and the declarative base shared by every domain.

The same code runs on SQLite (the embedded default) and PostgreSQL (psycopg 3).

SQLite: WAL mode, foreign keys on, a busy timeout, and transactions we begin ourselves, so that
a writing unit of work can take the write lock up front with ``BEGIN IMMEDIATE`` (see
``begin_write``). That avoids the deadlock-like ``SQLITE_BUSY`` a deferred transaction hits when
it reads, then tries to write after another writer committed.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, String, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from .config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

WRITE_LOCK_OPTION = "marketplace_write_lock"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque public id such as ``prd_4f1c...``: a prefix that says what it is, then 128
    random bits. Never sequential, so ids leak no volumes."""
    return f"{prefix}_{uuid.UUID(bytes=secrets.token_bytes(16)).hex}"


def new_ordered_id(prefix: str) -> str:
    """An opaque public id like ``new_id``'s whose later ids sort after earlier ones: a UUID of
    version 7 (RFC 9562), a millisecond timestamp then 74 random bits. For rows written by the
    million (purchase lines): each insert lands at the end of the primary key's index instead of
    on a random page of it. It tells when the row was made, which the row says anyway, and,
    with the random bits, still nothing of volumes."""
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(secrets.token_bytes(10), "big")
    value = (
        (millis & (2**48 - 1)) << 80
        | 0x7 << 76
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random_bits & (2**62 - 1)
    )
    return f"{prefix}_{uuid.UUID(int=value).hex}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class PublicIdMixin:
    """Primary key ``id``: an opaque prefixed string. Subclasses set ``id_prefix``, and
    ``ordered_ids`` for ids that sort by creation (``new_ordered_id``)."""

    id_prefix: str = "obj"
    ordered_ids: bool = False
    id: Mapped[str] = mapped_column(String(40), primary_key=True)

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("id", self.make_id())
        super().__init__(**kwargs)

    @classmethod
    def make_id(cls) -> str:
        return (new_ordered_id if cls.ordered_ids else new_id)(cls.id_prefix)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    if settings.is_sqlite:
        return _sqlite_engine(settings, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(settings.database_url, **kwargs)


def _sqlite_engine(settings: Settings, **kwargs: Any) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A file database: one connection per checkout keeps WAL readers and writers apart.
        kwargs.setdefault("poolclass", NullPool)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", settings.sqlite_busy_timeout_ms / 1000)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    busy_timeout = int(settings.sqlite_busy_timeout_ms)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(WRITE_LOCK_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a writer.

    Call it before the first statement of a unit of work that moves money or stock. On SQLite
    it takes the database write lock up front (``BEGIN IMMEDIATE``); on PostgreSQL it is a plain
    transaction and the service uses row locks or guarded updates.
    """
    if session.in_transaction():
        return
    session.connection(execution_options={WRITE_LOCK_OPTION: True})


@contextmanager
def unit_of_work(factory: sessionmaker[Session], *, write: bool = True) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    session = factory()
    try:
        if write:
            begin_write(session)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock_row(session: Session, model: type, object_id: str) -> Any:
    """Fetch a row for update: ``SELECT ... FOR UPDATE`` on PostgreSQL. On SQLite the
    transaction already holds the write lock (``begin_write``), which serialises writers."""
    from sqlalchemy import select

    stmt = select(model).where(model.id == object_id).with_for_update()
    return session.execute(stmt).scalar_one_or_none()


def among(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values`` for a long list of values. On PostgreSQL the list goes as one
    array parameter (``column = ANY(:values)``): the statement's text is then the same however
    many values there are, so neither SQLAlchemy nor psycopg renders and parses a placeholder
    per value each time. Elsewhere a plain ``IN`` (SQLite: at most 32,766 values)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
