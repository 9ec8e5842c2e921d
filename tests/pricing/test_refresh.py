"""The materialised statistics: whatever sequence of changes, the incrementally maintained
rollups and caches equal a full refresh from the raw lines; the default window rolls forward
as days pass."""

from __future__ import annotations

import gc
import random
import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from marketplace.catalog.service import ProductSummary
from marketplace.pricing import bulk, rollups, service
from marketplace.pricing.models import (
    DailyTotal,
    MonthlyTotal,
    PricingState,
    ProductStats,
    PurchaseRecord,
    StatsTotal,
    TrustWindowTotal,
)
from tests.support import SYSTEM

from .conftest import TODAY, days_ago, line, make_gtin


def snapshot(session):
    def rows(model, *columns):
        return sorted(tuple(getattr(r, c) for c in columns) for r in session.scalars(select(model)))

    return {
        "daily": rows(DailyTotal, "product_id", "trust_id", "day", "units", "spend_pence", "lines"),
        "monthly": rows(
            MonthlyTotal, "product_id", "trust_id", "month", "units", "spend_pence", "lines"
        ),
        "window": rows(TrustWindowTotal, "product_id", "trust_id", "units", "spend_pence"),
        "totals": rows(
            StatsTotal,
            "category_id",
            "n_trusts",
            "products",
            "savings_p10_pence",
            "savings_p25_pence",
            "savings_median_pence",
        ),
        "stats": rows(
            ProductStats,
            "product_id",
            "n_trusts",
            "units",
            "spend_pence",
            "min_price",
            "p10_price",
            "p25_price",
            "median_price",
            "p75_price",
            "max_price",
            "mean_price",
            "spread",
            "outliers",
            "savings_p10_pence",
            "savings_p25_pence",
            "savings_median_pence",
            "benchmark_excluded",
        ),
    }


def test_incremental_refresh_equals_full_refresh(world, import_as, session_factory):
    rng = random.Random(7)
    products = [world.gloves, world.stockings]
    for round_ in range(3):
        for t in range(6):
            rows = []
            for n in range(rng.randint(1, 6)):
                product = rng.choice(products)
                kind = rng.random()
                values = {
                    "gtin": make_gtin(1 if product is world.gloves else 2),
                    "units_per_pack": rng.choice(["", 1, 50, 100]),
                }
                if kind < 0.2:
                    values = {"description": "unknown thing", "units_per_pack": rng.choice([1, 10])}
                rows.append(
                    line(
                        f"PO-{round_}-{t}",
                        n + 1,
                        when=days_ago(rng.choice([0, 3, 40, 100, 200, 364, 365, 400])),
                        quantity=rng.randint(1, 20),
                        total_price_pence=rng.randint(50, 50_000),
                        **values,
                    )
                )
            import_as(world.trust(t), rows)
    with session_factory.begin() as session:
        records = session.scalars(select(PurchaseRecord).order_by(PurchaseRecord.id)).all()
        unmatched = [r for r in records if r.product_id is None]
        matched = [r for r in records if r.product_id is not None]
        for r in unmatched[:3]:
            service.match_purchase(session, SYSTEM, r.id, world.stockings.id)
        for r in matched[:4]:
            service.set_benchmark_exclusion(session, SYSTEM, r.id, excluded=True, reason="special")
        service.set_benchmark_exclusion(session, SYSTEM, matched[0].id, excluded=False)
        service.match_purchase(session, SYSTEM, matched[5].id, world.spare.id)  # re-matched
        service.record_marketplace_purchase(
            session,
            trust_id=world.trust(2).id,
            order_reference="ord_1",
            line=1,
            order_date=days_ago(2),
            product_id=world.gloves.id,
            supplier_id=None,
            quantity=3,
            total_price_pence=900,
        )
    with session_factory() as session:
        incremental = snapshot(session)
    assert incremental["stats"], "the scenario should produce statistics"
    with session_factory.begin() as session:
        rollups.refresh_all(session, rebuild=True)
    with session_factory() as session:
        full = snapshot(session)
    assert incremental == full


