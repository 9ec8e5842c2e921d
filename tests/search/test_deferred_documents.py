"""``documents_deferred``: a bulk load's products get their search documents once, together, at
the end of the block and in the same transaction; nothing when the block fails."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.catalog.models import Offer, Product
from marketplace.catalog.search import outbox
from marketplace.catalog.search.models import SearchDocument
from marketplace.catalog.search.outbox import documents_deferred, product_changed
from tests.search.conftest import names, search


@pytest.fixture
def refreshes(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = outbox.refresh_documents

    def recording(session, product_ids):
        calls.append(list(product_ids))
        real(session, product_ids)

    monkeypatch.setattr(outbox, "refresh_documents", recording)
    return calls


def _add_product(session, cat, name: str, supplier) -> str:
    product = Product(
        name=name,
        category_id=cat.categories["MKT-HOSIERY-AE"].id,
        units_per_pack=1,
        attributes={},
        assurance={},
    )
    session.add(product)
    session.flush()
    product_changed(session, product.id)
    session.add(
        Offer(
            product_id=product.id,
            supplier_id=supplier.id,
            pack_price_pence=500,
            stock=3,
            price_breaks=[],
        )
    )
    session.flush()
    product_changed(session, product.id)  # a second change to the same product
    return product.id


def _documents(session, ids: list[str]) -> int:
    query = select(func.count()).select_from(SearchDocument)
    return session.scalar(query.where(SearchDocument.product_id.in_(ids)))


def test_each_product_is_refreshed_once_at_the_end_of_the_block(
    cat, session_factory, client, refreshes
):
    supplier = cat.supplier("Deferred Supplies")
    with session_factory.begin() as session:
        with documents_deferred(session):
            ids = [_add_product(session, cat, f"Deferred stocking {n}", supplier) for n in range(3)]
            assert refreshes == []
            assert _documents(session, ids) == 0
        assert refreshes == [ids]
        assert _documents(session, ids) == 3
    body = search(client, q="deferred stocking")
    assert sorted(names(body)) == [f"Deferred stocking {n}" for n in range(3)]


def test_the_products_are_refreshed_a_batch_at_a_time(cat, session_factory, refreshes, monkeypatch):
    monkeypatch.setattr(outbox, "DEFERRED_BATCH", 2)
    supplier = cat.supplier()
    with session_factory.begin() as session, documents_deferred(session):
        ids = [_add_product(session, cat, f"Batched glove {n}", supplier) for n in range(3)]
    assert refreshes == [ids[:2], ids[2:]]


def test_a_nested_block_joins_the_outer_one(cat, session_factory, refreshes):
    supplier = cat.supplier()
    with session_factory.begin() as session, documents_deferred(session):
        first = _add_product(session, cat, "Outer dressing", supplier)
        with documents_deferred(session):
            second = _add_product(session, cat, "Inner dressing", supplier)
        assert refreshes == []
    assert refreshes == [[first, second]]


def test_a_failing_block_refreshes_nothing_and_writes_nothing(cat, session_factory, refreshes):
    supplier = cat.supplier()

    def failing_load() -> None:
        with session_factory.begin() as session, documents_deferred(session):
            _add_product(session, cat, "Abandoned catheter", supplier)
            raise RuntimeError("seed failed")

    with pytest.raises(RuntimeError, match="seed failed"):
        failing_load()
    assert refreshes == []
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Product)) == 0
        assert outbox.DEFERRED not in session.info
    # the session is usable again, and refreshes at once outside a block
    with session_factory.begin() as session:
        product_id = _add_product(session, cat, "Later catheter", supplier)
    assert refreshes == [[product_id], [product_id]]
