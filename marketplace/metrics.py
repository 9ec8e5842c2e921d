"""Prometheus metrics (``prometheus_client``), served at ``/metrics`` by ``ops.py``.

What is measured, and when:

- ``marketplace_http_requests_total`` and ``marketplace_http_request_duration_seconds``
  (histogram), labelled ``endpoint`` (the route's endpoint name, e.g. ``orders.place_order``;
  ``unmatched`` when no route matched: never the raw path, so the label set stays bounded),
  ``method`` and ``status``. Observed once per request by ``web.py``, after the commit.
- ``marketplace_db_pool_size``, ``..._checked_out``, ``..._overflow``: the connection pool, kept
  current by pool events (checkout/checkin), so that every worker's pool is counted.
- ``marketplace_search_outbox_pending`` and ``..._oldest_pending_age_seconds``: the search
  outbox backlog, read from the database at scrape time (``outbox.backlog``).
- ``marketplace_search_cache_lookups_total{part, outcome}``: the SQL search backend's request
  cache, per part of a search (``part="facets"``: the total and facet counts; ``"page"``: a
  page's ids; ``"plan"``, ``"matched"`` and ``"ranked"``: a query's spelling-corrected plan,
  its matches, and its matches with their relevance scores, kept while no document's text
  changes; ``"shared"``: those matches looked up in Redis, shared by every process, when a
  process does not hold them yet) and ``outcome`` (``hit`` or ``miss``; a miss includes an
  entry of an older search generation). Nothing is counted when the cache is off.
- ``marketplace_import_rows_total{import_kind, outcome}``: rows read by the offer and purchase
  imports (``outcome="processed"``: every row read; ``"rejected"``: the rows refused), counted
  as the import goes; ``marketplace_imports_in_progress{import_kind}``.

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
(``gunicorn.conf.py`` empties it at start and marks dead workers): every worker then writes its
figures there and any worker's ``/metrics`` answers for all of them (prometheus_client's
multiprocess mode). Without it, a process reports its own figures (fine for one process).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
IMPORT_KINDS = ("offers", "purchases")
disable_created_metrics()  # no *_created series: half the output, nothing a dashboard uses

REQUESTS = Counter(
    "marketplace_http_requests",
    "HTTP requests answered, by endpoint (route name), method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "marketplace_http_request_duration_seconds",
    "Time to answer an HTTP request (including the commit), by endpoint, method and status.",
    ["endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
POOL_SIZE = Gauge(
    "marketplace_db_pool_size",
    "Database connections the pools keep (0 for SQLite, which opens one per checkout).",
    multiprocess_mode="livesum",
)
POOL_CHECKED_OUT = Gauge(
    "marketplace_db_pool_checked_out",
    "Database connections in use.",
    multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "marketplace_db_pool_overflow",
    "Connections open beyond the pool size (up to its max_overflow).",
    multiprocess_mode="livesum",
)
IMPORT_ROWS = Counter(
    "marketplace_import_rows",
    "Rows read by imports: outcome=processed counts every row, outcome=rejected the refused ones.",
    ["import_kind", "outcome"],
)
IMPORTS_RUNNING = Gauge(
    "marketplace_imports_in_progress",
    "Imports running now.",
    ["import_kind"],
    multiprocess_mode="livesum",
)
SEARCH_CACHE_LOOKUPS = Counter(
    "marketplace_search_cache_lookups",
    "Search request cache lookups, by part (facets, page, plan, matched, ranked, shared) and"
    " outcome.",
    ["part", "outcome"],
)
SEARCH_CACHE_PARTS = ("facets", "page", "plan", "matched", "ranked", "shared")
_processed = {kind: IMPORT_ROWS.labels(kind, "processed") for kind in IMPORT_KINDS}
_rejected = {kind: IMPORT_ROWS.labels(kind, "rejected") for kind in IMPORT_KINDS}
_running = {kind: IMPORTS_RUNNING.labels(kind) for kind in IMPORT_KINDS}
_cache_lookups = {
    (part, hit): SEARCH_CACHE_LOOKUPS.labels(part, "hit" if hit else "miss")
    for part in SEARCH_CACHE_PARTS
    for hit in (True, False)
}


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def clear_multiprocess_dir() -> None:
    """At server start (gunicorn ``on_starting``): figures left from an earlier run would be
    added in, so empty the directory (only prometheus_client's ``*.db`` files)."""
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()


def worker_exited(pid: int) -> None:
    """When a worker exits (gunicorn ``child_exit``): its live gauges stop counting."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)


def observe_request(endpoint: str | None, method: str, status: int, seconds: float) -> None:
    labels = (endpoint or UNMATCHED, method, str(status))
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)


# Import progress ------------------------------------------------------------------------------


def import_row(kind: str, *, rejected: bool = False) -> None:
    """Count one row an import read (and whether it was refused)."""
    _processed[kind].inc()
    if rejected:
        _rejected[kind].inc()


def import_running(kind: str) -> AbstractContextManager[Any]:
    """``with import_running("offers"): ...`` shows the import in ``imports_in_progress``."""
    return _running[kind].track_inprogress()


# Search cache ---------------------------------------------------------------------------------


def search_cache_lookup(part: str, *, hit: bool) -> None:
    _cache_lookups[(part, hit)].inc()


# Connection pools -----------------------------------------------------------------------------


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges current from ``engine``'s pool events (several engines add up).

    Each process reports its own pool (a worker forked from a preloaded master starts from
    nothing), so in multiprocess mode the live workers' pools are summed."""
    reported = {"pid": 0, "size": 0, "overflow": 0}

    def pool_changed() -> None:
        if reported["pid"] != os.getpid():
            reported.update(pid=os.getpid(), size=0, overflow=0)
        pool = engine.pool
        if isinstance(pool, QueuePool):
            size, overflow = pool.size(), max(0, pool.overflow())
            POOL_SIZE.inc(size - reported["size"])
            POOL_OVERFLOW.inc(overflow - reported["overflow"])
            reported.update(size=size, overflow=overflow)

    @event.listens_for(engine, "checkout")
    def _checkout(*_args: Any) -> None:
        POOL_CHECKED_OUT.inc()
        pool_changed()

    @event.listens_for(engine, "checkin")
    def _checkin(*_args: Any) -> None:
        POOL_CHECKED_OUT.dec()
        pool_changed()


# Figures read at scrape time -------------------------------------------------------------------


class OutboxCollector:
    """The search outbox backlog, read from the database when Prometheus scrapes."""

    def __init__(self, session_factory: Callable[[], Session]):
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        from .catalog.search.outbox import backlog

        try:
            with self.session_factory() as session:
                figures = backlog(session)
        except Exception as error:  # a scrape must answer even when the database does not
            log.warning("metrics: could not read the search outbox: %s", error)
            return
        yield GaugeMetricFamily(
            "marketplace_search_outbox_pending",
            "Catalogue changes waiting to be delivered to the search index.",
            value=figures.pending,
        )
        age = 0.0
        if figures.oldest_created_at is not None:
            age = max(0.0, (datetime.now(UTC) - figures.oldest_created_at).total_seconds())
        yield GaugeMetricFamily(
            "marketplace_search_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered change (0 when none waits).",
            value=age,
        )


def exposition(scrape_time: CollectorRegistry) -> bytes:
    """The text exposition: every process's figures (or this one's), then ``scrape_time``'s."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(scrape_time)


def scrape_registry(session_factory: Callable[[], Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OutboxCollector(session_factory))
    return registry
