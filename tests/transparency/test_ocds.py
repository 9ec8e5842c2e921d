"""OCDS releases for trust orders: every release type validates against the official OCDS
1.1.5 schema, maps the marketplace's data as documented, never changes, and so do the release
and record packages the API serves."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import text, update

from marketplace import create_app
from marketplace.orders.models import CardPaymentStatus, PaymentMethod, SupplierOrderStatus
from marketplace.transparency import ocds, service
from marketplace.transparency.models import OcdsRelease, OpenDataIsAppendOnly
from tests.support import assert_problem
from tests.transparency.conftest import GTIN_BANDAGE
from tests.transparency.ocds_schema import (
    assert_valid_record_package,
    assert_valid_release,
    assert_valid_release_package,
    errors,
    release_package_schema,
    release_schema,
)


def pence(amount: float) -> int:
    """Back from a JSON number of pounds to pence, exactly."""
    value = Decimal(str(amount)) * 100
    assert value == value.to_integral_value(), amount
    return int(value)


@pytest.fixture
def catalogue(world):
    bandage = world.product(
        name="Cohesive bandage 10cm x 2.5m", gtin=GTIN_BANDAGE, category_code="33141113"
    )
    stocking = world.product(
        name="Anti-embolism stocking, thigh, medium",
        category_code="MKT-HOSIERY-AE",
        unit_of_measure="PR",
        units_per_pack=3,
    )
    return {
        "bandage": bandage,
        "stocking": stocking,
        "bandage_sme": world.offer(world.sme, bandage, 1234),
        "stocking_large": world.offer(world.large, stocking, 1000),
    }


def releases_of(client, ocid: str) -> list[dict]:
    response = client.get(f"/api/v1/ocds/records/{ocid}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["records"][0]["releases"]


def test_the_validator_is_not_vacuous():
    """A release without its required fields fails, also through the package's remote $ref."""
    assert errors(release_schema(), {"id": "x"})
    package = {
        "uri": "https://example.org/p",
        "publisher": {"name": "x"},
        "publishedDate": "2026-01-01T00:00:00Z",
        "version": "1.1",
        "releases": [{"id": "x"}],
    }
    assert any("ocid" in e for e in errors(release_package_schema(), package))
    assert errors(
        release_schema(),
        {"ocid": "o", "id": "i", "date": "yesterday", "tag": ["award"], "initiationType": "tender"},
    )


def test_placement_release_maps_the_order(world, catalogue, client):
    order = world.order(
        world.trusts[0],
        world.buyers[0],
        [(catalogue["bandage_sme"], 3), (catalogue["stocking_large"], 2)],
    )
    row = world.publish_placed(order.id)
    release = json.loads(row.data)
    assert_valid_release(release)

    assert release["ocid"] == f"ocds-mkt000-{order.id}"
    assert release["tag"] == ["award", "contract"]
    assert release["initiationType"] == "tender"
    parties = {p["id"]: p for p in release["parties"]}
    trust = parties["GB-NHS-RR8"]
    assert trust["identifier"] == {
        "scheme": "GB-NHS",
        "id": "RR8",
        "legalName": "Leeds Teaching Hospitals NHS Trust",
    }
    assert trust["roles"] == ["buyer", "payer"]
    assert release["buyer"] == {"id": "GB-NHS-RR8", "name": "Leeds Teaching Hospitals NHS Trust"}
    sme = parties[f"GB-COH-{world.sme.org.companies_house_number}"]
    large = parties[f"GB-COH-{world.large.org.companies_house_number}"]
    assert sme["identifier"]["scheme"] == "GB-COH"
    assert sme["roles"] == ["supplier", "payee"]
    assert sme["details"] == {"scale": "sme"}
    assert large["details"] == {"scale": "large"}

    by_supplier = {so.supplier_id: so for so in order.supplier_orders}
    sme_order = by_supplier[world.sme.org.id]
    awards = {a["id"]: a for a in release["awards"]}
    contracts = {c["id"]: c for c in release["contracts"]}
    assert set(awards) == set(contracts) == {so.id for so in order.supplier_orders}
    award = awards[sme_order.id]
    assert award["status"] == "active"
    assert award["suppliers"] == [{"id": sme["id"], "name": "Small Medical Supplies Ltd"}]
    assert award["value"] == {"amount": 37.02, "currency": "GBP"}
    assert pence(award["value"]["amount"]) == sme_order.net_pence == 3 * 1234
    assert contracts[sme_order.id]["awardID"] == sme_order.id
    assert contracts[sme_order.id]["status"] == "pending"

    (bandage,) = award["items"]
    assert bandage["id"] == sme_order.lines[0].id
    assert bandage["description"] == "Cohesive bandage 10cm x 2.5m"
    assert bandage["classification"] == {
        "scheme": "CPV",
        "id": "33141113-4",
        "description": "Bandages",
    }
    assert bandage["additionalClassifications"] == [
        {"scheme": "GTIN", "id": "0" + GTIN_BANDAGE, "description": "GS1 Global Trade Item Number"}
    ]
    assert bandage["quantity"] == 3
    assert bandage["unit"]["scheme"] == "UNCEFACT"
    assert bandage["unit"]["id"] == "EA"
    assert bandage["unit"]["value"] == {"amount": 12.34, "currency": "GBP"}

    (stocking,) = awards[by_supplier[world.large.org.id].id]["items"]
    assert stocking["classification"]["scheme"] == "EMDN"  # not CPV: the scheme it has
    assert stocking["classification"]["id"] == "M030405"
    assert "additionalClassifications" not in stocking  # no GTIN
    assert stocking["quantity"] == 6  # 2 packs of 3 pairs
    assert stocking["unit"]["id"] == "PR"
    assert stocking["unit"]["name"] == "pair"
    # £10.00 a pack of 3 pairs: £3.333333 a pair (rounded once, half to even, 6 places).
    assert stocking["unit"]["value"]["amount"] == 3.333333