def test_the_full_refresh_reads_the_raw_lines_and_rebuilds_rollups_only_when_asked(
    world, import_as, session_factory
):
    for t in range(3):
        import_as(
            world.trust(t),
            [
                line("PO-A", 1, gtin=make_gtin(1), total_price_pence=300 + t, when=days_ago(5)),
                line("PO-A", 2, gtin=make_gtin(2), total_price_pence=900 - t, when=days_ago(40)),
            ],
        )
    with session_factory() as session:
        before = snapshot(session)
    # damage every derived table: the caches must come back from the raw lines alone
    with session_factory.begin() as session:
        for model in (DailyTotal, MonthlyTotal, TrustWindowTotal, ProductStats, StatsTotal):
            session.execute(model.__table__.delete())
    with session_factory.begin() as session:
        assert rollups.refresh_all(session) == 2
    with session_factory() as session:
        caches_only = snapshot(session)
    assert caches_only["daily"] == caches_only["monthly"] == []
    assert {k: v for k, v in caches_only.items() if k not in ("daily", "monthly")} == {
        k: v for k, v in before.items() if k not in ("daily", "monthly")
    }
    with session_factory.begin() as session:
        rollups.refresh_all(session, rebuild=True)
    with session_factory() as session:
        assert snapshot(session) == before


def test_a_window_delta_that_removes_a_trust_drops_its_row(world, import_as, session_factory):
    for t in range(3):
        import_as(world.trust(t), [line("PO-A", 1, gtin=make_gtin(1), total_price_pence=300 + t)])
    with session_factory.begin() as session:
        record = session.scalars(
            select(PurchaseRecord).where(PurchaseRecord.trust_id == world.trust(0).id)
        ).one()
        service.set_benchmark_exclusion(session, SYSTEM, record.id, excluded=True, reason="one-off")
    with session_factory() as session:
        window = {r.trust_id for r in session.scalars(select(TrustWindowTotal))}
        assert window == {world.trust(1).id, world.trust(2).id}
        assert session.scalar(select(ProductStats.n_trusts)) == 2


def test_the_default_window_rolls_forward(world, import_as, session_factory, client):
    rows = [
        line("PO-A", 1, gtin=make_gtin(1), quantity=1, total_price_pence=300, when=days_ago(364)),
        line("PO-A", 2, gtin=make_gtin(1), quantity=1, total_price_pence=300, when=days_ago(10)),
    ]
    for t in range(3):
        import_as(world.trust(t), rows)
    with session_factory() as session:
        assert rollups.cached_window(session) == rollups.Window.default()
        units = {r.trust_id: r.units for r in session.scalars(select(TrustWindowTotal))}
        assert set(units.values()) == {200}
    # two days later the first line has left the window
    later = TODAY + timedelta(days=2)
    with session_factory.begin() as session:
        state, outcome = rollups.ensure_current(session, later)
        assert outcome == "rolled"
        assert state.window_to == later
    with session_factory() as session:
        rolled = snapshot(session)
    with session_factory.begin() as session:
        rollups.refresh_all(session, today=later, rebuild=True)
    with session_factory() as session:
        assert snapshot(session) == rolled
        assert {r.units for r in session.scalars(select(TrustWindowTotal))} == {100}
        assert session.get(PricingState, 1).full_refresh_at is not None


def test_a_change_on_a_stale_window_rolls_it_and_stays_exact(world, import_as, session_factory):
    old_line = line("PO-A", 1, gtin=make_gtin(1), total_price_pence=500, when=days_ago(365))
    for t in range(3):
        import_as(world.trust(t), [old_line])
    with session_factory.begin() as session:  # the caches were last brought up to date 2 days ago
        state = session.get(PricingState, 1)
        state.window_from -= timedelta(days=2)
        state.window_to -= timedelta(days=2)
    import_as(world.trust(0), [line("PO-B", 1, gtin=make_gtin(1), total_price_pence=900)])
    with session_factory() as session:
        incremental = snapshot(session)
        assert rollups.cached_window(session) == rollups.Window.default()
    with session_factory.begin() as session:
        rollups.refresh_all(session, rebuild=True)
    with session_factory() as session:
        assert snapshot(session) == incremental
    assert [w[2:] for w in incremental["window"] if w[1] == world.trust(0).id] == [(100, 900)]


