"""CSV rows are numbered as a spreadsheet shows them: the header is row 1 and each record is
one row, however many lines a quoted cell with line breaks makes it span in the file. Every
number an import reports (rejected rows, the earlier row of a repeated line, where a file
stopped being readable) counts records, on the API and the CLI."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace import cli
from marketplace.pricing import importer
from marketplace.pricing.importer import COLUMNS, MalformedFile, read_rows
from marketplace.pricing.models import PurchaseRecord
from tests.support import assert_problem

from .conftest import csv_bytes, line, make_gtin

HEADER = ",".join(COLUMNS).encode() + b"\n"


def _rows_with_multiline_cells() -> bytes:
    """Rows 2 and 4 have descriptions spanning two and three lines in the file."""
    return (
        csv_bytes(
            [
                line(
                    "PO-1", 1, gtin=make_gtin(1), description="Nitrile gloves,\nbox of 100"
                ),  # row 2
                line("PO-1", 2, quantity="two"),  # row 3: bad quantity
                line("PO-1", 3, description="Dressing pack\r\nsterile\nsingle use"),  # row 4
                line("PO-1", 4, order_date="2026-02-30"),  # row 5: not a real date
                line("PO-1", 1, gtin=make_gtin(1), quantity=9),  # row 6: repeats row 2's line
            ]
        )
        + b"PO-1,5,too,few\n"
    )  # row 7: four fields


EXPECTED = [
    (3, "quantity", "must be a whole number of packs, got 'two'"),
    (5, "order_date", "'2026-02-30' is not a real date"),
    (
        6,
        "line",
        "PO-1 line 1 was already imported with different values (row 2 of this file); "
        "correct or renumber it",
    ),
    (7, "*", "has 4 fields; the header has 10"),
]


def _post(client, actor, body: bytes):
    return client.post(
        "/api/v1/purchases/import", data=body, content_type="text/csv", headers=actor.headers
    )


def test_the_reader_numbers_records_not_lines():
    body = _rows_with_multiline_cells()
    assert body.count(b"\n") == 10  # ten lines in the file for seven rows
    numbers = [row for row, _ in read_rows(io.BytesIO(body), "csv")]
    assert numbers == [2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("chunk", [1, 5, 65536])
def test_a_blank_line_is_a_row_as_a_spreadsheet_shows_it(monkeypatch, chunk):
    monkeypatch.setattr(importer, "CHUNK_BYTES", chunk)
    body = HEADER + b'P,1,2026-01-01,,,,"two\nlines",1,,1\n\nP,2,2026-01-01,,,,x,1,,1\n'
    assert [row for row, _ in read_rows(io.BytesIO(body), "csv")] == [2, 4]


def test_rejected_rows_after_a_multiline_cell_have_their_spreadsheet_numbers(
    client, db, world, buyer
):
    response = _post(client, buyer, _rows_with_multiline_cells())
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["rows"] == 6
    assert body["imported"] == 2
    assert body["rejected"] == 4
    errors = sorted((e["row"], e["column"], e["reason"]) for e in body["errors"])
    assert errors == EXPECTED
    descriptions = set(db.scalars(select(PurchaseRecord.description)))
    assert descriptions == {"Nitrile gloves,\nbox of 100", "Dressing pack\r\nsterile\nsingle use"}


def test_a_line_repeated_in_a_later_batch_names_its_row(world, import_as):
    """A repeat in another batch of 2,000 rows is "an earlier row of this file"; its own row
    number still counts records."""
    rows = [
        line("PO-B", 1, description="a\nb"),
        line("PO-B", 2, description="c\nd"),
        line("PO-B", 1, description="changed"),  # row 4, in the second batch
    ]
    result = import_as(world.trust(0), rows, batch_size=2)
    assert [(e["row"], e["column"]) for e in result.errors] == [(4, "line")]
    assert "(an earlier row of this file)" in result.errors[0]["reason"]


@pytest.mark.parametrize(
    ("tail", "row"),
    [
        (b'PO-1,2,2026-01-01,,,,"ab"c,1,,1\n', 3),  # a quote inside a quoted cell
        (b'PO-1,2,2026-01-01,,,,"never closed,1,,1\nPO-1,3\n', 3),  # to the end of the file
    ],
)
def test_unreadable_csv_names_the_row_it_could_not_read(client, db, world, buyer, tail, row):
    body = HEADER + b'PO-1,1,2026-01-01,,,,"one\nrecord",1,,1\n' + tail
    with pytest.raises(MalformedFile) as raised:
        list(read_rows(io.BytesIO(body), "csv"))
    assert re.search(rf"\bat row {row}\b", raised.value.detail), raised.value.detail
    problem = assert_problem(_post(client, buyer, body), 400, code="bad-csv")
    assert re.search(rf"\bat row {row}\b", problem["detail"]), problem["detail"]
    assert db.scalar(select(func.count()).select_from(PurchaseRecord)) == 0


@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_a_file_that_is_not_utf8_names_the_row_with_the_bad_byte(monkeypatch, chunk):
    """The bad byte's own row, not where the decoder happened to be reading ahead."""
    monkeypatch.setattr(importer, "CHUNK_BYTES", chunk)
    good = [line("PO-U", i, description=f"item {i}\nsecond line") for i in range(1, 300)]
    body = csv_bytes(good) + b"PO-U,300,2026-01-01,,,,caf\xe9,1,,1\n"  # row 301
    with pytest.raises(MalformedFile) as raised:
        list(read_rows(io.BytesIO(body), "csv"))
    assert raised.value.code == "not-utf8"
    assert "(row 301: invalid continuation byte)" in raised.value.detail, raised.value.detail
    header = b"po_number,line,\xff\n"
    with pytest.raises(MalformedFile) as in_header:
        list(read_rows(io.BytesIO(header), "csv"))
    assert "(row 1: invalid start byte)" in in_header.value.detail
    truncated = csv_bytes(good[:2]) + b"PO-U,3,2026-01-01,,,,\xe2\x82"  # a character cut short
    with pytest.raises(MalformedFile) as cut:
        list(read_rows(io.BytesIO(truncated), "csv"))
    assert "(row 4: unexpected end of data)" in cut.value.detail, cut.value.detail


