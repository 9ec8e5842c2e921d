"""The materialised statistics: rollups, the default-window caches, and how they are kept
up to date (docs/pricing.md, "Materialisation").

Every change to a benchmarked purchase line (a matched, non-excluded line) is turned into an
additive delta on the (product, trust, day) and (product, trust, month) rollups, applied with an
upsert in the same transaction as the change; the deltas inside the default window go into its
per-trust totals the same way (or, when the window has just moved, the touched pairs are
re-summed from whole months of the monthly rollup and edge days of the daily one), and each
touched product's distribution is recomputed from its per-trust totals. The full refresh sums
the window straight from the raw lines. Nothing on the read path scans raw lines.

On PostgreSQL transaction-scoped advisory locks order the writers (SQLite serialises writers
already: ``BEGIN IMMEDIATE``); docs/pricing.md, "Concurrency", has the whole story. Adding
deltas to the rollups takes the rollups lock *shared* and a lock per trust: the upserts
commute, so a long import and the deliveries to other trusts add theirs side by side, and only
a rebuild of the rollups (which takes the rollups lock exclusive) waits for them all. The
default-window caches are written under the caches lock, exclusive, from a writer's first
refresh to its commit, so concurrent writers cannot lose each other's updates there.
"""

from __future__ import annotations

import calendar
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from itertools import islice
from threading import BoundedSemaphore
from typing import Any

from sqlalchemy import Date, Select, cast, delete, func, insert, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..catalog import service as catalog
from ..db import among, utcnow
from . import bulk
from . import method as m
from .models import (
    DailyTotal,
    MonthlyTotal,
    PricingState,
    ProductStats,
    PurchaseRecord,
    PurchaseStatus,
    StatsTotal,
    TrustWindowTotal,
)

# PostgreSQL advisory lock keys
ROLLUPS_LOCK_KEY = 0x7072_6963  # "pric": shared to add to the rollups, exclusive to rebuild them
TRUST_LOCK_CLASS = 0x7072_7472  # "prtr", with a trust id's hash: one writer of its rollup rows
CACHES_LOCK_KEY = 0x7072_6377  # "prcw": exclusive to write the default-window caches
REBUILD_POLL_SECONDS = 1.0
CHUNK = 500
PRODUCT_CHUNK = 5000  # ids per statement (SQLite takes up to 32,766 parameters)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


# --- windows ---------------------------------------------------------------------------------


def today_utc() -> date:
    return utcnow().date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


@dataclass(frozen=True)
class Window:
    """An inclusive range of order dates."""

    start: date
    end: date

    @classmethod
    def default(cls, today: date | None = None) -> Window:
        end = today or today_utc()
        return cls(end - timedelta(days=m.WINDOW_DAYS - 1), end)

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError("a window's start must not be after its end")

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def split(self) -> tuple[tuple[date, date] | None, list[tuple[date, date]]]:
        """Whole months inside the window (first and last month start), and the edge day
        ranges not covered by them."""
        first_full = self.start if self.start.day == 1 else month_end(self.start) + timedelta(1)
        last_full_end = (
            self.end if self.end == month_end(self.end) else month_start(self.end) - timedelta(1)
        )
        if first_full > last_full_end:
            return None, [(self.start, self.end)]
        edges = []
        if self.start < first_full:
            edges.append((self.start, first_full - timedelta(1)))
        if last_full_end < self.end:
            edges.append((last_full_end + timedelta(1), self.end))
        return (first_full, month_start(last_full_end)), edges


