# ruff: noqa: S608 -- table and column names here are constants of this module, never input
"""Fast bulk writes on both databases, below the ORM: a long import must not spend its time
building SQL. PostgreSQL: ``COPY`` into a transaction-scoped temporary table, then one
``INSERT ... SELECT ... ON CONFLICT``. SQLite: the driver's ``executemany`` into the same kind of
staging table. Values go in as plain Python values converted here (dates, UTC datetimes,
enum values), so no per-value type processing is needed."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Integer, Select, String, Table, column, delete, insert, table, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from . import importer
from .models import ProductStats

# name -> column definition in the staging table (types valid on both databases)
PURCHASE_COLUMNS: dict[str, str] = {
    "id": "VARCHAR(40)",
    "trust_id": "VARCHAR(40)",
    "order_date": "DATE",
    "product_id": "VARCHAR(40)",
    "supplier_id": "VARCHAR(40)",
    "supplier_name": "VARCHAR(200)",
    "supplier_sku": "VARCHAR(100)",
    "gtin": "VARCHAR(14)",
    "description": "VARCHAR(500)",
    "quantity": "INTEGER",
    "units_per_pack": "INTEGER",
    "given_units_per_pack": "INTEGER",
    "total_price_pence": "BIGINT",
    "source": "VARCHAR(32)",
    "po_number": "VARCHAR(64)",
    "line": "INTEGER",
    "status": "VARCHAR(32)",
    "benchmark_excluded": "BOOLEAN",
    "benchmark_excluded_reason": "VARCHAR(500)",
    "import_id": "VARCHAR(40)",
    "created_at": "TIMESTAMP WITH TIME ZONE",
    "updated_at": "TIMESTAMP WITH TIME ZONE",
}
# The staging table of an import also keeps each line's row in the file, so that a line whose
# key is already taken can be checked against the record that holds it, and reported by row.
PURCHASE_STAGING_COLUMNS: dict[str, str] = {**PURCHASE_COLUMNS, "file_row": "INTEGER"}
# The columns a line's file gives and its record keeps as given (the key, and units_per_pack,
# which a match may fill in, apart): a line whose key was already imported must have the same
# values in these. Its units_per_pack is compared as given_units_per_pack (see
# ``conflicting_purchases``).
COMPARED_COLUMNS = tuple(
    c for c in importer.COLUMNS if c not in ("po_number", "line", "units_per_pack")
)
STAGING_PURCHASES = "pricing_staging_purchases"
# pricing_product_stats' columns, in the order its rows are loaded
STATS_COLUMNS = tuple(c.name for c in ProductStats.__table__.columns)
TOTAL_COLUMNS = {
    "product_id": "VARCHAR(40)",
    "trust_id": "VARCHAR(40)",
    "period": "DATE",
    "units": "BIGINT",
    "spend_pence": "BIGINT",
    "lines": "INTEGER",
}


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _pg_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value


def db_value(session: Session) -> Callable[[Any], Any]:
    """The converter ``stage`` applies to each value, for callers that convert up front."""
    return _pg_value if dialect(session) == "postgresql" else _sqlite_value


def stage(
    session: Session,
    name: str,
    columns: dict[str, str],
    rows: Iterable[Sequence[Any]],
    converted: bool = False,
) -> None:
    """Load ``rows`` (tuples in ``columns`` order) into the temporary table ``name``, emptied
    first. The table lives as long as the transaction (PostgreSQL) or connection (SQLite).
    ``converted``: the values are already what the driver takes (see ``db_value``)."""
    raw = session.connection().connection.driver_connection
    definition = ", ".join(f"{c} {t}" for c, t in columns.items())
    if dialect(session) == "postgresql":
        with raw.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({definition}) ON COMMIT DROP")
            cursor.execute(f"TRUNCATE {name}")
    else:
        definition = definition.replace("TIMESTAMP WITH TIME ZONE", "DATETIME")
        raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({definition})")
        raw.execute(f"DELETE FROM {name}")  # nosec B608 # staging table and column names are this module's constants, never input
    load(session, name, list(columns), rows, converted)


def load(
    session: Session,
    name: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    converted: bool = False,
) -> None:
    """Append ``rows`` (tuples in ``columns`` order) to the table ``name``: PostgreSQL
    ``COPY``, SQLite ``executemany``. ``converted``: as for ``stage``."""
    raw = session.connection().connection.driver_connection
    names = ", ".join(columns)
    if dialect(session) == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY {name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row if converted else [_pg_value(v) for v in row])
        return
    marks = ", ".join("?" for _ in columns)
    raw.executemany(
        f"INSERT INTO {name} ({names}) VALUES ({marks})",  # nosec B608 # table and column names are this module's constants, never input
        rows if converted else ([_sqlite_value(v) for v in row] for row in rows),
    )


def insert_purchases(
    session: Session, rows: Sequence[Sequence[Any]], converted: bool = False
) -> list[Any]:
    """Insert purchase records (tuples in ``PURCHASE_STAGING_COLUMNS`` order), skipping lines
    already there (same trust, PO number and line), including a repeat of a line earlier in
    ``rows`` (the first in file order is inserted). Returns ``(product_id, order_date, quantity,
    units_per_pack, total_price_pence)`` for each line inserted. The rows stay staged for
    ``conflicting_purchases`` until the next call."""
    if not rows:
        return []
    stage(session, STAGING_PURCHASES, PURCHASE_STAGING_COLUMNS, rows, converted)
    names = ", ".join(PURCHASE_COLUMNS)
    where = "" if dialect(session) == "postgresql" else " WHERE true"
    statement = text(
        f"INSERT INTO purchase_records ({names}) SELECT {names} FROM {STAGING_PURCHASES}"  # nosec B608 # staging table and column names are this module's constants, never input
        f"{where} ORDER BY file_row ON CONFLICT (trust_id, po_number, line) DO NOTHING "
        "RETURNING product_id, order_date, quantity, units_per_pack, total_price_pence"
    ).columns(
        product_id=String,
        order_date=Date,
        quantity=Integer,
        units_per_pack=Integer,
        total_price_pence=Integer,
    )
    return session.execute(statement).all()


def conflicting_purchases(session: Session, import_id: str) -> list[Any]:
    """The lines staged by the last ``insert_purchases`` that were not inserted because their
    key (trust, PO number, line) was taken, and whose values differ from the record that holds
    it: ``(file_row, po_number, line, earlier_row, this_import, earlier_source)``, in file
    order. ``this_import``: the record came from ``import_id`` (an earlier row of the same
    file), ``earlier_row`` its row when that row was staged in the same batch (else None);
    ``earlier_source`` the record's source (``import`` or ``marketplace``). Lines identical to
    the record are not returned: they are simply already imported.

    A line's units_per_pack is compared, when it gives one, with the one the record's line gave
    (``given_units_per_pack``): a record whose pack size came from the catalogue differs from
    a line giving one, even the same number. A blank one is not compared: records from before
    ``given_units_per_pack`` count every pack size as given, so a file that left it blank must
    still re-import as it did. The staged rows are joined to the records by their unique key,
    so this costs one index probe per staged line."""
    same = "IS NOT DISTINCT FROM" if dialect(session) == "postgresql" else "IS"
    equal = " AND ".join(f"r.{c} {same} s.{c}" for c in COMPARED_COLUMNS)
    pack_size = f"r.given_units_per_pack {same} s.given_units_per_pack"
    statement = text(
        "SELECT s.file_row, s.po_number, s.line, "  # nosec B608 # staging table and column names are this module's constants, never input
        f"(SELECT e.file_row FROM {STAGING_PURCHASES} e WHERE e.id = r.id) AS earlier_row, "
        "r.import_id = :import_id AS this_import, r.source AS earlier_source "
        f"FROM {STAGING_PURCHASES} s JOIN purchase_records r "
        "ON r.trust_id = s.trust_id AND r.po_number = s.po_number AND r.line = s.line "
        f"WHERE r.id <> s.id AND NOT ({equal} "
        f"AND (s.given_units_per_pack IS NULL OR {pack_size})) "
        "ORDER BY s.file_row"
    ).bindparams(import_id=import_id)
    return [
        (int(row), po, int(n), None if earlier is None else int(earlier), bool(this), source)
        for row, po, n, earlier, this, source in session.execute(statement)
    ]


# The tables whose sums add_totals may add to, each with its key columns and summed columns: the
# SQL is built from these names, so nothing else may reach it.
SUMMED_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pricing_daily_totals": (("product_id", "trust_id", "day"), ("units", "spend_pence", "lines")),
    "pricing_monthly_totals": (
        ("product_id", "trust_id", "month"),
        ("units", "spend_pence", "lines"),
    ),
    "pricing_trust_window": (("product_id", "trust_id"), ("units", "spend_pence")),
}
ROLLUP_TABLES = frozenset({"pricing_daily_totals", "pricing_monthly_totals"})
WINDOW_COLUMNS = {
    "product_id": "VARCHAR(40)",
    "trust_id": "VARCHAR(40)",
    "units": "BIGINT",
    "spend_pence": "BIGINT",
}


def add_totals(session: Session, table: str, key: str, rows: Sequence[Sequence[Any]]) -> None:
    """Add ``(product_id, trust_id, period, units, spend_pence, lines)`` deltas to a rollup
    table whose period column is ``key`` (an upsert that sums)."""
    if table not in ROLLUP_TABLES or SUMMED_TABLES[table][0][-1] != key:
        raise ValueError(f"not a rollup table: {table!r} keyed by {key!r}")
    _add_sums(session, table, "pricing_staging_totals", TOTAL_COLUMNS, rows)


def add_window_totals(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Add ``(product_id, trust_id, units, spend_pence)`` deltas to the default-window totals."""
    _add_sums(session, "pricing_trust_window", "pricing_staging_window", WINDOW_COLUMNS, rows)


