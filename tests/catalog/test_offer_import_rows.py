"""The offer import numbers CSV rows as a spreadsheet shows them: the header is row 1 and each
record is one row, however many lines a quoted cell with line breaks (a multi-line name in a
price list saved from a spreadsheet) makes it span in the file. Every number the import reports
counts records: rejected rows, the earlier row a repeated product or SKU names, where a file
stopped being readable, on the API and the CLI."""

from __future__ import annotations

import io
import re

import click
import pytest
from sqlalchemy import select

from marketplace.catalog import offer_import
from marketplace.catalog.models import Product
from tests.catalog.conftest import GTIN_BANDAGE, GTIN_OTHER, run
from tests.catalog.test_offer_import import HEADER, counts, upload
from tests.support import assert_problem

MULTILINE_ROWS = [
    # row 2, two lines: a new product without a GTIN
    ',"Foam dressing 10cm x 10cm\nnon-adhesive",Advancis,,,33141110,H87,10,1590,,250,,,ML-1',
    # row 3: bad VAT
    f"{GTIN_OTHER},,,,,,,1,250,17,40,3,5,ML-2",
    # row 4, three lines: a new product with a GTIN
    f'{GTIN_BANDAGE},"Profore #4 bandage\r\n10cm x 2.5m\nlatex free",,,,33141113,H87,1,391,20,'
    "100,2,1,ML-3",
    # row 5: bad pack price
    ",Gauze swab,,,,33141110,H87,5,2.5,,,,,ML-4",
    # row 6, two lines, itself rejected: bad check digit
    '5000223456031,"Bad\ncheck digit",,,,33141113,H87,1,100,20,1,1,1,ML-5',
    # row 7: an offer on the product already in the catalogue
    f"{GTIN_OTHER},,,,,,,1,250,0,40,3,5,ML-7",
    # row 8: row 4's SKU again
    ",Swab,,,,33141110,H87,5,120,,,,,ML-3",
    # row 9: row 7's product again
    f"{GTIN_OTHER},,,,,,,1,260,0,40,3,5,ML-9",
    # row 10: too few cells
    f"{GTIN_OTHER},Too few cells,,,",
]
EXPECTED = [
    (3, "vat_rate_percent", "Must be 0, 5 or 20."),
    (5, "pack_price_pence", "'2.5' is not a whole number."),
    (6, "gtin", "The GS1 check digit should be 0."),
    (8, "supplier_sku", "Row 4 already lists this supplier_sku; list it once per file."),
    (9, "gtin", "Row 7 already lists this product; list it once per file."),
    (10, "row", f"Has 5 cells; the header has {len(offer_import.COLUMNS)}."),
]


def multiline_csv(rows: list[str] | None = None) -> bytes:
    """A price list of ``rows`` (``MULTILINE_ROWS`` by default) under the header."""
    return ("\n".join([HEADER, *(MULTILINE_ROWS if rows is None else rows)]) + "\n").encode()


def test_the_reader_numbers_records_not_lines():
    data = multiline_csv()
    assert data.count(b"\n") == 14  # fourteen lines in the file for ten rows
    numbers = [row for row, _ in offer_import.read_rows(io.BytesIO(data))]
    assert numbers == list(range(2, 11))


def test_a_blank_line_is_a_row_as_a_spreadsheet_shows_it():
    rows = [MULTILINE_ROWS[0], "", MULTILINE_ROWS[1], ",,,,,,,,,,,,,", MULTILINE_ROWS[2]]
    numbers = [row for row, _ in offer_import.read_rows(io.BytesIO(multiline_csv(rows)))]
    assert numbers == [2, 4, 6]


def test_rejected_rows_after_multiline_cells_have_their_spreadsheet_numbers(
    client, db, supplier, existing
):
    response = upload(client, supplier, multiline_csv())
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert (report["rows"], report["created_products"], report["created_offers"]) == (9, 2, 3)
    assert report["rejected"] == 6
    errors = [(e["row"], e["column"], e["reason"]) for e in report["errors"]]
    assert sorted(errors) == EXPECTED
    names = set(db.scalars(select(Product.name)))
    assert "Profore #4 bandage\r\n10cm x 2.5m\nlatex free" in names


def test_a_dry_run_numbers_the_rows_the_same(client, db, supplier, existing):
    report = upload(client, supplier, multiline_csv(), "dry_run=true", multipart=False).get_json()
    errors = [(e["row"], e["column"], e["reason"]) for e in report["errors"]]
    assert sorted(errors) == EXPECTED


def test_a_repeated_sku_names_the_earlier_rows_spreadsheet_number(client, db, supplier, existing):
    rows = [
        ',"Dressing\npad\nsterile",,,,33141110,H87,1,100,,,,,DUP-1',  # row 2, three lines
        ',"Gauze\nswab",,,,33141110,H87,1,100,,,,,DUP-2',  # row 3, two lines
        ",Other pad,,,,33141110,H87,1,100,,,,,DUP-2",  # row 4: row 3's SKU
    ]
    report = upload(client, supplier, multiline_csv(rows)).get_json()
    assert [(e["row"], e["column"], e["reason"]) for e in report["errors"]] == [
        (4, "supplier_sku", "Row 3 already lists this supplier_sku; list it once per file.")
    ]


