"""Prometheus metrics at /metrics: who may read them, and what they say."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from marketplace import create_app
from marketplace.accounts.models import Role
from marketplace.catalog.search.models import SearchOutbox
from marketplace.catalog.search.outbox import backlog
from marketplace.db import make_engine, utcnow
from marketplace.metrics import OutboxCollector, watch_pool
from tests.support import assert_problem, metric

METRICS_TOKEN = "scrape-" + "s" * 32


def scrape(client, headers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.headers["Content-Type"]
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def operator(factory):
    return factory.actor(Role.OPERATOR)


@pytest.fixture
def scraper_app(migrated, app):
    """An application with a METRICS_TOKEN (the shared one has none)."""
    scraper = create_app(migrated.with_overrides(metrics_token=METRICS_TOKEN))
    yield scraper
    scraper.extensions["marketplace"].engine.dispose()


def test_metrics_need_the_scrape_token_or_an_operator(scraper_app, factory):
    client = scraper_app.test_client()
    assert_problem(client.get("/metrics"), 401, code="missing-token")
    for role in (Role.BUYER, Role.SUPPLIER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER):
        actor = factory.actor(role)
        assert_problem(client.get("/metrics", headers=actor.headers), 403, code="not-an-operator")
    wrong = {"Authorization": "Bearer " + METRICS_TOKEN[:-1] + "x"}
    assert_problem(client.get("/metrics", headers=wrong), 401)
    assert scrape(client, {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scrape(client, factory.actor(Role.OPERATOR).headers)


def test_without_a_scrape_token_only_operators_read_metrics(client, factory, operator):
    assert_problem(client.get("/metrics"), 401)
    buyer = factory.actor(Role.BUYER)
    assert_problem(client.get("/metrics", headers=buyer.headers), 403)
    assert scrape(client, operator.headers)


def _requests(samples, endpoint: str, method: str, status: str) -> float:
    labels = (("endpoint", endpoint), ("method", method), ("status", status))
    return samples.get(("marketplace_http_requests_total", labels), 0.0)


def test_requests_are_counted_and_timed_by_route_never_by_raw_path(client, operator):
    before = scrape(client, operator.headers)
    for _ in range(3):
        assert client.get("/api/v1/categories").status_code == 200
    assert client.get("/api/v1/products/prd_nothing_here").status_code == 404
    assert client.get("/no/such/address/42").status_code == 404
    after = scrape(client, operator.headers)

    def delta(*labels: str) -> float:
        return _requests(after, *labels) - _requests(before, *labels)

    assert delta("catalog.list_categories", "GET", "200") == 3
    assert delta("catalog.get_product", "GET", "404") == 1
    assert delta("unmatched", "GET", "404") == 1
    for (_name, labels), _value in after.items():
        assert not any("prd_nothing_here" in v or "/no/such" in v for _k, v in labels)
    # The histogram counts the same requests, in buckets.
    hist = (("endpoint", "catalog.list_categories"), ("method", "GET"), ("status", "200"))
    count = ("marketplace_http_request_duration_seconds_count", hist)
    assert after[count] - before.get(count, 0.0) == 3
    inf = (
        "marketplace_http_request_duration_seconds_bucket",
        (*hist[:1], ("le", "+Inf"), *hist[1:]),
    )
    assert after[inf] == after[count]


def test_the_outbox_backlog_is_read_at_scrape_time(client, db, operator):
    db.add_all(
        [
            SearchOutbox(product_id="prd_a", created_at=utcnow() - timedelta(minutes=5)),
            SearchOutbox(product_id="prd_b"),
            SearchOutbox(product_id="prd_c", processed_at=utcnow()),
        ]
    )
    db.commit()
    figures = backlog(db)
    assert figures.pending == 2
    samples = scrape(client, operator.headers)
    assert samples[("marketplace_search_outbox_pending", ())] == 2
    age = samples[("marketplace_search_outbox_oldest_pending_age_seconds", ())]
    assert 300 <= age < 360
    db.execute(text("UPDATE search_outbox SET processed_at = created_at"))
    db.commit()
    samples = scrape(client, operator.headers)
    assert samples[("marketplace_search_outbox_pending", ())] == 0
    assert samples[("marketplace_search_outbox_oldest_pending_age_seconds", ())] == 0


def test_pool_gauges_follow_checkouts(migrated, is_postgres):
    engine = make_engine(migrated, **({"pool_size": 3} if is_postgres else {}))
    watch_pool(engine)
    try:
        size_before = metric("marketplace_db_pool_size")
        out_before = metric("marketplace_db_pool_checked_out")
        first, second = engine.connect(), engine.connect()
        assert metric("marketplace_db_pool_checked_out") == out_before + 2
        if is_postgres:  # SQLite opens a connection per checkout: it has no pool to size
            assert metric("marketplace_db_pool_size") == size_before + 3
        first.close()
        assert metric("marketplace_db_pool_checked_out") == out_before + 1
        second.close()
        assert metric("marketplace_db_pool_checked_out") == out_before
    finally:
        engine.dispose()


def test_a_scrape_answers_even_when_the_database_does_not(caplog):
    def unavailable():
        raise OSError("the database is away")

    assert list(OutboxCollector(unavailable).collect()) == []
    assert "could not read the search outbox" in caplog.text


def test_server_hooks_empty_the_directory_and_drop_exited_workers(tmp_path, monkeypatch):
    """The hooks `marketplace serve` and gunicorn.conf.py install (gunicorn runs them too in
    test_metrics_gunicorn.py)."""
    from types import SimpleNamespace

    from marketplace import serve

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("counter_1.db", "histogram_1.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    serve._on_starting(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    for name in ("gauge_livesum_7.db", "gauge_livesum_8.db", "counter_7.db"):
        (tmp_path / name).write_bytes(b"")
    serve._child_exit(None, SimpleNamespace(pid=7))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["counter_7.db", "gauge_livesum_8.db", "notes.txt"]