def _add_sums(
    session: Session,
    table: str,
    staging: str,
    staging_columns: dict[str, str],
    rows: Sequence[Sequence[Any]],
) -> None:
    if not rows:
        return
    keys, sums = SUMMED_TABLES[table]
    stage(session, staging, staging_columns, rows)
    where = "" if dialect(session) == "postgresql" else " WHERE true"
    session.execute(
        text(
            f"INSERT INTO {table} ({', '.join((*keys, *sums))}) "  # nosec B608 # table and columns come from SUMMED_TABLES, staging from this module
            f"SELECT {', '.join(staging_columns)} FROM {staging}{where} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
        )
    )


STATS_TABLE = ProductStats.__tablename__


def insert_stats(session: Session, rows: Sequence[dict[str, Any]], into: str = STATS_TABLE) -> None:
    """Insert ``pricing_product_stats`` rows (dicts keyed by ``STATS_COLUMNS`` but
    ``updated_at``, which is now for all of them) into that table, or into the table that
    ``rebuilt_table`` is building in its place; exact decimals go in as their text."""
    if into not in (STATS_TABLE, f"{STATS_TABLE}{BUILD_SUFFIX}"):
        raise ValueError(f"not the statistics table: {into!r}")
    if not rows:
        return
    now = db_value(session)(datetime.now(UTC))
    columns = [c for c in STATS_COLUMNS if c != "updated_at"]
    decimals = {c for c in columns if c.endswith("_price") or c == "spread"}
    load(
        session,
        into,
        [*columns, "updated_at"],
        [[str(r[c]) if c in decimals else r[c] for c in columns] + [now] for r in rows],
        converted=True,
    )