def window_totals(
    window: Window,
    *,
    product_ids: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    trust_id: str | None = None,
) -> Select[Any]:
    """``(product_id, trust_id, units, spend_pence)`` per pair over ``window``, summed from the
    monthly rollup (whole months) and the daily rollup (edge days)."""
    months, edges = window.split()
    parts = []

    def restrict(stmt: Select[Any], table: Any) -> Select[Any]:
        if product_ids is not None:
            stmt = stmt.where(table.product_id.in_(product_ids))
        if pairs is not None:
            stmt = stmt.where(tuple_(table.product_id, table.trust_id).in_(pairs))
        if trust_id is not None:
            stmt = stmt.where(table.trust_id == trust_id)
        return stmt

    if months is not None:
        parts.append(
            restrict(
                select(
                    MonthlyTotal.product_id,
                    MonthlyTotal.trust_id,
                    MonthlyTotal.units,
                    MonthlyTotal.spend_pence,
                ).where(MonthlyTotal.month.between(*months)),
                MonthlyTotal,
            )
        )
    if edges:
        parts.append(
            restrict(
                select(
                    DailyTotal.product_id,
                    DailyTotal.trust_id,
                    DailyTotal.units,
                    DailyTotal.spend_pence,
                ).where(or_(*(DailyTotal.day.between(a, b) for a, b in edges))),
                DailyTotal,
            )
        )
    union = parts[0].union_all(*parts[1:]).subquery() if len(parts) > 1 else parts[0].subquery()
    return select(
        union.c.product_id,
        union.c.trust_id,
        func.sum(union.c.units).label("units"),
        func.sum(union.c.spend_pence).label("spend_pence"),
    ).group_by(union.c.product_id, union.c.trust_id)


def raw_window_totals(window: Window) -> Select[Any]:
    """``(product_id, trust_id, units, spend_pence)`` per pair over ``window``, straight from
    the benchmarked raw lines: the per-trust aggregation itself, for the full refresh."""
    r = PurchaseRecord
    return (
        select(
            r.product_id,
            r.trust_id,
            func.sum(cast(r.quantity, TrustWindowTotal.units.type) * r.units_per_pack).label(
                "units"
            ),
            func.sum(r.total_price_pence).label("spend_pence"),
        )
        .where(
            r.status == PurchaseStatus.MATCHED,
            r.benchmark_excluded.is_(False),
            r.order_date.between(window.start, window.end),
        )
        .group_by(r.product_id, r.trust_id)
        .order_by(r.product_id, r.trust_id)
    )


# --- dialect helpers --------------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _month_of(session: Session, column: Any) -> Any:
    if _dialect(session) == "postgresql":
        return cast(func.date_trunc("month", column), Date)
    return func.date(column, "start of month")


def share_rollups(session: Session, trust_ids: Iterable[str]) -> None:
    """Let this transaction add deltas to these trusts' rollup rows beside the writers of
    other trusts'; a writer of the same trust's rows, and a rebuild of the rollups, wait for
    it (re-entrant within a transaction, like the locks below). Rollup rows are keyed by
    trust, so two writers never wait for each other's rows while holding the caches lock."""
    if _dialect(session) != "postgresql":
        return
    session.execute(select(func.pg_advisory_xact_lock_shared(ROLLUPS_LOCK_KEY)))
    for trust_id in sorted(set(trust_ids)):
        session.execute(
            select(func.pg_advisory_xact_lock(TRUST_LOCK_CLASS, func.hashtext(trust_id)))
        )


def lock_rollups(session: Session, on_wait: Callable[[], None] | None = None) -> None:
    """Keep every other rollup writer out until this transaction ends (a rebuild). It asks
    again every ``REBUILD_POLL_SECONDS`` rather than queueing: a queued exclusive request
    would make every new writer (an order delivery) queue behind it for as long as an import
    runs. ``on_wait`` is called once, if it has to wait."""
    if _dialect(session) != "postgresql":
        return
    attempt = select(func.pg_try_advisory_xact_lock(ROLLUPS_LOCK_KEY))
    waited = False
    while not session.execute(attempt).scalar():
        if on_wait and not waited:
            on_wait()
        waited = True
        time.sleep(REBUILD_POLL_SECONDS)


def lock_caches(session: Session) -> None:
    """Serialise the writers of the default-window caches until this transaction ends."""
    if _dialect(session) == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(CACHES_LOCK_KEY)))


