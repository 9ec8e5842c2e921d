"""Import limits and repeated lines: over-long numbers are row errors (not a 500), and a line
whose key was already imported with different values is a rejected row, never dropped
silently; identical repeats are simply already imported."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace import cli
from marketplace.accounts.models import Organisation
from marketplace.pricing import service
from marketplace.pricing.importer import MAX_NUMBER_DIGITS
from marketplace.pricing.models import PurchaseRecord
from tests.support import SYSTEM

from .conftest import csv_bytes, json_bytes, line


def _post(client, actor, body: bytes, content_type="text/csv"):
    return client.post(
        "/api/v1/purchases/import", data=body, content_type=content_type, headers=actor.headers
    )


def _records(db) -> list[PurchaseRecord]:
    db.expire_all()
    return list(db.scalars(select(PurchaseRecord).order_by(PurchaseRecord.line)))


def _count(db) -> int:
    return db.scalar(select(func.count()).select_from(PurchaseRecord))


# --- over-long numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("quantity", "9" * 5000),
        ("total_price_pence", "0" * 4400 + "5"),
        ("line", "1" * (MAX_NUMBER_DIGITS + 1)),
        ("units_per_pack", "0" * (MAX_NUMBER_DIGITS + 1)),
    ],
)
def test_an_over_long_number_cell_is_a_row_error(client, db, world, buyer, column, value):
    rows = [line("PO-1", 1), line("PO-1", 2, **{column: value})]
    r = _post(client, buyer, csv_bytes(rows))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert (body["imported"], body["rejected"]) == (1, 1), body
    (error,) = body["errors"]
    assert error["row"] == 3
    assert error["column"] == column
    assert f"at most {MAX_NUMBER_DIGITS} digits" in error["reason"]
    assert [rec.line for rec in _records(db)] == [1]


def test_leading_zeros_within_the_limit_are_accepted(client, db, world, buyer):
    padded = "0" * (MAX_NUMBER_DIGITS - 3) + "250"
    r = _post(client, buyer, csv_bytes([line("PO-1", 1, total_price_pence=padded)]))
    assert r.get_json()["imported"] == 1
    assert _records(db)[0].total_price_pence == 250


def test_a_huge_json_integer_literal_is_a_row_error(client, db, world, buyer):
    huge = b"9" * 5000
    body = (
        b'[{"po_number":"PO-1","line":1,"order_date":"'
        + line("x", 1)["order_date"].encode()
        + b'","description":"x","quantity":'
        + huge
        + b',"total_price_pence":100},'
        + b'{"po_number":'
        + huge
        + b',"line":2,"order_date":"'
        + line("x", 1)["order_date"].encode()
        + b'","description":"x","quantity":1,"total_price_pence":100},'
        + json_bytes([line("PO-1", 3)])[1:-1]
        + b"]"
    )
    r = _post(client, buyer, body, "application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    res = r.get_json()
    assert (res["rows"], res["imported"], res["rejected"]) == (3, 1, 2), res
    assert [(e["row"], e["column"]) for e in res["errors"]] == [
        (1, "quantity"),
        (2, "po_number"),
    ]
    assert "at most 20 digits, got 5,000 digits" in res["errors"][0]["reason"]
    assert [rec.line for rec in _records(db)] == [3]


def test_cli_reports_an_over_long_number_as_a_row_error(app, monkeypatch, db, world, tmp_path):
    monkeypatch.setattr(cli, "_state", app.extensions["marketplace"])
    path = tmp_path / "lines.csv"
    path.write_bytes(csv_bytes([line("PO-1", 1), line("PO-1", 2, quantity="9" * 5000)]))
    result = CliRunner().invoke(cli.main, ["pricing", "import", str(path), "--trust", "RT0"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "lines.csv:3: quantity: must be a whole number of packs of at most" in result.output
    assert _count(db) == 1


# --- repeated lines -------------------------------------------------------------------------


def test_a_repeated_line_with_different_values_in_one_file_is_rejected(client, db, world, buyer):
    rows = [
        line("PO-9", 1, quantity=1, total_price_pence=100),
        line("PO-9", 2),
        line("PO-9", 1, quantity=5, total_price_pence=99999),
    ]
    res = _post(client, buyer, csv_bytes(rows)).get_json()
    assert (res["rows"], res["imported"], res["already_imported"], res["rejected"]) == (
        3,
        2,
        0,
        1,
    ), res
    assert res["errors"] == [
        {
            "row": 4,
            "column": "line",
            "reason": "PO-9 line 1 was already imported with different values (row 2 of this "
            "file); correct or renumber it",
        }
    ]
    first = _records(db)[0]
    assert (first.quantity, first.total_price_pence) == (1, 100)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_identical_repeat_in_one_file_is_already_imported(client, db, world, buyer, fmt):
    rows = [line("PO-9", 1, supplier_name="Acme"), line("PO-9", 1, supplier_name="Acme")]
    body = csv_bytes(rows) if fmt == "csv" else json_bytes(rows)
    ctype = "text/csv" if fmt == "csv" else "application/json"
    res = _post(client, buyer, body, ctype).get_json()
    assert (res["imported"], res["already_imported"], res["rejected"]) == (1, 1, 0), res
    assert _count(db) == 1


def test_a_repeat_in_a_later_batch_of_the_same_file(db, world, session_factory):
    rows = [line("PO-9", n) for n in range(1, 4)] + [
        line("PO-9", 2),  # identical: already imported
        line("PO-9", 3, description="changed"),
    ]
    with session_factory.begin() as session:
        org = session.get(Organisation, world.trust(0).id)
        result = service.import_purchases(
            session, SYSTEM, org, io.BytesIO(csv_bytes(rows)), "csv", batch_size=2
        )
    assert (result.imported, result.already_imported, result.rejected) == (3, 1, 1)
    assert result.errors == [
        {
            "row": 6,
            "column": "line",
            "reason": "PO-9 line 3 was already imported with different values (an earlier row "
            "of this file); correct or renumber it",
        }
    ]
    assert [r.description for r in _records(db)] == ["item", "item", "item"]


@pytest.mark.parametrize(
    "change",
    [
        {"order_date": "2024-01-02"},
        {"supplier_name": "Other Ltd"},
        {"supplier_sku": "SKU-2"},
        {"description": "other item"},
        {"quantity": 2},
        {"units_per_pack": 7},
        {"total_price_pence": 101},
    ],
)
def test_a_reimport_with_different_values_is_rejected(client, db, world, buyer, change):
    first = line("PO-9", 1, units_per_pack=5, supplier_sku="SKU-1")
    assert _post(client, buyer, csv_bytes([first])).get_json()["imported"] == 1
    before = [(r.order_date, r.description, r.quantity, r.total_price_pence) for r in _records(db)]
    res = _post(client, buyer, csv_bytes([{**first, **change}, line("PO-9", 2)])).get_json()
    assert (res["imported"], res["already_imported"], res["rejected"]) == (1, 0, 1), res
    assert res["errors"] == [
        {
            "row": 2,
            "column": "line",
            "reason": "PO-9 line 1 was already imported with different values (an earlier "
            "import); correct or renumber it",
        }
    ]
    after = [(r.order_date, r.description, r.quantity, r.total_price_pence) for r in _records(db)]
    assert after[:1] == before


def test_reimporting_the_same_file_is_all_already_imported(client, db, world, buyer):
    rows = [line("PO-9", n, quantity=n, supplier_name="Acme") for n in range(1, 4)]
    rows.append(line("PO-9", 4, units_per_pack=""))  # left to the catalogue match
    first = _post(client, buyer, csv_bytes(rows)).get_json()
    again = _post(client, buyer, csv_bytes(rows)).get_json()
    assert first["imported"] == 4
    assert (again["imported"], again["already_imported"], again["rejected"]) == (0, 4, 0), again
    assert _count(db) == 4