def analyse(session: Session, *tables: str) -> None:
    """Refresh PostgreSQL's planner statistics of tables just rebuilt in bulk: until autovacuum
    gets to them, every query on them would be planned on stale or no statistics."""
    if dialect(session) == "postgresql":
        for name in tables:
            session.execute(text(f"ANALYZE {name}"))


BUILD_SUFFIX = "_build"


class Rebuild:
    """A derived table being rebuilt: ``table`` holds the new rows; ``index()`` builds its
    indexes (once; leaving ``rebuilt_table`` builds them if nobody did)."""

    def __init__(self, table: Any, build_indexes: Callable[[], None]):
        self.table = table
        self._build_indexes: Callable[[], None] | None = build_indexes

    @property
    def name(self) -> str:
        return str(self.table.name)

    def index(self) -> None:
        if self._build_indexes is not None:
            build, self._build_indexes = self._build_indexes, None
            build()


@contextmanager
def rebuilt_table(
    session: Session, target: Table, rows: Select[Any] | None = None
) -> Iterator[Rebuild]:
    """Replace every row of the derived table ``target``: yields a ``Rebuild`` whose table
    holds the new rows, from ``rows`` (its columns, in order) or, without them, from the
    caller, until they replace the old ones on leaving. Its secondary indexes (PostgreSQL:
    every index) are built once it is filled: when the caller asks (``Rebuild.index``), or on
    leaving.

    PostgreSQL: the rows go into a new table without indexes, which are then built in one pass
    each (far cheaper than maintaining them row by row, and no dead rows are left behind); on
    leaving, the new table takes the old one's place and names in the same transaction, so
    readers see the old rows until the commit and wait only for the swap itself; the new table
    is analysed before it takes the old one's place. SQLite: the table is emptied and refilled
    in place (its writers are serialised anyway, and readers keep their snapshot), its
    secondary indexes dropped first and built again."""
    names = [c.name for c in target.columns]
    if dialect(session) != "postgresql":

        def create_indexes() -> None:
            for index in target.indexes:
                index.create(session.connection())

        for index in target.indexes:
            index.drop(session.connection())
        session.execute(delete(target))
        if rows is not None:
            session.execute(insert(target).from_select(names, rows))
        rebuild = Rebuild(target, create_indexes)
        yield rebuild
        rebuild.index()
        return
    build = f"{target.name}{BUILD_SUFFIX}"
    session.execute(text(f"CREATE TABLE {build} (LIKE {target.name} INCLUDING DEFAULTS)"))
    build_table = table(build, *(column(n) for n in names))
    if rows is not None:
        session.execute(insert(build_table).from_select(names, rows))
    rebuild = Rebuild(build_table, lambda: _index_build(session, target))
    yield rebuild
    rebuild.index()
    session.execute(text(f"DROP TABLE {target.name}"))
    session.execute(text(f"ALTER TABLE {build} RENAME TO {target.name}"))
    pk = target.primary_key.name
    session.execute(text(f"ALTER TABLE {target.name} RENAME CONSTRAINT {pk}{BUILD_SUFFIX} TO {pk}"))
    for index in target.indexes:
        session.execute(text(f"ALTER INDEX {index.name}{BUILD_SUFFIX} RENAME TO {index.name}"))


