"""Where a purchase line's pack size came from: given with the line (the trust's file, the
marketplace order) and kept on any re-match, or taken from the matched product's catalogue
entry and replaced by the new product's when the line is matched again.

Products: A, foam dressings 10 a pack (GTIN-matched); B, the same dressings 100 a pack.
RT1 and RT2 buy both, giving their pack sizes: A at 10p and 12p a dressing, B at 8p and 9p.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from marketplace import migrate
from marketplace.catalog.models import Product
from marketplace.config import Settings
from marketplace.errors import ValidationFailed
from marketplace.pricing import service
from marketplace.pricing.models import PurchaseRecord
from tests.orders.conftest import ADDRESS, Shop

from .conftest import days_ago, line, make_gtin
from .test_refresh import _assert_exact

A_GTIN, B_GTIN = make_gtin(3), make_gtin(4)
BEFORE = "0014_search"  # the revision before purchase lines kept the pack size they gave


@dataclass
class Dressings:
    a: Product  # 10 a pack
    b: Product  # 100 a pack


@pytest.fixture
def dressings(world, session_factory, import_as) -> Dressings:
    with session_factory.begin() as session:
        a = Product(
            gtin=A_GTIN.zfill(14),
            name="Foam dressing 10x10cm, pack of 10",
            category_id=world.category.id,
            units_per_pack=10,
        )
        b = Product(
            gtin=B_GTIN.zfill(14),
            name="Foam dressing 10x10cm, box of 100",
            category_id=world.category.id,
            units_per_pack=100,
        )
        session.add_all([a, b])
        session.flush()
        session.expunge_all()
    for t, (a_total, b_total) in {1: (1000, 800), 2: (1200, 900)}.items():
        import_as(
            world.trust(t),
            [
                line(
                    f"PO-{t}",
                    1,
                    gtin=A_GTIN,
                    quantity=10,
                    units_per_pack=10,
                    total_price_pence=a_total,
                ),
                line(
                    f"PO-{t}",
                    2,
                    gtin=B_GTIN,
                    quantity=1,
                    units_per_pack=100,
                    total_price_pence=b_total,
                ),
            ],
        )
    return Dressings(a, b)


def _import(import_as, world, *rows):
    return import_as(world.trust(0), list(rows))


def _record(session_factory, po: str, n: int = 1) -> PurchaseRecord:
    with session_factory() as session:
        return session.scalars(
            select(PurchaseRecord).where(PurchaseRecord.po_number == po, PurchaseRecord.line == n)
        ).one()


def _match(client, buyer, record_id: str, product: Product) -> dict:
    response = client.post(
        f"/api/v1/purchases/{record_id}/match",
        json={"product_id": product.id},
        headers=buyer.headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _trust_rows(client, product: Product) -> dict[str, dict]:
    body = client.get(f"/api/v1/products/{product.id}/price-variance?min_trusts=2").get_json()
    return {row["ods_code"]: row for row in body["trusts"]}


# --- re-matching ------------------------------------------------------------------------------


def test_a_rematch_takes_the_new_products_pack_size_when_the_file_gave_none(
    client, world, buyer, dressings, import_as, session_factory
):
    """A line matched to A (10 a pack) on import, its pack size the catalogue's, is really B
    (100 a pack): re-matched, it is 300 dressings at 2p, not 30 at 20p."""
    _import(import_as, world, line("PO-0", 1, gtin=A_GTIN, quantity=3, total_price_pence=600))
    record = _record(session_factory, "PO-0")
    assert (record.product_id, record.units_per_pack) == (dressings.a.id, 10)
    assert _trust_rows(client, dressings.a)["RT0"]["unit_price_pence"] == 20.0

    body = _match(client, buyer, record.id, dressings.b)
    assert (body["units_per_pack"], body["unit_price_pence"]) == (100, 2.0)
    assert set(_trust_rows(client, dressings.a)) == {"RT1", "RT2"}, "A has lost the line"
    rt0 = _trust_rows(client, dressings.b)["RT0"]
    assert (rt0["units"], rt0["spend_pence"], rt0["unit_price_pence"]) == (300, 600, 2.0)
    # the line's old contribution (A, 30 dressings) went out and its new one (B, 300) came in
    _assert_exact(session_factory)
    assert body["units_per_pack_source"] == "catalogue"
    assert _record(session_factory, "PO-0").given_units_per_pack is None


def test_a_pack_size_the_file_gave_survives_a_rematch(
    client, world, buyer, dressings, import_as, session_factory
):
    _import(
        import_as,
        world,
        line("PO-0", 1, gtin=A_GTIN, quantity=2, units_per_pack=12, total_price_pence=480),
        line("PO-0", 2, description="foam dressings", units_per_pack=7, total_price_pence=700),
    )
    matched, unmatched = _record(session_factory, "PO-0", 1), _record(session_factory, "PO-0", 2)
    assert (matched.product_id, matched.units_per_pack) == (dressings.a.id, 12)
    assert (unmatched.status, unmatched.units_per_pack) == ("unmatched", 7)

    body = _match(client, buyer, matched.id, dressings.b)
    assert (body["units_per_pack"], body["units_per_pack_source"]) == (12, "given")
    rt0 = _trust_rows(client, dressings.b)["RT0"]
    assert (rt0["units"], rt0["unit_price_pence"]) == (24, 20.0)
    for product in (dressings.a, dressings.b):
        body = _match(client, buyer, unmatched.id, product)
        assert (body["units_per_pack"], body["units_per_pack_source"]) == (7, "given")
    _assert_exact(session_factory)


def test_an_unmatched_line_matched_then_rematched_follows_the_catalogue(
    client, world, buyer, dressings, import_as, session_factory
):
    _import(
        import_as,
        world,
        line("PO-0", 1, description="foam dressings", quantity=4, total_price_pence=800),
    )
    record = _record(session_factory, "PO-0")
    assert (record.status, record.units_per_pack) == ("unmatched", None)

    first = _match(client, buyer, record.id, dressings.a)
    assert (first["units_per_pack"], first["unit_price_pence"]) == (10, 20.0)
    again = _match(client, buyer, record.id, dressings.b)
    assert (again["units_per_pack"], again["unit_price_pence"]) == (100, 2.0)
    assert "RT0" not in _trust_rows(client, dressings.a)
    assert _trust_rows(client, dressings.b)["RT0"]["units"] == 400
    _assert_exact(session_factory)
    assert [first["units_per_pack_source"], again["units_per_pack_source"]] == ["catalogue"] * 2


# --- marketplace deliveries -------------------------------------------------------------------


def test_a_delivered_line_keeps_its_orders_pack_size(
    client, world, buyer, dressings, session_factory
):
    with session_factory.begin() as session:
        delivered, defaulted = service.record_marketplace_purchases(
            session,
            trust_id=world.trust(0).id,
            order_reference="ord_1",
            order_date=days_ago(1),
            supplier_id=world.supplier.id,
            lines=[
                service.DeliveredLine(1, dressings.b.id, 2, 1000, 50),  # a box of 50, as ordered
                service.DeliveredLine(2, dressings.b.id, 1, 500),  # the product's, as delivered
            ],
        )
        ids = delivered.id, defaulted.id
    records = [session_factory().get(PurchaseRecord, i) for i in ids]
    assert [(r.units_per_pack, r.given_units_per_pack) for r in records] == [(50, 50), (100, 100)]
    assert _trust_rows(client, dressings.b)["RT0"]["units"] == 200

    body = _match(client, buyer, ids[0], dressings.a)
    assert (body["units_per_pack"], body["units_per_pack_source"]) == (50, "given")
    _assert_exact(session_factory)
    with pytest.raises(ValidationFailed), session_factory.begin() as session:
        service.record_marketplace_purchases(
            session,
            trust_id=world.trust(0).id,
            order_reference="ord_2",
            order_date=days_ago(1),
            supplier_id=None,
            lines=[service.DeliveredLine(1, dressings.b.id, 2, 1000, 0)],
        )


def test_an_import_that_reuses_a_delivered_orders_line_is_told_it_was_a_marketplace_order(
    world, dressings, session_factory, import_as
):
    """A delivered marketplace order is recorded under its order reference as the PO number; a
    trust file that later gives other values for that PO and line is refused, naming where
    the line came from."""
    with session_factory.begin() as session:
        service.record_marketplace_purchases(
            session,
            trust_id=world.trust(0).id,
            order_reference="ord_9",
            order_date=days_ago(1),
            supplier_id=world.supplier.id,
            lines=[service.DeliveredLine(1, dressings.b.id, 2, 1000, 100)],
        )
    result = _import(import_as, world, line("ord_9", 1, gtin=B_GTIN, total_price_pence=999))
    assert (result.imported, result.rejected) == (0, 1)
    assert result.errors[0]["reason"] == (
        "ord_9 line 1 was already imported with different values (a marketplace order "
        "delivered earlier); correct or renumber it"
    )
    assert _record(session_factory, "ord_9").total_price_pence == 1000


def test_an_order_delivered_after_the_catalogue_changed_its_pack_size_keeps_the_orders(
    client, factory, session_factory, db
):
    """The order was for boxes of 100; the catalogue says 50 by the time it is delivered."""
    shop = Shop(factory, session_factory)
    gloves = shop.offers["gloves_a"]
    quote = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": gloves.id, "quantity": 12}],
            "payment_method": "purchase_order",
        },
        headers=shop.buyer.headers,
    ).get_json()
    placed = client.post(
        "/api/v1/orders",
        json={"quote_id": quote["id"], "delivery_address": ADDRESS, "po_number": "PO-1"},
        headers=shop.buyer.headers | {"Idempotency-Key": "pack-size-1"},
    ).get_json()
    with session_factory.begin() as session:
        session.get(Product, gloves.product_id).units_per_pack = 50
    so_id = placed["supplier_orders"][0]["id"]
    for action in ("accept", "dispatch", "deliver"):
        response = client.post(
            f"/api/v1/supplier-orders/{so_id}/{action}", json={}, headers=shop.supplier.headers
        )
        assert response.status_code == 200, response.get_json()
    db.rollback()
    (record,) = db.scalars(select(PurchaseRecord)).all()
    assert (record.quantity, record.units_per_pack) == (12, 100)
    assert record.given_units_per_pack == 100


# --- re-imports -------------------------------------------------------------------------------


def test_a_reimport_compares_the_pack_size_the_line_gave(
    world, dressings, import_as, session_factory
):
    """A re-imported line giving a pack size differs from a record whose pack size came from
    the catalogue (even the same number) or that had none; a blank one is not compared."""
    first = [
        line("PO-0", 1, gtin=A_GTIN),  # the catalogue's 10
        line("PO-0", 2, gtin=A_GTIN, units_per_pack=10),
        line("PO-0", 3),  # unmatched, no pack size
        line("PO-0", 4, units_per_pack=6),  # unmatched, its own pack size
    ]
    assert _import(import_as, world, *first).imported == 4
    again = _import(import_as, world, *first)
    assert (again.imported, again.already_imported, again.rejected) == (0, 4, 0)

    changed = [
        {**first[0], "units_per_pack": 10},
        {**first[1], "units_per_pack": ""},
        {**first[2], "units_per_pack": 5},
        first[3],
        line("PO-0", 5),
    ]
    result = _import(import_as, world, *changed)
    assert (result.imported, result.already_imported, result.rejected) == (1, 2, 2), result
    assert [(e["row"], e["column"]) for e in result.errors] == [(2, "line"), (4, "line")]
    assert (
        "already imported with different values (an earlier import)" in result.errors[0]["reason"]
    )
    kept = [_record(session_factory, "PO-0", n) for n in (1, 2, 3, 4)]
    assert [(r.units_per_pack, r.given_units_per_pack) for r in kept] == [
        (10, None),
        (10, 10),
        (None, None),
        (6, 6),
    ]


# --- the API ----------------------------------------------------------------------------------


def test_purchases_say_where_their_pack_size_came_from(client, world, buyer, dressings, import_as):
    _import(
        import_as,
        world,
        line("PO-0", 1, gtin=A_GTIN),
        line("PO-0", 2, gtin=A_GTIN, units_per_pack=12),
        line("PO-0", 3),
    )
    listed = client.get("/api/v1/purchases", headers=buyer.headers).get_json()["items"]
    assert {p["line"]: (p["units_per_pack"], p["units_per_pack_source"]) for p in listed} == {
        1: (10, "catalogue"),
        2: (12, "given"),
        3: (None, None),
    }
    one = client.get(f"/api/v1/purchases/{listed[0]['id']}", headers=buyer.headers).get_json()
    assert "units_per_pack_source" in one
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = [
        schema["properties"]["units_per_pack_source"]
        for schema in spec["components"]["schemas"].values()
        if "units_per_pack_source" in schema.get("properties", {})
    ]
    assert documented
    assert all(
        {"given", "catalogue"} <= set(d.get("enum", [])) and "re-match" in d["description"]
        for d in documented
    )


# --- the migration ----------------------------------------------------------------------------


@pytest.fixture
def scratch_settings(settings, tmp_path):
    """An empty database of its own: a SQLite file, or a PostgreSQL database beside the suite's
    (skipped when the server will not create one)."""
    if not settings.is_postgresql:
        yield Settings(database_url=f"sqlite:///{tmp_path / 'before.db'}", instance_dir=tmp_path)
        return
    url = make_url(settings.database_url)
    name = f"{url.database}_pack_size_migration"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as error:
        admin.dispose()
        pytest.skip(f"cannot create a scratch database: {error.orig}")
    try:
        yield Settings(
            database_url=url.set(database=name).render_as_string(hide_password=False),
            instance_dir=tmp_path,
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows_from_before(connection) -> None:
    """A trust, a product and three lines, written as the schema before the revision was."""
    now = "CURRENT_TIMESTAMP"
    connection.execute(
        text(
            "INSERT INTO organisations (id, type, name, ods_code, is_sme, created_at, updated_at) "
            f"VALUES ('org_t', 'trust', 'Trust', 'RT0', false, {now}, {now})"
        )
    )
    connection.execute(
        text(
            "INSERT INTO categories (id, code, name, scheme, path, kind, phb_eligible, "
            "phb_excluded) VALUES ('cat_1', '33140000', 'Consumables', 'CPV', '/33140000/', "
            "'commodity', false, false)"
        )
    )
    connection.execute(
        text(
            "INSERT INTO products (id, name, category_id, unit_of_measure, units_per_pack, "
            "attributes, assurance, benchmark_excluded, created_at, updated_at) VALUES "
            f"('prd_1', 'Dressing', 'cat_1', 'EA', 10, '{{}}', '{{}}', false, {now}, {now})"
        )
    )
    for n, product, units, status in (
        (1, "'prd_1'", "10", "matched"),  # the file's or the catalogue's: cannot be known
        (2, "NULL", "NULL", "unmatched"),  # the file gave none
        (3, "NULL", "6", "unmatched"),  # the file gave one
    ):
        connection.execute(
            text(
                "INSERT INTO purchase_records (id, trust_id, order_date, product_id, quantity, "
                "units_per_pack, total_price_pence, source, po_number, line, status, "
                "benchmark_excluded, created_at, updated_at) VALUES "
                f"('pur_{n}', 'org_t', '2026-01-02', {product}, 1, {units}, 100, 'import', "
                f"'PO-1', {n}, '{status}', false, {now}, {now})"
            )
        )


def _pack_sizes(engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT id, units_per_pack, given_units_per_pack FROM purchase_records ORDER BY id"
            )
        ).all()


def test_the_migration_counts_existing_pack_sizes_as_given(scratch_settings):
    migrate.upgrade(scratch_settings, BEFORE)
    engine = create_engine(scratch_settings.database_url)
    try:
        with engine.begin() as connection:
            _rows_from_before(connection)
        migrate.upgrade(scratch_settings)
        assert _pack_sizes(engine) == [("pur_1", 10, 10), ("pur_2", None, None), ("pur_3", 6, 6)]
        migrate.check(scratch_settings)
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE purchase_records SET given_units_per_pack = 11"))

        from alembic import command

        command.downgrade(migrate.alembic_config(scratch_settings), "-1")
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, units_per_pack FROM purchase_records ORDER BY id")
            ).all()
        assert rows == [("pur_1", 10), ("pur_2", None), ("pur_3", 6)]
        migrate.upgrade(scratch_settings)
        assert _pack_sizes(engine) == [("pur_1", 10, 10), ("pur_2", None, None), ("pur_3", 6, 6)]
    finally:
        engine.dispose()