def test_reads_roll_a_stale_cache_before_answering(world, import_as, session_factory, client):
    for t in range(3):
        import_as(world.trust(t), [line("PO-A", 1, gtin=make_gtin(1), total_price_pence=300 + t)])
    with session_factory.begin() as session:
        state = session.get(PricingState, 1)
        state.window_from -= timedelta(days=3)
        state.window_to -= timedelta(days=3)
    body = client.get("/api/v1/price-variance").get_json()
    assert body["window"]["to"] == TODAY.isoformat()
    assert body["items"][0]["n_trusts"] == 3
    with session_factory() as session:
        assert rollups.cached_window(session) == rollups.Window.default()


def test_window_split_into_months_and_edge_days():
    from datetime import date

    w = rollups.Window(date(2026, 1, 15), date(2026, 4, 10))
    assert w.split() == (
        (date(2026, 2, 1), date(2026, 3, 1)),
        [(date(2026, 1, 15), date(2026, 1, 31)), (date(2026, 4, 1), date(2026, 4, 10))],
    )
    assert rollups.Window(date(2026, 2, 1), date(2026, 2, 28)).split() == (
        (date(2026, 2, 1), date(2026, 2, 1)),
        [],
    )
    assert rollups.Window(date(2026, 2, 3), date(2026, 2, 20)).split() == (
        None,
        [(date(2026, 2, 3), date(2026, 2, 20))],
    )
    assert rollups.Window(date(2026, 1, 31), date(2026, 3, 1)).split() == (
        (date(2026, 2, 1), date(2026, 2, 1)),
        [(date(2026, 1, 31), date(2026, 1, 31)), (date(2026, 3, 1), date(2026, 3, 1))],
    )


def test_concurrent_imports_lose_no_update(world, session_factory):
    """Two trusts import lines for the same products at the same time; the statistics end up
    exactly as a full refresh computes them (PostgreSQL: the writers' advisory lock; SQLite:
    BEGIN IMMEDIATE)."""
    import io
    import threading

    from marketplace.db import unit_of_work
    from marketplace.pricing.importer import COLUMNS

    from .conftest import csv_bytes

    def rows(t: int):
        return [
            line(
                f"PO-C{t}",
                n,
                gtin=make_gtin(1 + n % 2),
                quantity=1 + n % 5,
                total_price_pence=100 + 37 * n + t,
                when=days_ago(n % 50),
            )
            for n in range(1, 120)
        ]

    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run(t: int) -> None:
        try:
            barrier.wait()
            with unit_of_work(session_factory) as session:
                trust = service.find_trust(session, world.trust(t).ods_code)
                service.import_purchases(
                    session, SYSTEM, trust, io.BytesIO(csv_bytes(rows(t), COLUMNS)), "csv"
                )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with session_factory() as session:
        incremental = snapshot(session)
    assert len(incremental["window"]) == 6
    with session_factory.begin() as session:
        rollups.refresh_all(session, rebuild=True)
    with session_factory() as session:
        assert snapshot(session) == incremental