def test_money_is_exact_for_large_and_awkward_amounts():
    for p in (1, 5, 10, 99, 12_345, 1_000_000_007, 10**12 - 1):
        assert pence(ocds.pounds(p)) == p
    assert ocds.unit_pounds(256, 100) == 0.0256
    assert ocds.unit_pounds(1, 3) == 0.003333


def test_every_release_type_validates_and_the_record_compiles(world, catalogue, client):
    order = world.order(
        world.trusts[1],
        world.buyers[1],
        [(catalogue["bandage_sme"], 10), (catalogue["stocking_large"], 4)],
        payment_method=PaymentMethod.CARD,
    )
    sme_so = next(so for so in order.supplier_orders if so.supplier_id == world.sme.org.id)
    large_so = next(so for so in order.supplier_orders if so.supplier_id == world.large.org.id)
    world.publish_placed(order.id)

    # The SME dispatches (the card payment is captured), delivers, then refunds twice.
    world.dispatch(sme_so.id, capture=True)
    world.update_supplier_order(
        sme_so.id, status=SupplierOrderStatus.DELIVERED, delivered_at=sme_so.created_at
    )
    world.publish_event(sme_so.id, "delivered")
    world.update_supplier_order(
        sme_so.id,
        refunded_pence=1000,
        payment={"refunded_pence": 1000, "status": CardPaymentStatus.PARTIALLY_REFUNDED},
    )
    world.publish_event(sme_so.id, "refunded")
    world.update_supplier_order(
        sme_so.id,
        refunded_pence=sme_so.gross_pence,
        status=SupplierOrderStatus.REFUNDED,
        payment={"refunded_pence": sme_so.gross_pence, "status": CardPaymentStatus.REFUNDED},
    )
    world.publish_event(sme_so.id, "refunded")
    # The large supplier cancels.
    world.update_supplier_order(large_so.id, status=SupplierOrderStatus.CANCELLED)
    world.publish_event(large_so.id, "cancelled")

    ocid = f"ocds-mkt000-{order.id}"
    response = client.get(f"/api/v1/ocds/records/{ocid}")
    assert response.status_code == 200
    package = response.get_json()
    assert_valid_record_package(package)
    (record,) = package["records"]
    releases = record["releases"]
    assert [r["tag"] for r in releases] == [
        ["award", "contract"],
        ["implementation"],
        ["implementation"],
        ["contractAmendment", "implementation"],
        ["contractAmendment", "implementation"],
        ["awardCancellation", "contractTermination"],
    ]
    for release in releases:
        assert_valid_release(release)
    assert len({r["id"] for r in releases}) == len(releases)
    assert [r["date"] for r in releases] == sorted(r["date"] for r in releases)

    dispatch = releases[1]["contracts"][0]
    assert dispatch["status"] == "active"
    (capture,) = dispatch["implementation"]["transactions"]
    assert pence(capture["value"]["amount"]) == sme_so.gross_pence
    assert capture["payer"]["id"] == "GB-NHS-R1H"
    refund_1, refund_2 = (r["contracts"][0] for r in releases[3:5])
    assert pence(refund_1["implementation"]["transactions"][0]["value"]["amount"]) == 1000
    assert (
        pence(refund_2["implementation"]["transactions"][0]["value"]["amount"])
        == sme_so.gross_pence - 1000
    )
    assert refund_2["implementation"]["transactions"][0]["payer"]["id"].startswith("GB-COH-")
    assert refund_1["amendments"][0]["amendsReleaseID"] == releases[2]["id"]
    assert refund_2["status"] == "terminated"

    compiled = record["compiledRelease"]
    assert_valid_release(compiled)
    assert compiled["tag"] == ["compiled"]
    assert compiled["ocid"] == ocid
    awards = {a["id"]: a for a in compiled["awards"]}
    contracts = {c["id"]: c for c in compiled["contracts"]}
    assert awards[large_so.id]["status"] == "cancelled"
    assert awards[sme_so.id]["status"] == "active"
    assert awards[large_so.id]["items"]  # merged by id: the placement's items are kept
    assert contracts[large_so.id]["status"] == "cancelled"
    sme_contract = contracts[sme_so.id]
    assert sme_contract["status"] == "terminated"
    placed = {c["id"]: c for c in releases[0]["contracts"]}
    assert sme_contract["value"] == placed[sme_so.id]["value"]
    transactions = sme_contract["implementation"]["transactions"]
    assert len(transactions) == 3  # the capture and two refunds, merged by id
    assert [m["title"] for m in sme_contract["implementation"]["milestones"]] == [
        "Dispatched",
        "Delivered",
    ]
    assert len(sme_contract["amendments"]) == 2
    trust = next(p for p in compiled["parties"] if p["id"] == "GB-NHS-R1H")
    assert trust["roles"] == ["buyer", "payer", "payee"]


