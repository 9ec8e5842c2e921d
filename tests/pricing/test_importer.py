"""The streaming readers on their own: chunk boundaries anywhere (inside a JSON object, inside a
multi-byte character), empty lists, trailing garbage, and row checks."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest

from marketplace.pricing import importer
from marketplace.pricing.importer import MalformedFile, parse_row, read_rows

from .conftest import csv_bytes, line, make_gtin

ROWS = [
    line("PO-é", i, description="Gants nitrile taille M — boîte de 100 ✓", gtin=make_gtin(1))
    for i in range(1, 40)
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 65536])
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_rows_survive_any_chunk_boundary(monkeypatch, chunk, fmt):
    monkeypatch.setattr(importer, "CHUNK_BYTES", chunk)
    body = (
        csv_bytes(ROWS) if fmt == "csv" else json.dumps(ROWS, ensure_ascii=False, indent=1).encode()
    )
    rows = list(read_rows(io.BytesIO(body), fmt))
    assert [r["line"] for _, r in rows] == [str(i) if fmt == "csv" else i for i in range(1, 40)]
    assert all(r["description"] == ROWS[0]["description"] for _, r in rows)
    assert rows[0][0] == (2 if fmt == "csv" else 1)


@pytest.mark.parametrize(
    ("body", "count"),
    [(b"[]", 0), (b"  [ ]  \n", 0), (b'\xef\xbb\xbf[{"po_number": "P"}]', 1)],
)
def test_json_edges(body, count):
    assert len(list(read_rows(io.BytesIO(body), "json"))) == count


@pytest.mark.parametrize(
    "body",
    [
        b"[] x",
        b'[{"po_number": "P"} {"po_number": "Q"}]',
        b'[{"po_number": "P"},]',
        b"[{",
        b"{}",
        b"nope",
    ],
)
def test_json_garbage_is_malformed(body):
    with pytest.raises(MalformedFile):
        list(read_rows(io.BytesIO(body), "json"))


def test_a_huge_json_element_is_refused_without_reading_the_rest(monkeypatch):
    monkeypatch.setattr(importer, "MAX_JSON_OBJECT_CHARS", 1000)
    monkeypatch.setattr(importer, "CHUNK_BYTES", 100)
    body = b'[{"description": "' + b"x" * 5000 + b'"}]'
    with pytest.raises(MalformedFile):
        list(read_rows(io.BytesIO(body), "json"))


def test_parse_row_reports_every_bad_column():
    values = line(
        "",
        0,
        order_date="01/02/2026",
        gtin="123",
        quantity="-1",
        units_per_pack="1.5",
        total_price_pence="abc",
        description="x" * 501,
    )
    parsed, errors = parse_row(7, values, date(2026, 11, 1))
    assert parsed is None
    assert {e.column for e in errors} == {
        "po_number",
        "line",
        "order_date",
        "gtin",
        "quantity",
        "units_per_pack",
        "total_price_pence",
        "description",
    }
    assert all(e.row == 7 for e in errors)


def test_parse_row_accepts_json_integers_and_digit_strings():
    values = {
        "po_number": "P",
        "line": 3,
        "order_date": "2026-01-02",
        "gtin": make_gtin(1),
        "quantity": "4",
        "units_per_pack": 10,
        "total_price_pence": 1234,
    }
    parsed, errors = parse_row(1, values, date(2026, 11, 1))
    assert errors == []
    assert (parsed.line, parsed.quantity, parsed.units_per_pack, parsed.total_price_pence) == (
        3,
        4,
        10,
        1234,
    )
    assert parsed.gtin == make_gtin(1).zfill(14)
    _, bad = parse_row(1, values | {"quantity": 2.0, "line": True}, date(2026, 11, 1))
    assert {e.column for e in bad} == {"quantity", "line"}