SWAP_LOCK_ATTEMPT_MS = 100
SWAP_LOCK_PAUSE_SECONDS = 0.05
LOCK_NOT_AVAILABLE = "55P03"


def lock_for_swap(session: Session, targets: Sequence[Table]) -> None:
    """Take the exclusive locks that swapping the rebuilt ``targets`` in needs, on all of them
    at once or on none (PostgreSQL; a no-op on SQLite, which refills in place).

    A reader that has read one of the tables and then reads another (a trust's savings join
    the window totals to the statistics) holds a share lock on the first while it waits for
    the second: a swap that held the second while waiting for the first would deadlock with
    it. So each attempt waits at most ``SWAP_LOCK_ATTEMPT_MS`` (well under the server's
    ``deadlock_timeout``, 1 s by default), gives back what it got, lets the readers finish,
    and tries again."""
    if dialect(session) != "postgresql" or not targets:
        return
    names = ", ".join(t.name for t in targets)
    while True:
        try:
            with session.begin_nested():
                session.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_ATTEMPT_MS}ms'"))
                session.execute(text(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"))
            break
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            time.sleep(SWAP_LOCK_PAUSE_SECONDS)
    session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


def _index_build(session: Session, target: Table) -> None:
    """The primary key and indexes of ``target``, built on its build table, then analysed."""
    build = f"{target.name}{BUILD_SUFFIX}"
    key = ", ".join(c.name for c in target.primary_key.columns)
    pk = target.primary_key.name
    session.execute(
        text(f"ALTER TABLE {build} ADD CONSTRAINT {pk}{BUILD_SUFFIX} PRIMARY KEY ({key})")
    )
    for index in target.indexes:
        columns = ", ".join(c.name for c in index.columns)
        unique = "UNIQUE " if index.unique else ""
        session.execute(
            text(f"CREATE {unique}INDEX {index.name}{BUILD_SUFFIX} ON {build} ({columns})")
        )
    analyse(session, build)