class _PausedImport:
    """A trust's import, in its own thread and transaction, stopped half-way: its first batch
    of lines is written and their deltas added to the rollups (as a long import's are), and it
    waits there, transaction open, until ``finish``."""

    def __init__(self, world, session_factory, monkeypatch, trust: int = 0, today=None):
        import threading

        from marketplace.db import unit_of_work
        from marketplace.pricing.importer import COLUMNS

        from .conftest import csv_bytes

        monkeypatch.setattr(service, "FLUSH_ROLLUPS_ABOVE", 0)
        self.flushed, self.release = threading.Event(), threading.Event()
        real_flush = rollups.Changes.flush

        def flush(changes, session):
            real_flush(changes, session)
            self.flushed.set()

        monkeypatch.setattr(rollups.Changes, "flush", flush)
        rows = [
            line(
                f"PO-P{trust}",
                n,
                gtin=make_gtin(1),
                quantity=2,
                total_price_pence=500 + n,
                when=days_ago(n),
            )
            for n in range(1, 21)
        ]
        data = csv_bytes(rows, COLUMNS)
        split = data.index(b"\n", len(data) // 2) + 1  # after about ten whole rows
        first_rows = data[:split].count(b"\n") - 1
        release = self.release

        class Stream:
            def __init__(self):
                self.parts = [data[:split], data[split:]]

            def read(self, size=-1):
                if not self.parts:
                    return b""
                if len(self.parts) == 1:
                    release.wait(30)
                return self.parts.pop(0)

        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                with unit_of_work(session_factory) as session:
                    org = service.find_trust(session, world.trust(trust).ods_code)
                    service.import_purchases(
                        session, SYSTEM, org, Stream(), "csv", batch_size=first_rows, today=today
                    )
            except BaseException as error:  # reported by finish
                self.errors.append(error)

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.flushed.wait(20), "the import should have added its first deltas"

    def finish(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.errors == []


def _in_thread(work):
    """Run ``work`` in a thread; returns the thread and the list its exception lands in."""
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # reported by the caller
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _deliver(session_factory, trust, reference, lines, today=None, lock_timeout=None):
    """Record delivered order lines ``(product, quantity, total)`` in one transaction, as the
    ordering domain does when a supplier order is delivered."""
    with session_factory.begin() as session:
        if lock_timeout:
            session.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
        for number, (product, quantity, total) in enumerate(lines, start=1):
            service.record_marketplace_purchase(
                session,
                trust_id=trust.id,
                order_reference=reference,
                line=number,
                order_date=(today or TODAY) - timedelta(days=1),
                product_id=product.id,
                supplier_id=None,
                quantity=quantity,
                total_price_pence=total,
                today=today,
            )


def _assert_exact(session_factory, today=None) -> None:
    with session_factory() as session:
        incremental = snapshot(session)
    with session_factory.begin() as session:
        rollups.refresh_all(session, today=today, rebuild=True)
    with session_factory() as session:
        assert snapshot(session) == incremental


def _three_trusts_bought_gloves(world, import_as) -> None:
    for t in (2, 3, 4):
        import_as(
            world.trust(t), [line(f"PO-{t}", 1, gtin=make_gtin(1), total_price_pence=300 + 40 * t)]
        )


def _needs_postgres(settings) -> None:
    if not settings.is_postgresql:
        pytest.skip("advisory and row locks are PostgreSQL's: set MARKETPLACE_TEST_DATABASE_URL")


@pytest.mark.postgres
def test_a_delivery_does_not_wait_for_another_trusts_long_import(
    world, import_as, session_factory, settings, monkeypatch
):
    """An order line delivered to one trust while another trust's import is half-way is
    recorded, with the statistics refreshed, at once; both end up exact."""
    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    paused = _PausedImport(world, session_factory, monkeypatch)
    try:
        _deliver(
            session_factory, world.trust(1), "ord_1", [(world.gloves, 4, 1000)], lock_timeout="5s"
        )
    finally:
        paused.finish()
    with session_factory() as session:
        assert session.get(ProductStats, world.gloves.id).n_trusts == 5
    _assert_exact(session_factory)


@pytest.mark.postgres
def test_a_delivery_to_the_importing_trust_waits_for_it_without_deadlock(
    world, import_as, session_factory, settings, monkeypatch
):
    """Rollup rows are keyed by trust: a delivery to the trust whose import is half-way waits
    for the import before it writes any (not with the caches lock held, after a first line
    of another product, which would deadlock with the import's final refresh)."""
    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    paused = _PausedImport(world, session_factory, monkeypatch, trust=0)
    lines = [(world.stockings, 1, 600), (world.gloves, 2, 700)]  # the import has gloves rows
    delivery, errors = _in_thread(lambda: _deliver(session_factory, world.trust(0), "ord_2", lines))
    try:
        delivery.join(1.0)
        assert delivery.is_alive(), "the delivery should wait for the same trust's import"
    finally:
        paused.finish()
        delivery.join(30)
    assert errors == []
    _assert_exact(session_factory)


@pytest.mark.postgres
def test_a_rollup_rebuild_waits_for_an_import_without_holding_up_deliveries(
    world, import_as, session_factory, settings, monkeypatch
):
    """``pricing refresh --rollups`` must not rebuild the rollups while an import has added
    deltas it cannot see yet; and while it waits, deliveries to other trusts go through."""
    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    monkeypatch.setattr(rollups, "REBUILD_POLL_SECONDS", 0.05)
    paused = _PausedImport(world, session_factory, monkeypatch)

    stages: list[str] = []

    def rebuild() -> None:
        with session_factory.begin() as session:
            rollups.refresh_all(session, rebuild=True, progress=lambda s, *_: stages.append(s))

    refresh, errors = _in_thread(rebuild)
    try:
        refresh.join(1.0)
        assert refresh.is_alive(), "the rebuild should wait for the import to commit"
        _deliver(
            session_factory, world.trust(1), "ord_3", [(world.gloves, 4, 1000)], lock_timeout="5s"
        )
        assert refresh.is_alive()
    finally:
        paused.finish()
        refresh.join(30)
    assert errors == []
    assert stages.count("waiting") == 1  # the CLI says it is waiting, once
    with session_factory() as session:
        assert session.get(ProductStats, world.gloves.id).n_trusts == 5
    _assert_exact(session_factory)


@pytest.mark.postgres
def test_an_import_that_ends_after_midnight_keeps_the_window_moved_on(
    world, import_as, session_factory, settings, monkeypatch
):
    """An import started yesterday finishes after a delivery has rolled the window to today:
    the window stays today's (not rebuilt back to yesterday's), and everything is exact."""
    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    tomorrow = TODAY + timedelta(days=1)
    paused = _PausedImport(world, session_factory, monkeypatch, today=TODAY)
    rebuilds = []
    real_rebuild = rollups.rebuild_caches
    monkeypatch.setattr(
        rollups, "rebuild_caches", lambda *a, **k: rebuilds.append(1) or real_rebuild(*a, **k)
    )
    try:
        _deliver(
            session_factory, world.trust(1), "ord_4", [(world.gloves, 4, 1000)], today=tomorrow
        )
    finally:
        paused.finish()
    with session_factory() as session:
        state = session.get(PricingState, 1)
        assert state.window_to == tomorrow
    assert rebuilds == [], "the caches should be brought up to date pair by pair, not rebuilt"
    _assert_exact(session_factory, today=tomorrow)


@pytest.mark.postgres
def test_two_exclusions_of_one_line_at_once_count_it_out_once(
    world, import_as, session_factory, settings, monkeypatch
):
    """Each change to a line is computed from its current values: the second of two
    simultaneous exclusions must see the first's, or the line is subtracted twice."""
    import threading

    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    # a second line on the same day, so that a double subtraction leaves a wrong remainder
    import_as(
        world.trust(2),
        [line("PO-2X", 1, gtin=make_gtin(1), quantity=3, total_price_pence=2000)],
    )
    with session_factory() as session:
        line_id = session.scalar(
            select(PurchaseRecord.id).where(PurchaseRecord.po_number == "PO-2")
        )
    both_read = threading.Event()
    reads = []
    real_get, real_refresh = service.get_purchase, service.refresh

    def get_purchase(*args, **kwargs):
        record = real_get(*args, **kwargs)
        reads.append(1)
        if len(reads) >= 2:
            both_read.set()
        return record

    def refresh(session, changes):
        both_read.wait(2)  # the first writer gives the second the chance to read the line
        real_refresh(session, changes)

    monkeypatch.setattr(service, "get_purchase", get_purchase)
    monkeypatch.setattr(service, "refresh", refresh)

    def exclude() -> None:
        with session_factory.begin() as session:
            service.set_benchmark_exclusion(
                session, SYSTEM, line_id, excluded=True, reason="a special"
            )

    first, first_errors = _in_thread(exclude)
    second, second_errors = _in_thread(exclude)
    first.join(30)
    second.join(30)
    assert first_errors == second_errors == []
    _assert_exact(session_factory)


@pytest.mark.postgres
def test_the_rebuilt_window_table_comes_with_planner_statistics(
    world, import_as, session_factory, settings
):
    """The full refresh builds the window totals in a new table: it must be analysed before it
    takes the old one's place, or every read is planned without statistics until autovacuum."""
    if not settings.is_postgresql:
        pytest.skip("planner statistics are PostgreSQL's: set MARKETPLACE_TEST_DATABASE_URL")
    for t in range(3):
        import_as(world.trust(t), [line(f"PO-A{t}", 1, gtin=make_gtin(1))])
    with session_factory.begin() as session:
        rollups.refresh_all(session)
    with session_factory() as session:
        analysed = session.execute(
            text("SELECT count(*) FROM pg_stats WHERE tablename = 'pricing_trust_window'")
        ).scalar()
    assert analysed > 0


def test_an_error_writing_statistics_is_raised_and_nothing_more_is_written(
    session_factory, monkeypatch
):
    # the writes run beside the computation (PostgreSQL) or in turn (SQLite): either way the
    # first failure surfaces in the caller, and no batch after it is queued
    calls: list[int] = []

    def failing_insert(session, rows, into=bulk.STATS_TABLE):
        calls.append(len(rows))
        if len(calls) == 1:
            time.sleep(0.3)  # the later batches are queued meanwhile (PostgreSQL)
        else:
            raise RuntimeError("disk full")

    monkeypatch.setattr(bulk, "insert_stats", failing_insert)
    products = [
        (f"prd_{i:05d}", [10, 20, 30], [100, 250, 330]) for i in range(4 * rollups.STATS_BATCH)
    ]
    catalogue = {p: ProductSummary(p, p, "cat", 1, False, None) for p, _, _ in products}
    with (
        session_factory() as session,
        pytest.raises(RuntimeError, match="disk full"),
        rollups._DatabaseThread(session) as database,
    ):
        rollups._write_stats(session, products, catalogue, database)
    assert calls == [rollups.STATS_BATCH, rollups.STATS_BATCH]


def test_statistics_waiting_to_be_written_stay_bounded(session_factory, monkeypatch):
    # the computation may run ahead of the writes (PostgreSQL), but only so far
    monkeypatch.setattr(rollups._DatabaseThread, "MAX_PENDING", 2)
    state = {"queued": 0, "most": 0}
    real_submit = rollups._DatabaseThread.submit

    def counting_submit(self, call, *args):
        state["queued"] += 1
        state["most"] = max(state["most"], state["queued"])
        real_submit(self, call, *args)

    def slow_insert(session, rows, into=bulk.STATS_TABLE):
        time.sleep(0.02)
        state["queued"] -= 1

    monkeypatch.setattr(rollups._DatabaseThread, "submit", counting_submit)
    monkeypatch.setattr(bulk, "insert_stats", slow_insert)
    products = [(f"prd_{i:05d}", [10, 20], [100, 250]) for i in range(10 * rollups.STATS_BATCH)]
    catalogue = {p: ProductSummary(p, p, "cat", 1, False, None) for p, _, _ in products}
    with session_factory() as session, rollups._DatabaseThread(session) as database:
        assert rollups._write_stats(session, products, catalogue, database) == len(products)
    assert state["queued"] == 0
    # one more than the bound: a call counts here just before it waits for a free slot
    assert state["most"] <= 3


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("pricing_trust_window", "pricing_product_stats"),
        ("pricing_product_stats", "pricing_trust_window"),
    ],
)
def test_a_full_refresh_swapping_its_tables_in_does_not_deadlock_a_reader(
    world, import_as, session_factory, settings, monkeypatch, first, then
):
    """A reader that has read one cache table and goes on to read the other while a full
    refresh swaps both in gets its answer (after a wait of a tenth of a second at most), and
    the refresh completes once the reader is done."""
    _needs_postgres(settings)
    _three_trusts_bought_gloves(world, import_as)
    swapping = threading.Event()
    real_lock = bulk.lock_for_swap

    def announcing_lock(session, targets):
        swapping.set()
        real_lock(session, targets)

    monkeypatch.setattr(bulk, "lock_for_swap", announcing_lock)

    def full_refresh() -> None:
        with session_factory.begin() as session:
            rollups.refresh_all(session)

    reader = session_factory()
    try:
        assert reader.execute(text(f"SELECT count(*) FROM {first}")).scalar() >= 1
        refresh, errors = _in_thread(full_refresh)
        assert swapping.wait(30)
        time.sleep(0.5)  # several attempts at the locks
        reader.execute(text("SET LOCAL lock_timeout = '10s'"))
        assert reader.execute(text(f"SELECT count(*) FROM {then}")).scalar() >= 1
        assert refresh.is_alive()  # it needs the share lock the reader holds
    finally:
        reader.rollback()
        reader.close()
    refresh.join(30)
    assert not refresh.is_alive()
    assert errors == []
    _assert_exact(session_factory)


