"""Importing purchase lines through the API: matching, rejected rows, idempotency, malformed
files, and who may import and see what."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.pricing.models import PurchaseImport, PurchaseRecord, PurchaseStatus
from marketplace.web import STREAMED_BODY_ATTRIBUTE
from tests.support import assert_problem, metric

from .conftest import csv_bytes, days_ago, json_bytes, line, make_gtin


def _post(client, actor, body: bytes, content_type="text/csv", **kwargs):
    headers = dict(actor.headers)
    headers.update(kwargs.pop("headers", {}))
    return client.post(
        "/api/v1/purchases/import",
        data=body,
        content_type=content_type,
        headers=headers,
        **kwargs,
    )


def _count(db, model=PurchaseRecord) -> int:
    return db.scalar(select(func.count()).select_from(model))


def _mixed_rows(world):
    return [
        # matched by GTIN (13 digits in the file; the catalogue keeps 14)
        line("PO-1", 1, gtin=make_gtin(1), quantity=2, total_price_pence=500),
        # matched by supplier + supplier SKU; the pack size comes from the product
        line(
            "PO-1",
            2,
            supplier_name="Acme Medical Ltd",
            supplier_sku="AES-TM",
            quantity=3,
            total_price_pence=1800,
        ),
        # unmatched: unknown GTIN-less item, kept
        line(
            "PO-1",
            3,
            description="Mystery widget",
            quantity=1,
            units_per_pack=5,
            total_price_pence=999,
        ),
        # rejected: bad GTIN check digit, zero quantity, bad date
        line("PO-1", 4, gtin="5000000000001", quantity=0, order_date="2025-13-40"),
        # rejected: missing price
        line("PO-1", 5, total_price_pence=""),
        # rejected: future date
        line("PO-1", 6, order_date="2999-01-01"),
    ]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_import_matches_keeps_unmatched_and_reports_rejected_rows(client, db, world, buyer, fmt):
    rows = _mixed_rows(world)
    body = csv_bytes(rows) if fmt == "csv" else json_bytes(rows)
    response = _post(client, buyer, body, "text/csv" if fmt == "csv" else "application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert result["trust_ods"] == "RT0"
    assert (result["rows"], result["imported"], result["matched"], result["unmatched"]) == (
        6,
        3,
        2,
        1,
    )
    assert result["rejected"] == 3
    first_data_row = 2 if fmt == "csv" else 1  # CSV rows as a spreadsheet numbers them
    errors = {(e["row"] - first_data_row, e["column"]) for e in result["errors"]}
    assert {
        (3, "gtin"),
        (3, "quantity"),
        (3, "order_date"),
        (4, "total_price_pence"),
        (5, "order_date"),
    } <= errors
    assert all(e["reason"] for e in result["errors"])

    records = {r.line: r for r in db.scalars(select(PurchaseRecord))}
    assert set(records) == {1, 2, 3}
    gloves = records[1]
    assert gloves.status == PurchaseStatus.MATCHED
    assert gloves.product_id == world.gloves.id
    assert gloves.units_per_pack == 100
    assert gloves.unit_price == pytest.approx(2.5)
    stockings = records[2]
    assert stockings.product_id == world.stockings.id
    assert stockings.supplier_id == world.supplier.id
    assert stockings.units_per_pack == 1
    assert records[3].status == PurchaseStatus.UNMATCHED
    assert records[3].product_id is None
    assert (
        db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "purchases.import")
        )
        == 1
    )


def test_reimporting_the_same_lines_changes_nothing(client, db, world, buyer):
    body = csv_bytes(_mixed_rows(world))
    first = _post(client, buyer, body).get_json()
    before = {(r.id, r.total_price_pence) for r in db.scalars(select(PurchaseRecord))}
    variance_before = client.get(
        f"/api/v1/products/{world.gloves.id}/price-variance?min_trusts=2"
    ).get_json()
    second = _post(client, buyer, body).get_json()
    assert first["imported"] == 3
    assert second["imported"] == 0
    assert second["already_imported"] == 3
    assert second["rejected"] == 3
    db.expire_all()
    assert {(r.id, r.total_price_pence) for r in db.scalars(select(PurchaseRecord))} == before
    assert (
        client.get(f"/api/v1/products/{world.gloves.id}/price-variance?min_trusts=2").get_json()
        == variance_before
    )


def test_idempotency_key_replays_the_first_result(client, db, world, buyer):
    body = csv_bytes(_mixed_rows(world))
    headers = {"Idempotency-Key": "import-2026-11-01"}
    first = _post(client, buyer, body, headers=headers)
    again = _post(client, buyer, body, headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert _count(db, PurchaseImport) == 1
    other = _post(client, buyer, csv_bytes([line("PO-9", 1)]), headers=headers)
    assert_problem(other, 422, code="idempotency-key-reused")
    assert_problem(_post(client, buyer, body, headers={"Idempotency-Key": "bad key\x01"}), 422)


def test_multipart_upload_and_operator_import_for_a_named_trust(client, db, world, buyer, operator):
    import io

    upload = {"file": (io.BytesIO(json_bytes([line("PO-M", 1, gtin=make_gtin(1))])), "lines.json")}
    response = client.post(
        "/api/v1/purchases/import",
        data=upload,
        content_type="multipart/form-data",
        headers=buyer.headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["matched"] == 1
    by_operator = _post(
        client, operator, csv_bytes([line("PO-O", 1)]), query_string={"trust": "RT3"}
    )
    assert by_operator.get_json()["trust_ods"] == "RT3"
    assert_problem(_post(client, operator, csv_bytes([line("PO-O", 2)])), 422)


MALFORMED = [
    ("not-utf8", b"po_number,line\n\xff\xfe\x00bad", "text/csv", "not-utf8"),
    ("empty", b"", "text/csv", "no-header"),
    (
        "unknown column",
        csv_bytes([line("P", 1)], columns=[*list(line("P", 1)), "colour"]),
        "text/csv",
        "bad-header",
    ),
    ("missing column", b"po_number,line,order_date\nP,1,2026-01-01\n", "text/csv", "bad-header"),
    ("invalid json", b'[{"po_number": "P", "line": 1,', "application/json", "bad-json"),
    ("json not a list", b'{"po_number": "P"}', "application/json", "bad-json"),
    (
        "json unknown key",
        json_bytes([line("P", 1) | {"colour": "red"}]),
        "application/json",
        "bad-header",
    ),
    ("json element not an object", b"[1, 2]", "application/json", "bad-json"),
]


@pytest.mark.parametrize(
    ("name", "body", "ctype", "code"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_file_is_refused_whole_and_writes_nothing(
    client, db, world, buyer, name, body, ctype, code
):
    # good rows first, so a streaming importer has written some before it meets the problem
    if ctype == "text/csv" and code == "not-utf8":
        body = (
            csv_bytes([line("PO-G", i, gtin=make_gtin(1)) for i in range(1, 50)])
            + b"\xff\xfe,bad\n"
        )
    response = _post(client, buyer, body, ctype)
    assert_problem(response, 400, code=code)
    assert _count(db) == 0
    assert _count(db, PurchaseImport) == 0


def test_unsupported_media_type_is_415(client, world, buyer):
    assert_problem(_post(client, buyer, b"x", "application/xml"), 415)


def test_unmatched_lines_listed_then_matched(client, db, world, buyer, factory):
    _post(
        client,
        buyer,
        csv_bytes(
            [
                line(
                    "PO-U",
                    1,
                    description="Gloves nitrile M box 100",
                    quantity=4,
                    total_price_pence=1200,
                )
            ]
        ),
    )
    listed = client.get("/api/v1/purchases?status=unmatched", headers=buyer.headers).get_json()
    assert [p["po_number"] for p in listed["items"]] == ["PO-U"]
    purchase = listed["items"][0]
    assert purchase["units_per_pack"] is None
    assert purchase["unit_price_pence"] is None

    matched = client.post(
        f"/api/v1/purchases/{purchase['id']}/match",
        json={"product_id": world.gloves.id},
        headers=buyer.headers,
    )
    assert matched.status_code == 200, matched.get_data(as_text=True)
    body = matched.get_json()
    assert body["status"] == "matched"
    assert body["units_per_pack"] == 100
    assert body["unit_price_pence"] == 3.0
    assert (
        client.get("/api/v1/purchases?status=unmatched", headers=buyer.headers).get_json()["items"]
        == []
    )
    variance = client.get(
        f"/api/v1/products/{world.gloves.id}/price-variance?min_trusts=2"
    ).get_json()
    assert variance["n_trusts"] == 1  # counted straight away

    bad = client.post(
        f"/api/v1/purchases/{purchase['id']}/match",
        json={"product_id": "prd_nope"},
        headers=buyer.headers,
    )
    assert_problem(bad, 422)


def test_buyers_see_only_their_own_trusts_purchases(client, db, world, buyer, factory):
    other_buyer = factory.actor(Role.BUYER, org=world.trust(1))
    _post(client, other_buyer, csv_bytes([line("PO-X", 1, description="theirs")]))
    _post(client, buyer, csv_bytes([line("PO-Y", 1, description="mine")]))
    theirs = db.scalar(select(PurchaseRecord).where(PurchaseRecord.po_number == "PO-X"))

    mine = client.get("/api/v1/purchases", headers=buyer.headers).get_json()["items"]
    assert [p["po_number"] for p in mine] == ["PO-Y"]
    assert_problem(client.get(f"/api/v1/purchases/{theirs.id}", headers=buyer.headers), 404)
    assert_problem(
        client.post(
            f"/api/v1/purchases/{theirs.id}/match",
            json={"product_id": world.gloves.id},
            headers=buyer.headers,
        ),
        404,
    )
    assert_problem(client.get("/api/v1/purchases?trust=RT1", headers=buyer.headers), 404)
    assert_problem(
        _post(client, buyer, csv_bytes([line("PO-Z", 1)]), query_string={"trust": "RT1"}), 404
    )
    db.expire_all()
    assert db.get(PurchaseRecord, theirs.id).product_id is None


def test_operators_see_every_trust_and_filter(client, world, buyer, operator, factory):
    other_buyer = factory.actor(Role.BUYER, org=world.trust(1))
    _post(client, other_buyer, csv_bytes([line("PO-X", 1)]))
    _post(client, buyer, csv_bytes([line("PO-Y", 1)]))
    everything = client.get("/api/v1/purchases", headers=operator.headers).get_json()["items"]
    assert sorted(p["trust_ods"] for p in everything) == ["RT0", "RT1"]
    only = client.get("/api/v1/purchases?trust=RT1", headers=operator.headers).get_json()["items"]
    assert [p["trust_ods"] for p in only] == ["RT1"]
    assert_problem(client.get("/api/v1/purchases?trust=NOPE", headers=operator.headers), 404)


@pytest.mark.parametrize("role", [Role.SUPPLIER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER])
def test_other_roles_are_refused_with_403(client, world, factory, role):
    actor = factory.actor(role)
    assert_problem(_post(client, actor, csv_bytes([line("P", 1)])), 403)
    assert_problem(client.get("/api/v1/purchases", headers=actor.headers), 403)


def test_missing_token_is_401(client, world):
    assert_problem(client.post("/api/v1/purchases/import", data=b"", content_type="text/csv"), 401)


def test_exclusion_is_for_operators_and_needs_a_reason(client, db, world, buyer, operator):
    _post(client, buyer, csv_bytes([line("PO-E", 1, gtin=make_gtin(1))]))
    purchase = db.scalar(select(PurchaseRecord))
    path = f"/api/v1/purchases/{purchase.id}/exclude"
    assert_problem(client.post(path, json={"reason": "special"}, headers=buyer.headers), 403)
    assert_problem(client.post(path, json={}, headers=operator.headers), 422)
    done = client.post(path, json={"reason": "One-off special order"}, headers=operator.headers)
    assert done.status_code == 200
    assert done.get_json()["benchmark_excluded"] is True
    assert done.get_json()["benchmark_excluded_reason"] == "One-off special order"
    listed = client.get("/api/v1/purchases?excluded=true", headers=buyer.headers).get_json()[
        "items"
    ]
    assert [p["id"] for p in listed] == [purchase.id]
    back = client.post(f"/api/v1/purchases/{purchase.id}/include", headers=operator.headers)
    assert back.get_json()["benchmark_excluded"] is False
    assert back.get_json()["benchmark_excluded_reason"] is None


def test_rows_with_wrong_field_counts_and_blank_lines(client, db, world, buyer):
    body = csv_bytes([line("PO-W", 1)]) + b"\n" + b"PO-W,2,2026-01-01\n"
    result = _post(client, buyer, body).get_json()
    assert result["imported"] == 1
    assert result["rejected"] == 1
    assert result["errors"][0]["column"] == "*"
    assert result["errors"][0]["row"] == 4


def test_old_and_recent_dates(client, world, buyer):
    rows = [line("PO-D", 1, when=days_ago(0)), line("PO-D", 2, order_date="1999-12-31")]
    result = _post(client, buyer, csv_bytes(rows)).get_json()
    assert result["imported"] == 1
    assert result["errors"][0]["column"] == "order_date"


def test_imports_count_their_rows_in_the_metrics(client, world, buyer, import_as):
    def rows_counted(outcome: str) -> float:
        return metric("marketplace_import_rows_total", import_kind="purchases", outcome=outcome)

    processed, rejected = rows_counted("processed"), rows_counted("rejected")
    response = _post(client, buyer, csv_bytes(_mixed_rows(world)))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert rows_counted("processed") - processed == 6
    assert rows_counted("rejected") - rejected == 3

    running = []
    import_as(
        world.trust(1),
        [line("PO-9", 1, total_price_pence="")],
        on_error=lambda _e: running.append(
            metric("marketplace_imports_in_progress", import_kind="purchases")
        ),
    )
    assert running == [1.0]
    assert metric("marketplace_imports_in_progress", import_kind="purchases") == 0


def test_a_purchase_file_may_be_larger_than_other_bodies(migrated, app, db, factory, monkeypatch):
    """Purchase files stream in constant memory, so their limit (2 GiB) is their own, not
    MAX_CONTENT_LENGTH; beyond it they are refused whole (413) before anything is read."""
    from marketplace import create_app

    small = create_app(migrated.with_overrides(max_content_length=1024))
    client = small.test_client()
    buyer = factory.actor(Role.BUYER)
    body = csv_bytes([line("PO-BIG", n) for n in range(1, 40)])
    assert len(body) > 1024
    response = _post(client, buyer, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["imported"] == 39
    # Other bodies keep the application's limit, the offer import among them.
    supplier = factory.actor(Role.SUPPLIER)
    offers = client.post(
        "/api/v1/offers/import", data=body, content_type="text/csv", headers=supplier.headers
    )
    assert_problem(offers, 413)
    # And the purchase import's own limit holds.
    view = small.view_functions["pricing.import_purchases"]
    monkeypatch.setattr(view, STREAMED_BODY_ATTRIBUTE, len(body) - 1)
    before = _count(db)
    assert_problem(_post(client, buyer, csv_bytes([line("PO-BIG2", n) for n in range(1, 40)])), 413)
    db.rollback()
    assert _count(db) == before
    small.extensions["marketplace"].engine.dispose()
