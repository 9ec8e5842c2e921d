"""Elasticsearch unreachable (``SEARCH_BACKEND=elasticsearch`` pointing at a closed port, the
real client): search answers a clear 503 problem (the API and the public page), ``/readyz``
says so, catalogue writes (create product, create offer, offer import) still succeed and the
outbox keeps every change; once a server answers again, ``marketplace search sync`` delivers
them all (the recording fake node stands in for the server that came back)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace import cli, create_app
from marketplace.accounts.models import Role
from marketplace.catalog import service as catalog
from marketplace.catalog.search import EXTENSION
from marketplace.catalog.search import elasticsearch as es_module
from marketplace.catalog.search.elasticsearch import ElasticsearchBackend
from marketplace.catalog.search.models import SearchOutbox
from tests.catalog.test_offer_import import GOOD_ROWS, csv_bytes
from tests.conftest import _empty_all_tables
from tests.search.fake_es import FakeServer, fake_client
from tests.served import free_port
from tests.support import Factory, assert_problem
from tests.transparency.test_pages import assert_secure_html

ALIAS = "marketplace-products"


@pytest.fixture
def offline_app(migrated):
    settings = migrated.with_overrides(
        search_backend="elasticsearch",
        elasticsearch_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        elasticsearch_index=ALIAS,
    )
    app = create_app(settings)
    _empty_all_tables(app.extensions["marketplace"].engine)
    yield app
    app.extensions["marketplace"].engine.dispose()


def outbox(session_factory) -> tuple[int, set[str]]:
    with session_factory() as session:
        rows = session.scalars(select(SearchOutbox).where(SearchOutbox.processed_at.is_(None)))
        rows = list(rows)
        return len(rows), {r.product_id for r in rows}


def search_sync(state, monkeypatch):
    """``marketplace search sync`` against the app's database and Elasticsearch settings."""
    monkeypatch.setenv("DATABASE_URL", state.settings.database_url)
    monkeypatch.setenv("SEARCH_BACKEND", "elasticsearch")
    monkeypatch.setenv("ELASTICSEARCH_URL", state.settings.elasticsearch_url)
    monkeypatch.setattr(cli, "_state", None)
    try:
        return CliRunner().invoke(cli.main, ["search", "sync"])
    finally:
        if cli._state is not None:
            cli._state.engine.dispose()


def test_search_is_a_clear_503_while_catalogue_writes_go_on_and_sync_catches_up(
    offline_app, monkeypatch
):
    state = offline_app.extensions["marketplace"]
    session_factory = state.session_factory
    with session_factory.begin() as session:
        catalog.load_categories(session, catalog.bundled_category_rows())
    supplier = Factory(session_factory).actor(Role.SUPPLIER)
    client = offline_app.test_client()

    # Search: a clear 503 problem, on the API and on the public page, and readiness says why.
    problem = assert_problem(
        client.get("/api/v1/search", query_string={"q": "gloves"}), 503, code="search-unavailable"
    )
    assert "Search is unavailable" in problem["detail"]
    assert problem["search_error"] == "ConnectionError"
    response = client.get("/api/v1/search", query_string={"q": "gloves"})
    assert response.headers["Retry-After"]
    page = client.get("/?q=gloves")
    assert page.status_code == 503
    assert "Search is unavailable" in page.get_data(as_text=True)
    assert_secure_html(page)  # an error page is a page: same headers
    assert_problem(client.get("/readyz"), 503, code="elasticsearch-unreachable")

    # Catalogue writes succeed all the same (buffered: the after-request delivery runs, fails).
    product = client.post(
        "/api/v1/products",
        json={"name": "Nitrile gloves", "category_code": "18424300", "units_per_pack": 100},
        headers=supplier.headers,
        buffered=True,
    )
    assert product.status_code == 201, product.get_json()
    product_id = product.get_json()["id"]
    offer = client.post(
        "/api/v1/offers",
        json={
            "product_id": product_id,
            "pack_price_pence": 650,
            "vat_rate_percent": 20,
            "stock": 10,
        },
        headers=supplier.headers,
        buffered=True,
    )
    assert offer.status_code == 201, offer.get_json()
    imported = client.post(
        "/api/v1/offers/import",
        data=csv_bytes(GOOD_ROWS[:2]),
        content_type="text/csv",
        headers=supplier.headers,
        buffered=True,
    )
    assert imported.status_code == 200, imported.get_json()
    assert imported.get_json()["created_offers"] == 2

    # The outbox kept every change: the gloves and the two imported products.
    pending, products = outbox(session_factory)
    assert len(products) == 3
    assert product_id in products
    assert pending >= 3
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(SearchOutbox)) == pending

    # Elasticsearch is back (the fake node): `marketplace search sync` delivers everything.
    server = FakeServer()
    monkeypatch.setattr(es_module, "Elasticsearch", lambda *_a, **_k: fake_client(server))
    result = search_sync(state, monkeypatch)
    assert result.exit_code == 0, result.output
    assert f"delivered {pending}, failed 0" in result.output  # every row, one document each
    assert outbox(session_factory) == (0, set())
    (bulk,) = server.of("POST|PUT", "/_bulk")
    assert {a["index"]["_id"] for a in bulk.ndjson()[0::2]} == products


def test_sync_with_elasticsearch_still_down_fails_clearly_and_keeps_the_changes(
    offline_app, monkeypatch
):
    state = offline_app.extensions["marketplace"]
    with state.session_factory.begin() as session:
        catalog.load_categories(session, catalog.bundled_category_rows())
    supplier = Factory(state.session_factory).actor(Role.SUPPLIER)
    created = offline_app.test_client().post(
        "/api/v1/products",
        json={"name": "Walking frame", "category_code": "33141720", "units_per_pack": 1},
        headers=supplier.headers,
    )
    assert created.status_code == 201
    result = search_sync(state, monkeypatch)
    assert result.exit_code != 0
    assert "pending changes stay in the outbox" in result.output
    assert outbox(state.session_factory)[1] == {created.get_json()["id"]}


@pytest.mark.parametrize(
    ("status", "error_type", "answer", "words"),
    [
        (404, "index_not_found_exception", 503, "marketplace search reindex"),
        (429, "es_rejected_execution_exception", 503, "overloaded"),
        (503, "search_phase_execution_exception", 503, "overloaded"),
        (
            400,
            "parsing_exception",
            500,
            "Something went wrong",
        ),  # our query: a defect, not an outage
    ],
)
def test_search_errors_the_cluster_answers(offline_app, status, error_type, answer, words):
    server = FakeServer()
    answers = server.handle

    def handle(method, path, query, body):
        if path.endswith("/_search"):
            server.requests.append(None)
            return status, {"error": {"type": error_type}, "status": status}
        return answers(method, path, query, body)

    server.handle = handle
    offline_app.extensions[EXTENSION] = ElasticsearchBackend(fake_client(server), ALIAS)
    response = offline_app.test_client().get("/api/v1/search", query_string={"q": "gloves"})
    problem = assert_problem(response, answer)
    assert words in problem["detail"]
    assert server.requests  # the search did reach the cluster