@pytest.mark.parametrize(
    ("tail", "row"),
    [
        (f'{GTIN_OTHER},"ab"c,,,,,,1,250,0,40,3,5,X', 4),  # a quote inside a quoted cell
        (f'{GTIN_OTHER},"never closed,,,,,,1,250,0,40,3,5,X\n{GTIN_OTHER}', 4),  # to the end
    ],
)
def test_unreadable_csv_names_the_row_it_could_not_read(client, db, supplier, existing, tail, row):
    data = multiline_csv([MULTILINE_ROWS[0], MULTILINE_ROWS[2], tail])
    with pytest.raises(offer_import.MalformedFile) as raised:
        list(offer_import.read_rows(io.BytesIO(data)))
    assert re.search(rf"\bat row {row}:", raised.value.detail), raised.value.detail
    before = counts(db)
    body = assert_problem(upload(client, supplier, data), 400, code="malformed-csv")
    assert re.search(rf"\bat row {row}:", body["detail"]), body["detail"]
    assert counts(db) == before


def test_a_file_that_is_not_utf8_names_the_row_with_the_bad_byte(client, db, supplier, existing):
    """The bad byte's own row, not where the decoder happened to be reading ahead: enough rows
    follow it to fill the decoder's buffer."""
    good = [f',"Item {i}\nsecond line",,,,33141110,H87,1,100,,,,,U-{i}' for i in range(1, 300)]
    after = [f",Item {i},,,,33141110,H87,1,100,,,,,U-{i}" for i in range(301, 600)]
    data = multiline_csv([*good, ",Caf\xe9 pad,,,,33141110,H87,1,100,,,,,U-300", *after])
    data = data.replace("Caf\xe9".encode(), b"Caf\xe9")  # row 301: Latin-1, not UTF-8
    with pytest.raises(offer_import.MalformedFile) as raised:
        list(offer_import.read_rows(io.BytesIO(data)))
    assert "(row 301: invalid continuation byte)" in raised.value.detail, raised.value.detail
    before = counts(db)
    body = assert_problem(upload(client, supplier, data), 400, code="malformed-csv")
    assert "(row 301: invalid continuation byte)" in body["detail"]
    assert counts(db) == before


@pytest.mark.parametrize(
    ("data", "where"),
    [
        # the bad byte on the second line of row 3's name
        (
            multiline_csv([MULTILINE_ROWS[0], ',"Pad\nsterile",,,,33141110,H87,1,1,,,,,P']).replace(
                b"sterile", b"st\xe9rile"
            ),
            "(row 3: invalid continuation byte)",
        ),
        (HEADER.encode() + b",\xff\n", "(row 1: invalid start byte)"),
        (
            multiline_csv(MULTILINE_ROWS[:1]) + b",Caf\xc3",  # a character cut short
            "(row 3: unexpected end of data)",
        ),
    ],
)
def test_not_utf8_in_a_multiline_record_the_header_or_at_the_end(data, where):
    with pytest.raises(offer_import.MalformedFile) as raised:
        list(offer_import.read_rows(io.BytesIO(data)))
    assert where in raised.value.detail, raised.value.detail


# --- CLI ----------------------------------------------------------------------------------------


def test_the_cli_reports_the_same_row_numbers(cli, tmp_path, db, supplier, existing):
    path = tmp_path / "prices.csv"
    path.write_bytes(multiline_csv())
    result = run(cli, str(path), "--supplier", supplier.org.id)
    assert result.exit_code == 0, result.output
    reported = re.findall(
        rf"^{re.escape(str(path))}:(\d+): ([^:]+): (.*)$", result.stderr, re.MULTILINE
    )
    assert sorted((int(row), column, reason) for row, column, reason in reported) == EXPECTED
    assert "rows: 9" in result.stdout
    assert "rejected: 6" in result.stdout


def test_the_cli_names_the_row_of_an_unreadable_file(cli, tmp_path, db, supplier, existing):
    path = tmp_path / "bad.csv"
    path.write_bytes(multiline_csv([*MULTILINE_ROWS[:3], f'{GTIN_OTHER},"x"y,,,,,,1,1,,,,,Q']))
    result = run(cli, str(path), "--supplier", supplier.org.id)
    assert result.exit_code == 1
    assert "The file is not valid CSV at row 5:" in result.stderr, result.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(multiline_csv(MULTILINE_ROWS[:3]) + b",Caf\xe9,,,,33141110,H87,1,1,,,,,Q\n")
    result = run(cli, str(latin1), "--supplier", supplier.org.id)
    assert result.exit_code == 1
    assert "(row 5: invalid continuation byte)" in result.stderr, result.stderr
    assert counts(db)[1] == 0


def test_the_cli_progress_counts_rows_not_lines(cli, tmp_path, db, supplier, existing, monkeypatch):
    bars = []
    real_progressbar = click.progressbar

    def recording_progressbar(*args, **kwargs):
        bar = real_progressbar(*args, **kwargs)
        bars.append((kwargs["length"], bar))
        return bar

    monkeypatch.setattr(click, "progressbar", recording_progressbar)
    path = tmp_path / "prices.csv"
    path.write_bytes(multiline_csv())
    assert run(cli, str(path), "--supplier", supplier.org.id).exit_code == 0
    [(length, bar)] = bars
    assert (length, bar.pos) == (9, 9)  # nine rows after the header, all done