def test_rejection_release(world, catalogue, client):
    order = world.order(world.trusts[0], world.buyers[0], [(catalogue["bandage_sme"], 1)])
    (so,) = order.supplier_orders
    world.update_supplier_order(so.id, status=SupplierOrderStatus.REJECTED)
    row = world.publish_event(so.id, "rejected")  # publishes the missed placement first
    release = json.loads(row.data)
    assert_valid_release(release)
    assert release["tag"] == ["awardCancellation", "contractTermination"]
    assert release["awards"] == [{"id": so.id, "status": "unsuccessful"}]
    tags = [r["tag"] for r in releases_of(client, release["ocid"])]
    assert tags == [["award", "contract"], ["awardCancellation", "contractTermination"]]


def test_published_in_the_same_transaction_as_the_order(world, catalogue, session_factory, client):
    """The orders service calls the publisher before its transaction commits; a rollback takes
    the release with it."""
    items = [(catalogue["bandage_sme"], 2), (catalogue["stocking_large"], 1)]
    with session_factory() as session:
        order = world.order(world.trusts[0], world.buyers[0], items, session=session)
        row = service.publish_order_placed(session, order)
        release = json.loads(row.data)
        assert sum(len(a["items"]) for a in release["awards"]) == 2
        session.rollback()
    assert client.get("/api/v1/ocds/releases").status_code == 204
    with session_factory.begin() as session:
        order = world.order(world.trusts[0], world.buyers[0], items, session=session)
        service.publish_order_placed(session, order)
    assert client.get("/api/v1/ocds/releases").get_json()["releases"][0]["ocid"].endswith(order.id)


def test_publishing_is_idempotent(world, catalogue, session_factory):
    order = world.order(world.trusts[0], world.buyers[0], [(catalogue["bandage_sme"], 1)])
    (so,) = order.supplier_orders
    first = world.publish_placed(order.id)
    assert world.publish_placed(order.id).release_id == first.release_id
    world.dispatch(so.id)
    world.publish_event(so.id, "dispatched")
    world.publish_event(so.id, "refunded")  # nothing refunded: nothing to publish
    with session_factory() as session:
        assert session.query(OcdsRelease).count() == 2


def test_budget_and_non_trust_orders_are_never_published(world, catalogue, client):
    holder = world.holder(name="Ada Example", email="ada@example.org")
    budget = world.budget(holder)
    phb = world.order(
        world.commissioner,
        holder,
        [(catalogue["bandage_sme"], 1)],
        payment_method=PaymentMethod.BUDGET,
        budget=budget,
    )
    assert world.publish_placed(phb.id) is None
    assert world.publish_event(phb.supplier_orders[0].id, "dispatched") is None
    assert client.get("/api/v1/ocds/releases").status_code == 204
    assert_problem(client.get(f"/api/v1/ocds/records/ocds-mkt000-{phb.id}"), 404)


def test_releases_never_change(world, catalogue, session_factory):
    order = world.order(world.trusts[0], world.buyers[0], [(catalogue["bandage_sme"], 1)])
    row = world.publish_placed(order.id)
    with session_factory() as session:
        release = session.get(OcdsRelease, row.seq)
        release.data = "{}"
        with pytest.raises(OpenDataIsAppendOnly):
            session.flush()
        session.rollback()
        with pytest.raises(OpenDataIsAppendOnly):
            session.execute(update(OcdsRelease).values(data="{}"))
        session.rollback()
    # The database refuses too, whoever asks.
    for statement in ("UPDATE ocds_releases SET data = '{}'", "DELETE FROM ocds_releases"):
        with session_factory() as session, pytest.raises(Exception, match="append-only"):
            session.execute(text(statement))
    with session_factory() as session:
        assert session.get(OcdsRelease, row.seq).data == row.data