def chunks(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- incremental changes ----------------------------------------------------------------------


class ChangesLost(RuntimeError):
    """A ``Changes`` used again after one of its writes failed."""


class Changes:
    """Deltas to the rollups collected while purchase lines change, and the (product, trust)
    pairs whose default-window totals they touch.

    ``flush`` applies the deltas to the rollups (so a long import keeps memory flat) and keeps
    their sum per pair for the default window; ``refresh`` then brings the caches up to date.
    Past ``MAX_PAIRS`` touched pairs it stops remembering them and the caches are rebuilt
    whole instead.

    A write that fails leaves the collected deltas half applied (the rollups' part handed
    over, the window's kept, or the reverse), so the object is then spent: using it again
    raises ``ChangesLost`` instead of applying the rest twice or not at all. The transaction
    is to be rolled back and the lines changed again with new ``Changes``.
    """

    MAX_PAIRS = 100_000

    def __init__(self, today: date | None = None):
        self.window = Window.default(today)
        self.today = self.window.end
        self._deltas: dict[tuple[str, str, date], list[int]] = {}
        # (product, trust) -> [units, spend] added to the default window, once flushed
        self.window_deltas: dict[tuple[str, str], list[int]] = {}
        self.overflow = False
        self._lost = False

    def __bool__(self) -> bool:
        return bool(self._deltas or self.window_deltas or self.overflow)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (product, trust) pairs whose default-window totals the flushed deltas touch."""
        return sorted(self.window_deltas)

    def add(
        self, product_id: str, trust_id: str, day: date, units: int, spend_pence: int, sign: int = 1
    ) -> None:
        self.check_usable()
        delta = self._deltas.setdefault((product_id, trust_id, day), [0, 0, 0])
        delta[0] += sign * units
        delta[1] += sign * spend_pence
        delta[2] += sign

    def add_record(self, record: PurchaseRecord, sign: int = 1) -> None:
        """Count (sign 1) or uncount (sign -1) a line, if it is benchmarked."""
        if record.status == PurchaseStatus.MATCHED and not record.benchmark_excluded:
            assert record.product_id is not None
            assert record.units is not None
            self.add(
                record.product_id,
                record.trust_id,
                record.order_date,
                record.units,
                record.total_price_pence,
                sign,
            )

    @property
    def pending(self) -> int:
        return len(self._deltas)

    def check_usable(self) -> None:
        if self._lost:
            raise ChangesLost(
                "these changes were half applied by a write that failed: roll the transaction "
                "back and make the changes again"
            )

    @contextmanager
    def spent_on_failure(self) -> Iterator[None]:
        """Mark these changes spent if the block fails (see the class's docstring)."""
        try:
            yield
        except BaseException:
            self._lost = True
            raise

    def flush(self, session: Session) -> None:
        """Apply the collected deltas to the daily and monthly rollups."""
        with self.spent_on_failure():
            for write in self.flush_later(session):
                write()

    def flush_later(self, session: Session) -> list[Callable[[], None]]:
        """``flush``, but return the rollups' writes instead of making them: the locks are
        taken and the window's deltas kept now, the calls (in order, with the session not
        otherwise in use) write them."""
        self.check_usable()
        if not self._deltas:
            return []
        share_rollups(session, (trust_id for _, trust_id, _ in self._deltas))
        daily = sorted(self._deltas.items())
        monthly: dict[tuple[str, str, date], list[int]] = {}
        for (product_id, trust_id, day), (units, spend, lines) in daily:
            total = monthly.setdefault((product_id, trust_id, month_start(day)), [0, 0, 0])
            total[0] += units
            total[1] += spend
            total[2] += lines
            if not self.overflow and self.window.contains(day):
                pair = self.window_deltas.setdefault((product_id, trust_id), [0, 0])
                pair[0] += units
                pair[1] += spend
                if len(self.window_deltas) > self.MAX_PAIRS:
                    self.overflow = True
                    self.window_deltas.clear()
        self._deltas.clear()
        return [
            partial(_add_to_rollup, session, model, key_name, rows)
            for model, key_name, rows in (
                (DailyTotal, "day", daily),
                (MonthlyTotal, "month", sorted(monthly.items())),
            )
        ]


def _add_to_rollup(
    session: Session,
    model: type[DailyTotal] | type[MonthlyTotal],
    key_name: str,
    rows: Sequence[tuple[tuple[str, str, date], list[int]]],
) -> None:
    """Add ``((product, trust, period), [units, spend, lines])`` deltas to a rollup; a row
    left with no lines goes."""
    values = [(p, t, k, u, s, n) for (p, t, k), (u, s, n) in rows if (u, s, n) != (0, 0, 0)]
    bulk.add_totals(session, model.__tablename__, key_name, values)
    emptied = [v[:3] for v in values if v[5] < 0]
    key = getattr(model, key_name)
    for chunk in chunks(emptied):
        session.execute(
            delete(model).where(
                tuple_(model.product_id, model.trust_id, key).in_(chunk), model.lines <= 0
            )
        )


def refresh(session: Session, changes: Changes) -> None:
    """Apply ``changes`` and bring the default-window caches up to date, incrementally.

    In the usual case (the window has not moved, the changes are few) the rollups' writes
    wait until the touched products' totals have been read, and then run while their
    statistics are computed: nothing in between reads the rollups."""
    changes.check_usable()
    with _collector_paused(), changes.spent_on_failure():
        rollup_writes = changes.flush_later(session)
        # The window rolls before the writes: it finds the pairs to re-sum through the daily
        # rows of the days leaving it, which a write removing a pair's last line would delete.
        state, outcome = ensure_current(session, changes.today)
        if not (changes.window_deltas and not changes.overflow and outcome == "current"):
            for write in rollup_writes:
                write()
            rollup_writes = []
        window = Window(state.window_from, state.window_to)
        if outcome == "rebuilt":
            pass  # the caches were just built from the raw lines, changes included
        elif changes.overflow:
            rebuild_caches(session, window)
        elif changes.window_deltas:
            pairs = changes.pairs
            if outcome in ("rolled", "ahead"):
                # the window moved since the deltas were collected: these pairs' totals are
                # re-summed from the rollups for the window the caches describe
                recompute_pairs(session, window, pairs)
            else:
                add_window_deltas(session, changes.window_deltas)
            recompute_products(
                session, sorted({p for p, _ in pairs}), before_statistics=rollup_writes
            )
        changes.window_deltas.clear()
        changes.overflow = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a refresh, which makes many small objects
    and no reference cycles worth collecting: otherwise its collections, triggered by the
    allocations alone, take a tenth or more of it. Objects without cycles are freed as always;
    the collector resumes afterwards (unless it was off). The pause is the whole process's: a
    threaded server's other requests collect nothing meanwhile, which costs them no more
    than memory held a little longer (workers run one thread unless `GUNICORN_THREADS`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def add_window_deltas(session: Session, deltas: dict[tuple[str, str], list[int]]) -> None:
    """Add per-pair deltas to the default-window totals; a pair left with no units goes."""
    values = [(p, t, u, s) for (p, t), (u, s) in sorted(deltas.items()) if (u, s) != (0, 0)]
    bulk.add_window_totals(session, values)
    if any(u < 0 for _, _, u, _ in values):
        session.execute(delete(TrustWindowTotal).where(TrustWindowTotal.units <= 0))


def ensure_current(session: Session, today: date | None = None) -> tuple[PricingState, str]:
    """Make the caches describe the default window ending ``today``: create them, or roll the
    window forward by recomputing only the pairs bought on the days that left or entered it.
    Returns the state and what happened: ``current``, ``rolled`` or ``rebuilt`` (whole), or
    ``ahead`` when the caches already describe a later window (they never move back)."""
    lock_caches(session)
    window = Window.default(today)
    state = session.get(PricingState, 1, populate_existing=True)
    if state is None:
        state = PricingState(id=1, window_from=window.start, window_to=window.end)
        session.add(state)
        session.flush()
        rebuild_caches(session, window)
        return state, "rebuilt"
    old = Window(state.window_from, state.window_to)
    if old == window:
        return state, "current"
    if window.end < old.end:
        # a writer that started before midnight: another one has moved the window on since
        return state, "ahead"
    state.window_from, state.window_to = window.start, window.end
    if window.start < old.start or (window.start - old.start).days > 62:
        rebuild_caches(session, window)
        session.flush()
        return state, "rebuilt"
    ranges = [(old.start, window.start - timedelta(1))] if window.start > old.start else []
    if window.end > old.end:
        ranges.append((old.end + timedelta(1), window.end))
    pairs = sorted(
        tuple(row)
        for row in session.execute(
            select(DailyTotal.product_id, DailyTotal.trust_id)
            .where(or_(*(DailyTotal.day.between(a, b) for a, b in ranges)))
            .distinct()
        )
    )
    recompute_pairs(session, window, pairs)
    recompute_products(session, sorted({p for p, _ in pairs}))
    session.flush()
    return state, "rolled"


def recompute_pairs(session: Session, window: Window, pairs: Sequence[tuple[str, str]]) -> None:
    """Recompute the default-window totals of these (product, trust) pairs from the rollups.
    Pairs are taken a trust at a time so that each query is an index range on the primary key
    (product, trust, day) rather than a scan for row values."""
    by_trust: dict[str, list[str]] = {}
    for product_id, trust_id in pairs:
        by_trust.setdefault(trust_id, []).append(product_id)
    for trust_id, product_ids in sorted(by_trust.items()):
        for chunk in chunks(sorted(product_ids)):
            sums = session.execute(
                window_totals(window, product_ids=chunk, trust_id=trust_id)
            ).all()
            session.execute(
                delete(TrustWindowTotal).where(
                    TrustWindowTotal.trust_id == trust_id, TrustWindowTotal.product_id.in_(chunk)
                )
            )
            values = [
                {"product_id": p, "trust_id": t, "units": int(u), "spend_pence": int(s)}
                for p, t, u, s in sums
                if u and u > 0
            ]
            if values:
                session.execute(insert(TrustWindowTotal), values)


def recompute_products(
    session: Session,
    product_ids: Sequence[str],
    before_statistics: Sequence[Callable[[], None]] = (),
) -> None:
    """Recompute these products' cached distributions from their per-trust window totals.
    ``before_statistics``: database writes (reading nothing this reads) that run, in order,
    while the first products' statistics are computed, before any of them is written."""
    totals = TrustWindowTotal.__table__
    pending = list(before_statistics)
    for chunk in chunks(sorted(product_ids), PRODUCT_CHUNK):
        where = among(session, totals.c.product_id, chunk)
        rows = session.connection().execute(_columns_query(session, totals, where))
        columns = list(_parse_columns(rows, as_text=_dialect(session) != "postgresql"))
        removed = session.execute(
            delete(ProductStats)
            .where(among(session, ProductStats.product_id, chunk))
            .returning(*(getattr(ProductStats, c) for c in SAVED_COLUMNS))
        ).all()
        catalogue = catalog.product_summaries(session, chunk)
        added: list[dict[str, Any]] = []
        with _DatabaseThread(session) as database:
            for write in pending:
                database.submit(write)
            pending = []
            _write_stats(session, columns, catalogue, database, written=added)
        _adjust_totals(
            session,
            [r for r in removed if not r.benchmark_excluded],
            [tuple(v[c] for c in SAVED_COLUMNS) for v in added if not v["benchmark_excluded"]],
        )
    for write in pending:  # no products at all
        write()


ProductColumns = tuple[str, list[int], list[int]]  # product id, its trusts' units and spends


def _columns_query(session: Session, totals: Any, where: Any = None) -> Select[Any]:
    """Each product's trusts' units and spends in ``totals`` (the rows matching ``where``) as
    two parallel lists, aggregated by the database so that one row per product comes back
    (PostgreSQL ``array_agg``; SQLite ``group_concat``, whose two lists follow the same row
    order)."""
    c = totals.c
    aggregate = func.array_agg if _dialect(session) == "postgresql" else func.group_concat
    stmt = select(c.product_id, aggregate(c.units), aggregate(c.spend_pence))
    return (stmt if where is None else stmt.where(where)).group_by(c.product_id)


COLUMNS_PER_FETCH = 1000


def pair_totals(
    session: Session,
    window: Window,
    *,
    product_ids: Sequence[str] | None = None,
    trust_id: str | None = None,
) -> Select[Any]:
    """``(product_id, trust_id, units, spend_pence)`` per pair over ``window`` (these products,
    this trust's): the default-window totals when the caches describe ``window``, otherwise
    summed from the rollups. Pairs with no units are left out."""
    if cached_window(session) == window:
        cached = TrustWindowTotal.__table__.c
        stmt = select(cached.product_id, cached.trust_id, cached.units, cached.spend_pence)
        if product_ids is not None:
            stmt = stmt.where(cached.product_id.in_(product_ids))
        if trust_id is not None:
            stmt = stmt.where(cached.trust_id == trust_id)
        return stmt.where(cached.units > 0)
    pairs = window_totals(window, product_ids=product_ids, trust_id=trust_id).subquery()
    return select(
        pairs.c.product_id,
        pairs.c.trust_id,
        cast(pairs.c.units, TrustWindowTotal.units.type).label("units"),
        cast(pairs.c.spend_pence, TrustWindowTotal.spend_pence.type).label("spend_pence"),
    ).where(pairs.c.units > 0)


def window_columns(
    session: Session, window: Window, product_ids: Sequence[str] | None = None
) -> Iterator[ProductColumns]:
    """Each product's trusts' units and spends over ``window`` (all products, or these), one
    product at a time as the database streams them (``pair_totals``): the columns
    ``summarise_many`` takes, for any window."""
    totals = pair_totals(session, window, product_ids=product_ids).subquery()
    stmt = _columns_query(session, totals)
    rows = session.connection().execute(stmt.execution_options(yield_per=COLUMNS_PER_FETCH))
    yield from _parse_columns(rows, as_text=_dialect(session) != "postgresql")


def trust_totals(session: Session, window: Window, trust_id: str) -> dict[str, tuple[int, int]]:
    """The products one trust bought over ``window``, each with its units and spend."""
    stmt = pair_totals(session, window, trust_id=trust_id)
    return {p: (int(units), int(spend)) for p, _, units, spend in session.execute(stmt)}


def _parse_columns(rows: Iterable[Any], as_text: bool) -> Iterator[ProductColumns]:
    """``_columns_query``'s rows as ``ProductColumns`` (``as_text``: SQLite's lists)."""
    if not as_text:
        for product_id, units, spends in rows:
            yield product_id, units, spends
        return
    for product_id, units, spends in rows:
        yield product_id, [int(v) for v in units.split(",")], [int(v) for v in spends.split(",")]


SAVINGS_COLUMNS = ("savings_p10_pence", "savings_p25_pence", "savings_median_pence")
# what pricing_stats_totals sums a product's row by, in _adjust_totals's order
SAVED_COLUMNS = ("category_id", "n_trusts", *SAVINGS_COLUMNS, "benchmark_excluded")


def _adjust_totals(session: Session, removed: Iterable[Any], added: Iterable[Any]) -> None:
    """Take the ``removed`` products' counted savings out of ``pricing_stats_totals`` and add
    the ``added`` ones' (rows in ``SAVED_COLUMNS`` order), in one upsert."""
    by_n: dict[tuple[str, int], list[int]] = {}
    for sign, rows in ((-1, removed), (1, added)):
        for category_id, n_trusts, *savings, _excluded in rows:
            total = by_n.setdefault((category_id, n_trusts), [0, 0, 0, 0])
            total[0] += sign
            for i, value in enumerate(savings):
                total[i + 1] += sign * value
    if not by_n:
        return
    table = StatsTotal.__table__
    values = [
        {
            "category_id": c,
            "n_trusts": n,
            "products": t[0],
            **dict(zip(SAVINGS_COLUMNS, t[1:], strict=True)),
        }
        for (c, n), t in sorted(by_n.items())
    ]
    stmt = (pg_insert if _dialect(session) == "postgresql" else sqlite_insert)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["category_id", "n_trusts"],
        set_={c: table.c[c] + stmt.excluded[c] for c in ("products", *SAVINGS_COLUMNS)},
    )
    session.execute(stmt, values)
    session.execute(delete(StatsTotal).where(StatsTotal.products <= 0))


STATS_BATCH = 1000  # products computed and written together


class _DatabaseThread:
    """Database calls made one after another beside the caller's computation: in a second
    thread on PostgreSQL, where the server works on another core meanwhile; at once, in the
    caller's thread, on SQLite, which runs in this process, so that two threads would only
    contend for the interpreter. While calls are pending the caller must not use the session.
    At most ``MAX_PENDING`` calls wait at a time (``submit`` blocks until one finishes), so
    that the data handed to them stays bounded however far the caller runs ahead. After a
    call fails the ones queued after it are skipped, and the failure is raised by the next
    ``submit`` or on leaving."""

    MAX_PENDING = 32

    def __init__(self, session: Session):
        overlap = _dialect(session) == "postgresql"
        self._pool = ThreadPoolExecutor(1, "pricing-db") if overlap else None
        self._slots = BoundedSemaphore(self.MAX_PENDING)
        self._error: BaseException | None = None

    def __enter__(self) -> _DatabaseThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        failed = exc_info[1] is not None
        if self._pool is not None:
            if failed:  # the caller gave up: what is still queued would be rolled back anyway
                self._error = self._error or RuntimeError("abandoned")
            interrupted = False
            while True:  # the caller may roll back only once the thread is done with the session
                try:
                    self._pool.shutdown(wait=True, cancel_futures=failed)
                    break
                except KeyboardInterrupt:
                    interrupted = failed = True
            if interrupted:
                raise KeyboardInterrupt
        if self._error is not None and not failed:
            raise self._error

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._pool is None:
            call(*args)
            return
        self._slots.acquire()
        self._pool.submit(self._run, call, args)

    def _run(self, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            if self._error is None:
                call(*args)
        except BaseException as error:
            self._error = error
        finally:
            self._slots.release()


def _write_stats(
    session: Session,
    products: Iterable[ProductColumns],
    catalogue: Mapping[str, catalog.ProductSummary],
    database: _DatabaseThread,
    *,
    into: str = bulk.STATS_TABLE,
    progress: Callable[[int], None] | None = None,
    written: list[dict[str, Any]] | None = None,
) -> int:
    """Compute ``pricing_product_stats`` rows for ``products`` (held in memory: nothing here
    reads the database) that are in ``catalogue``, a batch at a time, and have ``database``
    insert each batch (``into`` that table or its rebuilt replacement) while the next is
    computed; keep the rows in ``written``, when given. Returns the number of rows."""
    count = 0
    for batch in chunks(products, STATS_BATCH):
        known = [item for item in batch if item[0] in catalogue]
        summaries = m.summarise_many([(units, spends) for _, units, spends in known])
        values = [
            stats_values(product_id, summary, catalogue[product_id])
            for (product_id, _, _), summary in zip(known, summaries, strict=True)
        ]
        database.submit(bulk.insert_stats, session, values, into)
        count += len(values)
        if written is not None:
            written.extend(values)
        if progress:
            progress(len(batch))
    return count


def stats_values(
    product_id: str, summary: m.Summary, product: catalog.ProductSummary
) -> dict[str, Any]:
    """One ``pricing_product_stats`` row: the distribution under the default method, and the
    counted savings for each benchmark centile (0 for an excluded product)."""
    dist = summary.distribution
    return {
        "product_id": product_id,
        "product_name": product.name,
        "category_id": product.category_id,
        "benchmark_excluded": product.benchmark_excluded,
        "benchmark_excluded_reason": product.benchmark_excluded_reason,
        "n_trusts": dist.n_trusts,
        "units": summary.units,
        "spend_pence": summary.spend_pence,
        "min_price": dist.min,
        "p10_price": dist.p10,
        "p25_price": dist.p25,
        "median_price": dist.median,
        "p75_price": dist.p75,
        "max_price": dist.max,
        "mean_price": dist.mean,
        "spread": dist.spread,
        "spread_sort": float(dist.spread),
        "outliers": summary.outliers,
        **{
            f"savings_{name}_pence": 0 if product.benchmark_excluded else pence
            for name, pence in summary.savings_pence.items()
        },
    }


# --- full rebuilds ----------------------------------------------------------------------------


def rebuild_caches(session: Session, window: Window, progress: Progress = _no_progress) -> int:
    """Rebuild both default-window caches from the raw lines. Returns the products written.

    The window totals are summed straight from the raw lines into a new table; every
    product's totals are then read back in one statement, whose whole result the driver
    holds, so that on PostgreSQL the new table's indexes are built (and the statistics
    written) beside the statistics being computed."""
    window_table, stats_table = TrustWindowTotal.__table__, ProductStats.__table__
    with (
        bulk.rebuilt_table(session, window_table, raw_window_totals(window)) as totals,
        bulk.rebuilt_table(session, stats_table) as stats,
    ):
        progress("window", 1, 1)
        catalogue = catalog.all_product_summaries(session)
        as_text = _dialect(session) != "postgresql"
        sql = str(_columns_query(session, totals.table).compile(session.get_bind()))
        result = session.connection().exec_driver_sql(sql)
        try:
            # psycopg holds the finished result on its cursor, so reading its rows here shares
            # nothing with the statements the second thread runs meanwhile; sqlite3 steps its
            # statement as it is read (and counts no rows), so its rows are fetched first.
            rows = result.all() if as_text else result.cursor
            products = len(rows) if as_text else result.rowcount
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                progress("statistics", done, products)

            with _DatabaseThread(session) as database:
                database.submit(totals.index)
                written = _write_stats(
                    session,
                    _parse_columns(rows, as_text),
                    catalogue,
                    database,
                    into=stats.name,
                    progress=step,
                )
        finally:
            result.close()
        stats.index()
        bulk.lock_for_swap(session, [window_table, stats_table])
    rebuild_totals(session)
    return written


def rebuild_totals(session: Session) -> None:
    """``pricing_stats_totals`` from ``pricing_product_stats`` in one statement."""
    session.execute(delete(StatsTotal))
    session.execute(
        insert(StatsTotal).from_select(
            ["category_id", "n_trusts", "products", *SAVINGS_COLUMNS],
            select(
                ProductStats.category_id,
                ProductStats.n_trusts,
                func.count(),
                *(func.sum(getattr(ProductStats, c)) for c in SAVINGS_COLUMNS),
            )
            .where(ProductStats.benchmark_excluded.is_(False))
            .group_by(ProductStats.category_id, ProductStats.n_trusts),
        )
    )


def rebuild_rollups(session: Session, on_wait: Callable[[], None] | None = None) -> None:
    """Recompute the daily and monthly rollups from the raw purchase lines, once the writers
    adding to them have committed (``on_wait``: see ``lock_rollups``)."""
    lock_rollups(session, on_wait)
    session.execute(delete(DailyTotal))
    session.execute(delete(MonthlyTotal))
    r = PurchaseRecord
    session.execute(
        insert(DailyTotal).from_select(
            ["product_id", "trust_id", "day", "units", "spend_pence", "lines"],
            select(
                r.product_id,
                r.trust_id,
                r.order_date,
                func.sum(cast(r.quantity, DailyTotal.units.type) * r.units_per_pack),
                func.sum(r.total_price_pence),
                func.count(),
            )
            .where(r.status == PurchaseStatus.MATCHED, r.benchmark_excluded.is_(False))
            .group_by(r.product_id, r.trust_id, r.order_date)
            .order_by(r.product_id, r.trust_id, r.order_date),  # append to the key in order
        )
    )
    month = _month_of(session, DailyTotal.day)
    session.execute(
        insert(MonthlyTotal).from_select(
            ["product_id", "trust_id", "month", "units", "spend_pence", "lines"],
            select(
                DailyTotal.product_id,
                DailyTotal.trust_id,
                month,
                func.sum(DailyTotal.units),
                func.sum(DailyTotal.spend_pence),
                func.sum(DailyTotal.lines),
            )
            .group_by(DailyTotal.product_id, DailyTotal.trust_id, month)
            .order_by(DailyTotal.product_id, DailyTotal.trust_id, month),
        )
    )
    bulk.analyse(session, DailyTotal.__tablename__, MonthlyTotal.__tablename__)


def refresh_all(
    session: Session,
    today: date | None = None,
    progress: Progress = _no_progress,
    *,
    rebuild: bool = False,
) -> int:
    """The full refresh: both caches from the raw lines (and, with ``rebuild``, the rollups
    too, which every line change already keeps exact). Returns the number of products with
    statistics."""
    if rebuild:  # first, as every writer takes the rollups lock before the caches lock
        progress("rollups", 0, 1)
        rebuild_rollups(session, on_wait=lambda: progress("waiting", 0, 1))
        progress("rollups", 1, 1)
    lock_caches(session)
    window = Window.default(today)
    state = session.get(PricingState, 1, populate_existing=True)
    if state is None:
        state = PricingState(id=1, window_from=window.start, window_to=window.end)
        session.add(state)
    state.window_from, state.window_to = window.start, window.end
    state.full_refresh_at = utcnow()
    session.flush()
    with _collector_paused():
        return rebuild_caches(session, window, progress)


def cached_window(session: Session) -> Window | None:
    state = session.get(PricingState, 1)
    return None if state is None else Window(state.window_from, state.window_to)
