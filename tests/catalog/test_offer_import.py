"""Bulk listing from CSV through the API and the CLI: mixed rows, dry run, idempotency,
malformed files."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace.accounts.models import OrgType, Role
from marketplace.audit import AuditEvent
from marketplace.catalog.models import Offer, OfferPriceHistory, Product
from marketplace.catalog.offer_import import COLUMNS
from tests.catalog.conftest import GTIN_BANDAGE, GTIN_BANDAGE_2, GTIN_OTHER, run
from tests.support import assert_problem, metric

HEADER = ",".join(COLUMNS)
GOOD_ROWS = [
    # a new GTIN: creates the product and the offer
    f"{GTIN_BANDAGE},Profore #4 bandage 10cm x 2.5m,Smith & Nephew,Profore,66000000,33141113,H87,1,391,20,100,2,1,NG-1",
    # no GTIN: creates a product found again by its supplier SKU
    ",Foam dressing 10cm x 10cm,Advancis,Advazorb,ADV10,33141110,H87,10,1590,,250,,,NG-2",
    # a GTIN already in the catalogue: only the offer
    f"{GTIN_OTHER},,,,,,,1,250,0,40,3,5,NG-3",
]
BAD_ROWS = [
    ("5000223456031,Bad check digit,,,,33141113,H87,1,100,20,1,1,1,NG-4", "gtin", "check digit"),
    (
        f"{GTIN_BANDAGE_2},Half a penny,,,,33141113,H87,1,2.5,20,1,1,1,NG-5",
        "pack_price_pence",
        "whole number",
    ),
    (
        f"{GTIN_BANDAGE_2},Exponent,,,,33141113,H87,1,1e-9,20,1,1,1,NG-6",
        "pack_price_pence",
        "whole number",
    ),
    (
        f"{GTIN_BANDAGE_2},Bad VAT,,,,33141113,H87,1,100,17.5,1,1,1,NG-7",
        "vat_rate_percent",
        "0, 5 or 20",
    ),
    (f"{GTIN_BANDAGE_2},No category,,,,,H87,1,100,20,1,1,1,NG-8", "category_code", "Required"),
    (
        f"{GTIN_BANDAGE_2},Unknown category,,,,99999999,H87,1,100,20,1,1,1,NG-9",
        "category_code",
        "No category",
    ),
    (
        f"{GTIN_BANDAGE_2},Bad unit,,,,33141113,QQQ,1,100,20,1,1,1,NG-10",
        "unit_of_measure",
        "Recommendation 20",
    ),
    (
        f"{GTIN_BANDAGE_2},No pack size,,,,33141113,H87,,100,20,1,1,1,NG-11",
        "units_per_pack",
        "Required",
    ),
    (f"{GTIN_OTHER},,,,,,,12,250,0,40,3,5,NG-12", "units_per_pack", "units per pack"),
    (",No GTIN and no SKU,,,,33141113,H87,1,100,20,1,1,1,", "supplier_sku", "supplier_sku"),
    (f"{GTIN_BANDAGE_2},Too few cells,,,", "row", "cells"),
]


def csv_bytes(rows, header=HEADER, bom=False) -> bytes:
    text = "\n".join([header, *rows]) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def counts(db) -> tuple[int, int, int, int]:
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    return tuple(
        db.scalar(select(func.count()).select_from(model))
        for model in (Product, Offer, OfferPriceHistory, AuditEvent)
    )


def upload(client, actor, data: bytes, query: str = "", multipart: bool = True):
    url = "/api/v1/offers/import" + (f"?{query}" if query else "")
    if multipart:
        return client.post(
            url,
            data={"file": (io.BytesIO(data), "prices.csv")},
            content_type="multipart/form-data",
            headers=actor.headers,
        )
    return client.post(url, data=data, content_type="text/csv", headers=actor.headers)


def test_mixed_rows_apply_the_valid_and_report_the_invalid(client, db, supplier, existing):
    rows = (
        [GOOD_ROWS[0], BAD_ROWS[0][0], GOOD_ROWS[1]]
        + [r for r, _, _ in BAD_ROWS[1:]]
        + [GOOD_ROWS[2]]
    )
    response = upload(client, supplier, csv_bytes(rows, bom=True))
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["rows"] == len(rows)
    assert (report["created_products"], report["created_offers"], report["updated_offers"]) == (
        2,
        3,
        0,
    )
    assert (report["unchanged"], report["rejected"]) == (0, len(BAD_ROWS))
    by_row = {}
    for error in report["errors"]:
        by_row.setdefault(error["row"], []).append(error)
    # header is row 1; the first bad row is the second data row
    bad_numbers = [3, *list(range(5, 5 + len(BAD_ROWS) - 1))]
    assert sorted(by_row) == bad_numbers
    for number, (_, column, reason) in zip(bad_numbers, BAD_ROWS, strict=True):
        assert any(e["column"] == column and reason in e["reason"] for e in by_row[number]), (
            number,
            by_row[number],
        )
    offers = {o.supplier_sku: o for o in db.scalars(select(Offer))}
    assert set(offers) == {"NG-1", "NG-2", "NG-3"}
    assert offers["NG-3"].product_id == existing.id
    assert offers["NG-3"].min_order_qty == 5
    assert str(offers["NG-3"].vat_rate_percent) == "0.00"
    assert offers["NG-2"].stock == 250
    assert offers["NG-2"].lead_time_days == 0
    assert offers["NG-2"].product.units_per_pack == 10
    assert offers["NG-2"].product.gtin is None
    assert offers["NG-1"].product.created_by_supplier_id == supplier.org.id


def test_dry_run_reports_the_same_and_writes_nothing(client, db, supplier, existing):
    data = csv_bytes([*GOOD_ROWS, BAD_ROWS[0][0]])
    before = counts(db)
    response = upload(client, supplier, data, "dry_run=true", multipart=False)
    report = response.get_json()
    assert report["dry_run"] is True
    assert (report["created_products"], report["created_offers"], report["rejected"]) == (2, 3, 1)
    assert counts(db) == before
    real = upload(client, supplier, data).get_json()
    assert {k: real[k] for k in ("created_products", "created_offers", "rejected")} == {
        "created_products": 2,
        "created_offers": 3,
        "rejected": 1,
    }


def test_reupload_changes_nothing_and_a_price_change_updates(client, db, supplier, existing):
    data = csv_bytes(GOOD_ROWS)
    assert upload(client, supplier, data).get_json()["created_offers"] == 3
    after_first = counts(db)
    again = upload(client, supplier, data).get_json()
    assert (again["unchanged"], again["created_offers"], again["updated_offers"]) == (3, 0, 0)
    assert counts(db) == after_first
    changed = [GOOD_ROWS[0].replace(",391,", ",380,"), *GOOD_ROWS[1:]]
    report = upload(client, supplier, csv_bytes(changed)).get_json()
    assert (report["updated_offers"], report["unchanged"]) == (1, 2)
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    offer = db.scalar(select(Offer).where(Offer.supplier_sku == "NG-1"))
    prices = db.scalars(
        select(OfferPriceHistory.pack_price_pence)
        .where(OfferPriceHistory.offer_id == offer.id)
        .order_by(OfferPriceHistory.effective_from)
    ).all()
    assert prices == [391, 380]


def test_second_supplier_lists_on_the_first_suppliers_product(
    client, db, factory, supplier, categories
):
    assert upload(client, supplier, csv_bytes(GOOD_ROWS[:1])).get_json()["created_products"] == 1
    other = factory.actor(Role.SUPPLIER)
    report = upload(client, other, csv_bytes([GOOD_ROWS[0].replace(",391,", ",350,")])).get_json()
    assert (report["created_products"], report["created_offers"]) == (0, 1)
    product = db.scalar(select(Product))
    body = client.get(f"/api/v1/products/{product.id}").get_json()
    assert [o["pack_price_pence"] for o in body["offers"]] == [350, 391]


MALFORMED = {
    "not utf-8": HEADER.encode()
    + b"\n"
    + "5000223456030,Bandage \xe9t\xe9,,,,33141113,H87,1,1,20,1,1,1,X\n".encode("latin-1"),
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
    "empty": b"",
    "blank lines only": b"\n\n",
    "header only": (HEADER + "\n").encode(),
    "unknown column": csv_bytes(GOOD_ROWS, header=HEADER + ",colour"),
    "missing column": csv_bytes(GOOD_ROWS, header=HEADER.replace(",supplier_sku", "")),
    "repeated column": csv_bytes(GOOD_ROWS, header=HEADER.replace("supplier_sku", "gtin")),
    "json": b'{"gtin": "5000223456030", "pack_price_pence": 100}\n',
    "bad quoting": (HEADER + '\n"5000223456030"x,"unterminated\n').encode(),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_are_4xx_and_write_nothing(client, db, supplier, existing, case):
    data = MALFORMED[case]
    if case == "not utf-8":  # valid rows come first: they must not be kept either
        data = csv_bytes(GOOD_ROWS) + data.split(b"\n", 1)[1]
    before = counts(db)
    for multipart in (True, False):
        response = upload(client, supplier, data, multipart=multipart)
        body = assert_problem(response, 400, code="malformed-csv")
        assert body["detail"]
        assert counts(db) == before
    if case == "unknown column":
        assert body["unknown_columns"] == ["colour"]
    if case == "missing column":
        assert body["missing_columns"] == ["supplier_sku"]


def test_row_limit_rejects_the_whole_file(db, session_factory, supplier, existing):
    from marketplace.catalog import offer_import
    from marketplace.db import unit_of_work

    before = counts(db)
    with (
        pytest.raises(offer_import.MalformedFile, match="more than 2 rows"),
        unit_of_work(session_factory) as session,
    ):
        offer_import.import_offers(
            session, supplier.principal, io.BytesIO(csv_bytes(GOOD_ROWS)), max_rows=2
        )
    assert counts(db) == before


def test_wrong_content_type_is_415(client, supplier, categories):
    response = client.post("/api/v1/offers/import", json={"rows": []}, headers=supplier.headers)
    assert_problem(response, 415)


def test_import_roles_and_operator_supplier(client, factory, db, supplier, categories):
    data = csv_bytes(GOOD_ROWS[:1])
    for role in (Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER):
        assert_problem(upload(client, factory.actor(role), data), 403)
    assert_problem(
        upload(client, supplier, data, f"supplier_id={factory.org(OrgType.SUPPLIER).id}"), 403
    )
    operator = factory.actor(Role.OPERATOR)
    assert_problem(upload(client, operator, data), 422)
    report = upload(client, operator, data, f"supplier_id={supplier.org.id}").get_json()
    assert report["supplier_id"] == supplier.org.id
    assert report["created_offers"] == 1
    assert db.scalar(select(Offer.supplier_id)) == supplier.org.id


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_import_reports_rows_on_stderr_and_summary_on_stdout(
    cli, tmp_path, db, supplier, existing
):
    path = tmp_path / "prices.csv"
    path.write_bytes(csv_bytes([*GOOD_ROWS, BAD_ROWS[1][0]]))
    result = run(cli, str(path), "--supplier", supplier.org.name)
    assert result.exit_code == 0, result.output
    assert "created offers: 3" in result.stdout
    assert "rejected: 1" in result.stdout
    assert f"{path}:5: pack_price_pence: '2.5' is not a whole number." in result.stderr
    assert "created offers" not in result.stderr
    assert counts(db)[1] == 3

    again = run(cli, str(path), "--supplier", supplier.org.id)
    assert again.exit_code == 0
    assert "unchanged: 3" in again.stdout


def test_cli_dry_run_writes_nothing(cli, tmp_path, db, supplier, existing):
    path = tmp_path / "prices.csv"
    path.write_bytes(csv_bytes(GOOD_ROWS))
    before = counts(db)
    result = run(cli, str(path), "--supplier", supplier.org.id, "--dry-run")
    assert result.exit_code == 0
    assert "dry run: nothing was written" in result.stdout
    assert "created offers: 3" in result.stdout
    assert counts(db) == before


@pytest.mark.parametrize("case", ["not utf-8", "unknown column", "header only"])
def test_cli_malformed_file_exits_non_zero_with_one_line(
    cli, tmp_path, db, supplier, existing, case
):
    path = tmp_path / "prices.csv"
    data = MALFORMED[case]
    if case == "not utf-8":
        data = csv_bytes(GOOD_ROWS) + data.split(b"\n", 1)[1]
    path.write_bytes(data)
    before = counts(db)
    result = run(cli, str(path), "--supplier", supplier.org.id)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("marketplace:")]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    assert counts(db) == before


def test_cli_unknown_supplier_or_file(cli, tmp_path, supplier, categories, factory):
    path = tmp_path / "prices.csv"
    path.write_bytes(csv_bytes(GOOD_ROWS[:1]))
    result = run(cli, str(path), "--supplier", "Nobody Ltd")
    assert result.exit_code == 1
    assert "Nobody Ltd" in result.stderr
    trust = factory.org(OrgType.TRUST)
    result = run(cli, str(path), "--supplier", trust.id)
    assert result.exit_code == 1
    assert "not a supplier" in result.stderr
    result = run(cli, str(tmp_path / "missing.csv"), "--supplier", supplier.org.id)
    assert result.exit_code != 0


def test_cli_help_explains_exit_status(cli):
    result = CliRunner().invoke(cli, ["catalog", "import-offers", "--help"])
    assert "Exit status" in result.output
    assert "FILE:ROW: COLUMN: reason" in result.output


def test_imports_count_their_rows_in_the_metrics(client, db, session_factory, supplier, existing):
    def rows_counted(outcome: str) -> float:
        return metric("marketplace_import_rows_total", import_kind="offers", outcome=outcome)

    processed, rejected = rows_counted("processed"), rows_counted("rejected")
    response = upload(client, supplier, csv_bytes([GOOD_ROWS[0], BAD_ROWS[0][0], GOOD_ROWS[1]]))
    assert response.status_code == 200, response.get_json()
    assert rows_counted("processed") - processed == 3
    assert rows_counted("rejected") - rejected == 1

    from marketplace.catalog import offer_import
    from marketplace.db import unit_of_work

    running = []
    with unit_of_work(session_factory) as session:
        offer_import.import_offers(
            session,
            supplier.principal,
            io.BytesIO(csv_bytes(GOOD_ROWS[2:])),
            on_row=lambda _n: running.append(
                metric("marketplace_imports_in_progress", import_kind="offers")
            ),
        )
    assert running == [1.0]
    assert metric("marketplace_imports_in_progress", import_kind="offers") == 0


def test_a_file_with_too_many_rows_is_refused_whole_through_the_api(
    client, db, supplier, existing, monkeypatch
):
    from marketplace.catalog import offer_import

    monkeypatch.setattr(offer_import, "MAX_ROWS", 2)
    before = counts(db)
    response = upload(client, supplier, csv_bytes(GOOD_ROWS))
    body = assert_problem(response, 400, code="malformed-csv")
    assert "more than 2 rows" in body["detail"]
    assert counts(db) == before


def test_a_file_listing_a_product_or_sku_twice_rejects_the_repeat(client, db, supplier, existing):
    # the later row would overwrite the earlier one on every upload, so it is refused and a
    # second upload of the same file changes nothing
    rows = [
        f"{GTIN_BANDAGE},Bandage,,,,33141113,H87,1,391,20,100,2,1,SKU-A",
        f"{GTIN_BANDAGE},Bandage,,,,33141113,H87,1,350,20,100,2,1,SKU-B",  # same product
        f"{GTIN_OTHER},,,,,,,1,250,0,40,3,5,SKU-A",  # same SKU, another product
        f"{GTIN_OTHER},,,,,,,1,250,0,40,3,5,SKU-C",
    ]
    report = upload(client, supplier, csv_bytes(rows)).get_json()
    assert (report["created_products"], report["created_offers"], report["rejected"]) == (1, 2, 2)
    errors = {(e["row"], e["column"]): e["reason"] for e in report["errors"]}
    assert set(errors) == {(3, "gtin"), (4, "supplier_sku")}
    assert "Row 2 already lists this product" in errors[(3, "gtin")]
    assert "Row 2 already lists this supplier_sku" in errors[(4, "supplier_sku")]
    after_first = counts(db)
    offers = {o.supplier_sku: o.pack_price_pence for o in db.scalars(select(Offer))}
    assert offers == {"SKU-A": 391, "SKU-C": 250}
    again = upload(client, supplier, csv_bytes(rows)).get_json()
    assert (again["unchanged"], again["updated_offers"], again["rejected"]) == (2, 0, 2)
    assert counts(db) == after_first


def test_a_rejected_row_does_not_claim_its_product_for_the_file(client, db, supplier, existing):
    rows = [
        f"{GTIN_OTHER},,,,,,,1,250,17,40,3,5,SKU-X",  # bad VAT: rejected
        f"{GTIN_OTHER},,,,,,,1,250,0,40,3,5,SKU-X",
    ]
    report = upload(client, supplier, csv_bytes(rows)).get_json()
    assert (report["created_offers"], report["rejected"]) == (1, 1)
    assert [(e["row"], e["column"]) for e in report["errors"]] == [(2, "vat_rate_percent")]


def test_empty_optional_cells_keep_an_existing_offers_values(client, db, supplier, existing):
    first = upload(
        client, supplier, csv_bytes([f"{GTIN_OTHER},,,,,,,1,990,0,500,7,10,KEEP"])
    ).get_json()
    assert first["created_offers"] == 1
    # the price moves; VAT, stock, lead time, minimum quantity and SKU are left empty
    report = upload(client, supplier, csv_bytes([f"{GTIN_OTHER},,,,,,,1,950,,,,,"])).get_json()
    assert (report["updated_offers"], report["rejected"]) == (1, 0), report
    db.rollback()
    offer = db.scalar(select(Offer).where(Offer.product_id == existing.id))
    assert (offer.pack_price_pence, str(offer.vat_rate_percent), offer.stock) == (950, "0.00", 500)
    assert (offer.lead_time_days, offer.min_order_qty, offer.supplier_sku) == (7, 10, "KEEP")
    # a new offer takes the defaults for the same empty cells
    new = upload(
        client, supplier, csv_bytes([",Gauze swab,,,,33141110,H87,5,120,,,,,NEW-1"])
    ).get_json()
    assert new["created_offers"] == 1
    db.rollback()
    created = db.scalar(select(Offer).where(Offer.supplier_sku == "NEW-1"))
    assert (str(created.vat_rate_percent), created.stock) == ("20.00", 0)
    assert (created.lead_time_days, created.min_order_qty) == (0, 1)


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        (f"{GTIN_BANDAGE},Band\x00age,,,,33141113,H87,1,391,20,1,1,1,NUL-1", "name", "NUL"),
        (f"{GTIN_BANDAGE},{'n' * 301},,,,33141113,H87,1,391,20,1,1,1,LONG-1", "name", "300"),
        (
            f"{GTIN_BANDAGE},Bandage,,,,33141113,H87,1,391,20,1,1,1,{'S' * 101}",
            "supplier_sku",
            "100",
        ),
        (
            f"{GTIN_BANDAGE},Bandage,{'m' * 201},,,33141113,H87,1,391,20,1,1,1,L3",
            "manufacturer",
            "200",
        ),
        (f"{GTIN_BANDAGE},Bandage,,,{'9' * 101},33141113,H87,1,391,20,1,1,1,L4", "mpn", "100"),
        ("1234567\u00b2,Bandage,,,,33141113,H87,1,391,20,1,1,1,DIG-1", "gtin", "digits only"),
        (
            # the same GTIN in full-width digits
            "".join(chr(0xFF10 + int(d)) for d in GTIN_BANDAGE)
            + ",Bandage,,,,33141113,H87,1,391,20,1,1,1,DIG-2",
            "gtin",
            "digits only",
        ),
    ],
)
def test_cells_the_catalogue_cannot_hold_are_row_errors(
    client, db, supplier, existing, row, column, reason
):
    before = counts(db)
    report = upload(client, supplier, csv_bytes([row])).get_json()
    assert report["rejected"] == 1, report
    assert any(e["column"] == column and reason in e["reason"] for e in report["errors"]), report
    assert counts(db) == before


def test_a_price_below_a_volume_break_names_the_price_column(client, db, supplier, existing):
    created = client.post(
        "/api/v1/offers",
        json={
            "product_id": existing.id,
            "pack_price_pence": 1000,
            "vat_rate_percent": 20,
            "supplier_sku": "BRK-1",
            "price_breaks": [{"min_qty": 10, "pack_price_pence": 900}],
        },
        headers=supplier.headers,
    )
    assert created.status_code == 201, created.get_json()["errors"]
    report = upload(client, supplier, csv_bytes([f"{GTIN_OTHER},,,,,,,1,800,,,,,BRK-1"])).get_json()
    assert report["rejected"] == 1
    assert {e["column"] for e in report["errors"]} == {"pack_price_pence"}
