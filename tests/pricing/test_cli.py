"""``marketplace pricing import FILE --trust ODS`` and ``marketplace pricing refresh`` through
click's CliRunner (DESIGN §9: errors on stderr as FILE:ROW: COLUMN: reason, exit status)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace import cli
from marketplace.pricing.models import (
    DailyTotal,
    MonthlyTotal,
    ProductStats,
    PurchaseRecord,
    TrustWindowTotal,
)

from .conftest import csv_bytes, json_bytes, line, make_gtin


@pytest.fixture
def run(app, monkeypatch):
    monkeypatch.setattr(cli, "_state", app.extensions["marketplace"])
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli.main, list(args), catch_exceptions=False)

    return invoke


def test_import_csv_prints_summary_and_errors(run, db, world, tmp_path):
    path = tmp_path / "lines.csv"
    path.write_bytes(
        csv_bytes(
            [line("PO-1", 1, gtin=make_gtin(1)), line("PO-1", 2, quantity="two"), line("PO-1", 3)]
        )
    )
    result = run("pricing", "import", str(path), "--trust", "rt2")
    assert result.exit_code == 1
    assert f"{path}:3: quantity: must be a whole number of packs, got 'two'" in result.stderr
    assert "1 rows were rejected" in result.stderr
    assert (
        "3 rows read; 2 imported (1 matched, 1 unmatched); 0 already imported; 1 rejected."
        in result.stdout
    )
    assert result.stdout.strip().splitlines()[-1].startswith("import id: imp_")
    assert db.scalar(select(func.count()).select_from(PurchaseRecord)) == 2
    again = run("pricing", "import", str(path), "--trust", "RT2")
    assert "0 imported" in again.stdout
    assert "2 already imported" in again.stdout


def test_import_json_all_good_exits_zero(run, db, world, tmp_path):
    path = tmp_path / "lines.json"
    path.write_bytes(
        json_bytes([line("PO-J", 1, gtin=make_gtin(1), quantity=2, total_price_pence=600)])
    )
    result = run("pricing", "import", str(path), "--trust", "RT1")
    assert result.exit_code == 0, result.stderr
    assert "1 matched" in result.stdout
    assert result.stderr == ""


def test_malformed_file_exits_non_zero_and_writes_nothing(run, db, world, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"po_number,line,colour\nP,1,red\n")
    result = run("pricing", "import", str(path), "--trust", "RT1")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"marketplace: {path}: The header row does not match")
    assert "Nothing was imported." in result.stderr
    assert db.scalar(select(func.count()).select_from(PurchaseRecord)) == 0


def test_unknown_trust_and_missing_file(run, world, tmp_path):
    path = tmp_path / "lines.csv"
    path.write_bytes(csv_bytes([line("P", 1)]))
    unknown = run("pricing", "import", str(path), "--trust", "ZZZ")
    assert unknown.exit_code == 1
    assert "ZZZ" in unknown.stderr
    missing = run("pricing", "import", str(tmp_path / "nope.csv"), "--trust", "RT1")
    assert missing.exit_code != 0


def import_one_line_per_trust(run, tmp_path) -> None:
    """Three trusts each import one line of the same product, through the CLI."""
    for i in range(3):
        path = tmp_path / f"t{i}.csv"
        path.write_bytes(
            csv_bytes([line(f"PO-{i}", 1, gtin=make_gtin(1), total_price_pence=300 + i)])
        )
        assert run("pricing", "import", str(path), "--trust", f"RT{i}", "--quiet").exit_code == 0


def test_refresh_rebuilds_statistics(run, db, world, tmp_path):
    import_one_line_per_trust(run, tmp_path)
    db.execute(ProductStats.__table__.delete())
    db.commit()
    result = run("pricing", "refresh")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "statistics refreshed for 1 products"
    assert db.scalar(select(ProductStats.n_trusts)) == 3


def test_refresh_rebuilds_the_rollups_only_with_the_flag(run, db, world, tmp_path):
    import_one_line_per_trust(run, tmp_path)

    def rollup_rows() -> tuple[int, int]:
        return (
            db.scalar(select(func.count()).select_from(DailyTotal)),
            db.scalar(select(func.count()).select_from(MonthlyTotal)),
        )

    assert rollup_rows() == (3, 3)
    db.execute(DailyTotal.__table__.delete())
    db.execute(MonthlyTotal.__table__.delete())
    db.commit()
    assert run("pricing", "refresh", "--quiet").exit_code == 0
    assert rollup_rows() == (0, 0)
    result = run("pricing", "refresh", "--rollups", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "statistics refreshed for 1 products"
    db.commit()  # a new snapshot
    assert rollup_rows() == (3, 3)
    db.close()
    # the rebuilt window table took the old one's place under the same names
    check = run("db", "check")
    assert check.exit_code == 0, check.output
    assert db.scalar(select(func.count()).select_from(TrustWindowTotal)) == 3
