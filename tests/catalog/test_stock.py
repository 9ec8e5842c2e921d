"""The service functions ordering relies on: price for a quantity, stock reservation and release,
including real concurrency (threads, one session each) on whichever database the suite runs on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from marketplace.catalog import service as catalog
from marketplace.catalog.models import Offer
from marketplace.db import unit_of_work
from marketplace.errors import Conflict, NotFound, ValidationFailed


def stock_of(session_factory, offer_id: str) -> int:
    with session_factory() as session:
        return session.get(Offer, offer_id).stock


def test_price_for_quantity_applies_the_largest_break_reached(make, supplier):
    offer = make.offer(
        supplier,
        make.product(),
        pack_price_pence=1000,
        price_breaks=[
            {"min_qty": 10, "pack_price_pence": 950},
            {"min_qty": 50, "pack_price_pence": 900},
        ],
    )
    assert [catalog.price_for_quantity(offer, q) for q in (1, 9, 10, 49, 50, 1000)] == [
        1000,
        1000,
        950,
        950,
        900,
        900,
    ]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValidationFailed):
            catalog.price_for_quantity(offer, bad)


def test_reserve_and_release_stock(make, supplier, session_factory):
    offer = make.offer(supplier, make.product(), stock=5)
    with unit_of_work(session_factory) as session:
        loaded = session.get(Offer, offer.id)
        assert catalog.reserve_stock(session, offer.id, 3) == 2
        assert loaded.stock == 2  # the ORM copy is refreshed, not stale
    with unit_of_work(session_factory) as session, pytest.raises(Conflict) as caught:
        catalog.reserve_stock(session, offer.id, 3)
    problem = caught.value
    assert problem.code == "insufficient-stock"
    assert (problem.extensions["available"], problem.extensions["shortfall"]) == (2, 1)
    assert "short by 1" in problem.detail
    assert stock_of(session_factory, offer.id) == 2
    with unit_of_work(session_factory) as session:
        assert catalog.release_stock(session, offer.id, 3) == 5
    assert stock_of(session_factory, offer.id) == 5


def test_paused_or_unknown_offers_cannot_be_reserved(make, supplier, session_factory):
    offer = make.offer(supplier, make.product(), stock=5, status="paused")
    with unit_of_work(session_factory) as session, pytest.raises(Conflict) as caught:
        catalog.reserve_stock(session, offer.id, 1)
    assert caught.value.code == "offer-not-active"
    with unit_of_work(session_factory) as session, pytest.raises(NotFound):
        catalog.reserve_stock(session, "off_nope", 1)
    with unit_of_work(session_factory) as session, pytest.raises(ValidationFailed):
        catalog.reserve_stock(session, offer.id, 0)
    assert stock_of(session_factory, offer.id) == 5


def _race(session_factory, offer_id: str, threads: int, quantity: int) -> tuple[int, int]:
    """``threads`` workers, each in its own session and transaction, reserve at the same time."""
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> bool:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as session:
                catalog.reserve_stock(session, offer_id, quantity)
        except Conflict:
            return False
        return True

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(attempt, range(threads)))
    return results.count(True), results.count(False)


def test_concurrent_reservations_never_oversell(make, supplier, session_factory):
    offer = make.offer(supplier, make.product(), stock=5)
    succeeded, refused = _race(session_factory, offer.id, threads=20, quantity=1)
    assert (succeeded, refused) == (5, 15)
    assert stock_of(session_factory, offer.id) == 0


def test_concurrent_multi_unit_reservations(make, supplier, session_factory):
    offer = make.offer(supplier, make.product(), stock=10)
    succeeded, _ = _race(session_factory, offer.id, threads=8, quantity=3)
    assert succeeded == 3
    assert stock_of(session_factory, offer.id) == 1
