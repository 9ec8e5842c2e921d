"""A long pricing CSV (``format=csv``) is read page by page while it streams, all from one read
session of its own: a commit between two pages does not show in the file, and the session is
closed with the response, read to the end or not."""

from __future__ import annotations

import csv
import io

import pytest

from marketplace.pricing import api, service
from tests.pricing.conftest import line

# Pence for one unit each; every dearest trust saves more than the £10 minimum counted.
SPENDS = {
    "first": [10_000, 12_000, 30_000],
    "second": [10_000, 11_000, 40_000],
    "third": [10_000, 13_000, 50_000],
}


@pytest.fixture
def ranked(world, import_as, new_product):
    """Three products bought by three trusts each, so the ranking has three rows."""
    products = {}
    for name, spends in SPENDS.items():
        product = products[name] = new_product()
        for i, spend in enumerate(spends):
            row = line(f"P{product.gtin}", 1, gtin=product.gtin, total_price_pence=spend)
            import_as(world.trust(i), [row])
    return products


def rows_of(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


@pytest.fixture
def pages_read(monkeypatch):
    """One row a page; ``commit_after_first(action)`` runs ``action`` (a committed change) as
    soon as the first page of a CSV answer has been read. Records each page's session, and
    the sessions closed."""
    monkeypatch.setattr(api, "CSV_PAGE", 1)
    sessions = []
    closed = []
    pending = []

    def watched(session):
        if all(s is not session for s in sessions):
            original_close = session.close

            def close():
                closed.append(session)
                original_close()

            session.close = close
        sessions.append(session)

    def wrap(name):
        original = getattr(service, name)

        def read(session, *args, **kwargs):
            watched(session)
            page = original(session, *args, **kwargs)
            while pending:
                pending.pop()()
            return page

        monkeypatch.setattr(service, name, read)

    wrap("variance_ranking")
    wrap("trust_savings")

    class Pages:
        def commit_after_first(self, action):
            pending.append(action)

    Pages.sessions, Pages.closed = sessions, closed
    return Pages()


def test_a_commit_between_pages_does_not_show_in_the_ranking(
    client, world, ranked, import_as, pages_read
):
    before = rows_of(client.get("/api/v1/price-variance?format=csv"))
    assert len(before) == 3

    # After the first page, a fourth trust buys the first two products dearly: both would
    # gain savings and change places if later pages saw it.
    def dear_purchases():
        for name in ("first", "second"):
            product = ranked[name]
            import_as(
                world.trust(3),
                [line(f"Q{product.gtin}", 1, gtin=product.gtin, total_price_pence=900_000)],
            )

    pages_read.sessions.clear()
    pages_read.commit_after_first(dear_purchases)
    during = rows_of(client.get("/api/v1/price-variance?format=csv"))
    assert during == before
    assert len(pages_read.sessions) == 3
    assert len(set(map(id, pages_read.sessions))) == 1  # one session, one snapshot
    after = rows_of(client.get("/api/v1/price-variance?format=csv"))
    assert after != before  # the change is there for the next answer


def test_a_commit_between_pages_does_not_show_in_a_trust_s_savings(
    client, world, ranked, import_as, pages_read
):
    before = rows_of(client.get("/api/v1/trusts/RT2/savings?format=csv"))
    assert len(before) == 3

    def cheaper_purchases():
        for i in (3, 4):
            for product in ranked.values():
                row = line(f"R{product.gtin}", 1, gtin=product.gtin, total_price_pence=10)
                import_as(world.trust(i), [row])

    pages_read.commit_after_first(cheaper_purchases)
    assert rows_of(client.get("/api/v1/trusts/RT2/savings?format=csv")) == before
    assert rows_of(client.get("/api/v1/trusts/RT2/savings?format=csv")) != before


def test_the_stream_s_session_is_closed_with_the_response(client, ranked, pages_read, monkeypatch):
    monkeypatch.setattr(api, "CSV_CHUNK", 1)  # a chunk per row: the first is sent at once
    abandoned = client.get("/api/v1/price-variance?format=csv", buffered=False)
    stream = pages_read.sessions[0]
    assert stream not in pages_read.closed  # open while the body waits to be read
    abandoned.close()  # the client went away without reading it
    assert stream in pages_read.closed
    read = client.get("/api/v1/trusts/RT2/savings?format=csv", buffered=False)
    read.get_data()  # read to the end
    assert pages_read.sessions[-1] in pages_read.closed


def test_an_unknown_trust_or_category_is_a_problem_and_leaves_no_session(client, pages_read):
    assert client.get("/api/v1/trusts/XXX/savings?format=csv").status_code == 404
    assert client.get("/api/v1/price-variance?format=csv&category=nope").status_code == 422
    assert len(pages_read.sessions) == 2
    assert all(s in pages_read.closed for s in pages_read.sessions)