def test_release_package_pages_with_links_next(world, catalogue, client):
    orders = [
        world.order(world.trusts[i % 3], world.buyers[i % 3], [(catalogue["bandage_sme"], i + 1)])
        for i in range(5)
    ]
    for order in orders:
        world.publish_placed(order.id)
    seen: list[str] = []
    url = "/api/v1/ocds/releases?limit=2"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        package = response.get_json()
        assert_valid_release_package(package)
        assert package["version"] == "1.1"
        assert package["license"] == ocds.LICENSE
        assert package["publisher"]["name"] == ocds.PUBLISHER_NAME
        assert package["publicationPolicy"].endswith("/open-data#publication-policy")
        assert package["publishedDate"] == max(r["date"] for r in package["releases"])
        assert package["next_cursor"]
        seen.extend(r["id"] for r in package["releases"])
        pages += 1
        next_url = package.get("links", {}).get("next")
        url = next_url.removeprefix("http://127.0.0.1:8000") if next_url else None
    assert pages == 3
    assert seen == [f"ocds-mkt000-{o.id}-placed" for o in orders]
    # Nothing new after the last cursor: 204, with the cursor to keep.
    response = client.get(f"/api/v1/ocds/releases?cursor={package['next_cursor']}")
    assert response.status_code == 204
    assert response.headers["X-Next-Cursor"] == package["next_cursor"]
    # A new release shows up after that cursor, and only it.
    late = world.order(world.trusts[0], world.buyers[0], [(catalogue["stocking_large"], 1)])
    world.publish_placed(late.id)
    package = client.get(f"/api/v1/ocds/releases?cursor={package['next_cursor']}").get_json()
    assert [r["id"] for r in package["releases"]] == [f"ocds-mkt000-{late.id}-placed"]


def test_since_and_bad_input(world, catalogue, client):
    order = world.order(world.trusts[0], world.buyers[0], [(catalogue["bandage_sme"], 1)])
    world.publish_placed(order.id)
    assert client.get("/api/v1/ocds/releases?since=2000-01-01T00:00:00Z").status_code == 200
    assert client.get("/api/v1/ocds/releases?since=2999-01-01T00:00:00Z").status_code == 204
    assert_problem(client.get("/api/v1/ocds/releases?cursor=not-a-cursor"), 422)
    assert_problem(client.get("/api/v1/ocds/releases?since=yesterday"), 422)
    assert_problem(client.get("/api/v1/ocds/releases?limit=0"), 422)
    assert_problem(client.get("/api/v1/ocds/releases?limit=2.5"), 422)
    assert_problem(client.get("/api/v1/ocds/records/" + "x" * 300), 404)


def test_the_ocid_prefix_is_a_setting(world, catalogue, migrated):
    app = create_app(migrated.with_overrides(ocds_prefix="ocds-abc123"))
    order = world.order(world.trusts[0], world.buyers[0], [(catalogue["bandage_sme"], 1)])
    state = app.extensions["marketplace"]
    from marketplace.orders.models import Order

    with state.session_factory.begin() as session:
        row = service.publish_order_placed(session, session.get(Order, order.id))
    assert row.ocid == f"ocds-abc123-{order.id}"
    package = app.test_client().get(f"/api/v1/ocds/records/{row.ocid}").get_json()
    assert_valid_record_package(package)
    state.engine.dispose()


def test_compile_follows_the_merge_rules():
    releases = [
        {
            "ocid": "o",
            "id": "1",
            "date": "2026-01-01T00:00:00.000000Z",
            "tag": ["award"],
            "initiationType": "tender",
            "parties": [{"id": "a", "name": "A", "roles": ["buyer", "payer"]}],
            "awards": [{"id": "x", "status": "active", "items": [{"id": "i", "quantity": 1}]}],
        },
        {
            "ocid": "o",
            "id": "2",
            "date": "2026-01-02T00:00:00.000000Z",
            "tag": ["awardUpdate"],
            "initiationType": "tender",
            "parties": [{"id": "a", "roles": ["buyer"]}, {"id": "b", "name": "B"}],
            "awards": [{"id": "x", "status": "cancelled", "title": None}],
        },
    ]
    compiled = ocds.compile_releases(releases)
    assert compiled["tag"] == ["compiled"]
    assert compiled["date"] == releases[-1]["date"]
    assert compiled["parties"] == [
        {"id": "a", "name": "A", "roles": ["buyer"]},  # strings: replaced whole
        {"id": "b", "name": "B"},
    ]
    assert compiled["awards"] == [
        {"id": "x", "status": "cancelled", "items": [{"id": "i", "quantity": 1}]}
    ]
    assert_valid_release(compiled)