@pytest.mark.postgres
def test_the_rebuilt_window_table_lies_in_key_order(world, import_as, session_factory, settings):
    """The incremental refresh reads a product's trusts together: the rebuilt table keeps
    them on neighbouring pages, in (product, trust) order."""
    _needs_postgres(settings)
    products = [make_gtin(1), make_gtin(2)]
    for t in range(6):
        import_as(
            world.trust(t),
            [line(f"PO-K{t}", n + 1, gtin=g, quantity=t + n + 1) for n, g in enumerate(products)],
        )
    with session_factory.begin() as session:
        # hash the aggregate, as the planner does for millions of lines, so that only an
        # explicit order can give this one
        session.execute(text("SET LOCAL enable_sort = off"))
        rollups.refresh_all(session)
    with session_factory() as session:
        stored = session.execute(
            text("SELECT product_id, trust_id FROM pricing_trust_window ORDER BY ctid")
        ).all()
    assert len(stored) == 12
    assert stored == sorted(stored)


def test_the_collector_is_paused_only_while_a_refresh_runs():
    assert gc.isenabled()
    with rollups._collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), rollups._collector_paused():
        raise RuntimeError("failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with rollups._collector_paused():
            pass
        assert not gc.isenabled(), "a collector switched off elsewhere stays off"
    finally:
        gc.enable()


def test_a_failed_rollup_write_fails_the_import_and_writes_nothing(
    world, import_as, session_factory, monkeypatch
):
    # the rollups' writes run beside the statistics (PostgreSQL): their failure must still
    # reach the importer, whose transaction then leaves everything as it was
    import_as(world.trust(0), [line("PO-F0", 1, gtin=make_gtin(1))])
    with session_factory() as session:
        before = snapshot(session), session.scalar(select(func.count(PurchaseRecord.id)))
    real_add_totals = bulk.add_totals

    def failing_add_totals(session, table, key, rows):
        if table == MonthlyTotal.__tablename__:
            raise RuntimeError("disk full")
        real_add_totals(session, table, key, rows)

    monkeypatch.setattr(bulk, "add_totals", failing_add_totals)
    with pytest.raises(RuntimeError, match="disk full"):
        import_as(world.trust(1), [line("PO-F1", 1, gtin=make_gtin(1))])
    with session_factory() as session:
        after = snapshot(session), session.scalar(select(func.count(PurchaseRecord.id)))
    assert after == before


@pytest.mark.parametrize("apply", ["refresh", "flush"])
def test_changes_whose_write_failed_cannot_be_applied_again(
    world, import_as, session_factory, monkeypatch, apply
):
    # a failed write leaves the deltas half handed over: applying the same Changes again
    # (say, after rolling back to a savepoint) would count the window's part twice or the
    # rollups' part not at all, so it is refused and the caches stay as they were
    import_as(world.trust(0), [line("PO-L0", 1, gtin=make_gtin(1))])
    with session_factory() as session:
        before = snapshot(session)
    real_add_totals = bulk.add_totals
    failing = [True]

    def failing_add_totals(session, table, key, rows):
        if failing[0] and table == DailyTotal.__tablename__:
            raise RuntimeError("disk full")
        real_add_totals(session, table, key, rows)

    monkeypatch.setattr(bulk, "add_totals", failing_add_totals)
    changes = rollups.Changes()
    changes.add(world.gloves.id, world.trust(1).id, days_ago(3), 100, 900)
    with session_factory() as session:
        savepoint = session.begin_nested()
        first_try = {
            "refresh": lambda: rollups.refresh(session, changes),
            "flush": lambda: changes.flush(session),
        }[apply]
        with pytest.raises(RuntimeError, match="disk full"):
            first_try()
        savepoint.rollback()
        failing[0] = False
        with pytest.raises(rollups.ChangesLost):
            rollups.refresh(session, changes)
        with pytest.raises(rollups.ChangesLost):
            changes.flush(session)
        with pytest.raises(rollups.ChangesLost):
            changes.add(world.gloves.id, world.trust(1).id, days_ago(3), 1, 9)
        session.commit()
    with session_factory() as session:
        assert snapshot(session) == before


def test_refreshes_run_with_the_collector_paused_and_resume_it(
    world, import_as, session_factory, monkeypatch
):
    seen: list[bool] = []
    real_write_stats = rollups._write_stats

    def recording_write_stats(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_write_stats(*args, **kwargs)

    monkeypatch.setattr(rollups, "_write_stats", recording_write_stats)
    import_as(world.trust(0), [line("PO-G0", 1, gtin=make_gtin(1))])
    with session_factory.begin() as session:
        rollups.refresh_all(session)
    assert seen == [False, False]  # the import's refresh, then the full one
    assert gc.isenabled()


def test_imported_lines_get_ids_that_sort_by_creation(world, import_as, session_factory):
    import_as(world.trust(0), [line("PO-I", n + 1, gtin=make_gtin(1)) for n in range(3)])
    time.sleep(0.002)
    import_as(world.trust(1), [line("PO-J", n + 1, gtin=make_gtin(1)) for n in range(3)])
    with session_factory() as session:
        rows = session.execute(select(PurchaseRecord.id, PurchaseRecord.trust_id)).all()
    first = [i for i, t in rows if t == world.trust(0).id]
    later = [i for i, t in rows if t == world.trust(1).id]
    assert len(first) == len(later) == 3
    assert {uuid.UUID(i.removeprefix("pur_")).version for i in first + later} == {7}
    assert max(first) < min(later)


def _catalogue_snapshot(session):
    return snapshot(session) | {
        "named": sorted(
            session.execute(
                select(
                    ProductStats.product_id,
                    ProductStats.product_name,
                    ProductStats.category_id,
                    ProductStats.benchmark_excluded_reason,
                )
            ).all()
        )
    }


@pytest.mark.parametrize(
    "change",
    [
        {"benchmark_excluded": True, "benchmark_excluded_reason": "Made to measure"},
        {"category_code": "other"},
        {"name": "Nitrile examination gloves, medium, box of 100"},
    ],
    ids=["excluded", "category", "name"],
)
def test_a_catalogue_change_to_a_product_reaches_its_statistics(
    world, import_as, session_factory, change
):
    # the statistics keep the product's name, category and exclusion: a change to any of them
    # in the catalogue leaves exactly what a full refresh computes, in the same transaction
    from marketplace.catalog import service as catalog

    for t, price in enumerate([10_000, 20_000, 40_000]):
        import_as(
            world.trust(t),
            [line("PO-C", 1, gtin=make_gtin(1), quantity=10, total_price_pence=price)],
        )
    if change.get("category_code") == "other":
        change = {"category_code": world.other_category.code}
    with session_factory.begin() as session:
        catalog.update_product(session, SYSTEM, world.gloves.id, change)
    with session_factory() as session:
        incremental = _catalogue_snapshot(session)
        ranking = service.variance_ranking(session)
        rollups.refresh_all(session)
        assert _catalogue_snapshot(session) == incremental
        assert [i["product_id"] for i in service.variance_ranking(session).items] == [
            i["product_id"] for i in ranking.items
        ]
        session.rollback()
    if "benchmark_excluded" in change:
        assert ranking.items == []
        assert incremental["totals"] == []
    else:
        assert [i["product_id"] for i in ranking.items] == [world.gloves.id]


@pytest.mark.parametrize("change", ["exclude", "rematch"])
def test_the_first_write_after_midnight_removing_a_line_of_the_day_leaving_the_window(
    world, import_as, session_factory, change
):
    # trust 0's only line is dated on the window's first day; tomorrow that day leaves the
    # window. The first write of tomorrow takes the line out: the window rolls (finding the
    # pair through that day's daily row) before the write deletes the row, so the pair's old
    # total does not linger in the window
    import_as(
        world.trust(0),
        [
            line(
                "PO-D",
                1,
                gtin=make_gtin(1),
                quantity=10,
                total_price_pence=90_000,
                when=days_ago(364),
            )
        ],
    )
    for t, price in ((1, 10_000), (2, 20_000)):
        import_as(
            world.trust(t),
            [
                line(
                    "PO-D",
                    1,
                    gtin=make_gtin(1),
                    quantity=10,
                    total_price_pence=price,
                    when=days_ago(5),
                )
            ],
        )
    tomorrow = TODAY + timedelta(days=1)
    with session_factory.begin() as session:
        record = session.scalars(
            select(PurchaseRecord).where(PurchaseRecord.trust_id == world.trust(0).id)
        ).one()
        if change == "exclude":
            service.set_benchmark_exclusion(
                session, SYSTEM, record.id, excluded=True, reason="Special order", today=tomorrow
            )
        else:
            service.match_purchase(session, SYSTEM, record.id, world.stockings.id, today=tomorrow)
    with session_factory() as session:
        incremental = snapshot(session)
        rollups.refresh_all(session, today=tomorrow, rebuild=True)
        assert snapshot(session) == incremental
        session.rollback()
    assert {t for _, t, _, _ in incremental["window"]} == {world.trust(1).id, world.trust(2).id}