@pytest.fixture
def run(app, monkeypatch):
    monkeypatch.setattr(cli, "_state", app.extensions["marketplace"])
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.main, list(args), catch_exceptions=False)


def test_the_cli_reports_the_same_row_numbers(run, db, world, tmp_path):
    path = tmp_path / "lines.csv"
    path.write_bytes(_rows_with_multiline_cells())
    result = run("pricing", "import", str(path), "--trust", "RT2")
    assert result.exit_code == 1
    reported = sorted(
        (int(row), column, reason)
        for row, column, reason in re.findall(
            rf"^{re.escape(str(path))}:(\d+): ([^:]+): (.*)$", result.stderr, re.MULTILINE
        )
    )
    assert reported == EXPECTED
    assert "6 rows read; 2 imported" in result.stdout


def test_the_cli_names_the_row_of_an_unreadable_file(run, db, world, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(HEADER + b'P,1,2026-01-01,,,,"a\nb\nc",1,,1\nP,2,2026-01-01,,,,"x"y,1,,1\n')
    result = run("pricing", "import", str(path), "--trust", "RT2")
    assert result.exit_code == 1
    assert "The CSV cannot be read at row 3:" in result.stderr, result.stderr
    assert "Nothing was imported." in result.stderr
    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes(HEADER + b'P,1,2026-01-01,,,,"a\nb",1,,1\nP,2,2026-01-01,,,,\xe9,1,,1\n')
    result = run("pricing", "import", str(not_utf8), "--trust", "RT2")
    assert result.exit_code == 1
    assert "(row 3: invalid continuation byte)" in result.stderr, result.stderr
