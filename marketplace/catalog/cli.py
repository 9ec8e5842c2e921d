"""``marketplace catalog``: the catalogue's operator commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

from .. import csv_import
from ..accounts.models import OrgType
from ..errors import ValidationFailed

IMPORT_HELP = """Import a supplier's offer price list from CSV FILE.

The columns are exactly: gtin, name, manufacturer, brand, mpn, category_code, unit_of_measure,
units_per_pack, pack_price_pence, vat_rate_percent, stock, lead_time_days, min_order_qty,
supplier_sku (UTF-8, header row, comma-separated). Valid rows are applied; each rejected row
is printed on stderr as FILE:ROW: COLUMN: reason, ROW numbered as a spreadsheet shows it (the
header is row 1, and a cell with line breaks does not add rows). The summary goes to stdout.
Re-importing the same file changes nothing.

\b
Exit status:
  0  the file was read; rows may still have been rejected (see stderr)
  1  nothing was imported: the file is malformed or unreadable (not UTF-8, not CSV, empty,
     wrong columns), the supplier is unknown, or the database failed
"""


@click.group("catalog")
def catalog() -> None:
    """Catalogue: products, offers and bulk price lists."""


@catalog.command("load-categories")
def load_categories_command() -> None:
    """Create or update the category tree from the bundled file (CPV and EMDN codes mapped to
    the marketplace's categories): names, parents, kinds and PHB flags as shipped. Categories
    the file does not list are left alone. `db upgrade` does this once, for a new database."""
    from ..cli import CLI_ACTOR, handle_errors, session_scope

    @handle_errors
    def run() -> None:
        from . import service

        rows = service.bundled_category_rows()
        with session_scope() as session:
            created = service.load_categories(session, rows, CLI_ACTOR)
        click.echo(f"categories: {created} created, {len(rows) - created} updated or unchanged")

    run()


@catalog.command("import-offers", help=IMPORT_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--supplier", "supplier_ref", required=True, help="Supplier id or exact name.")
@click.option("--dry-run", is_flag=True, default=False, help="Check and report; write nothing.")
def import_offers_command(file: Path, supplier_ref: str, dry_run: bool) -> None:
    from ..cli import CLI_ACTOR, handle_errors, session_scope

    @handle_errors
    def run() -> None:
        from ..accounts import service as accounts
        from . import offer_import

        with file.open("rb") as stream:
            total = _data_row_count(stream)
            stream.seek(0)
            with session_scope() as session:
                supplier = accounts.find_organisation(session, supplier_ref)
                if supplier.type != OrgType.SUPPLIER:
                    raise ValidationFailed(
                        f"{supplier.name} is a {supplier.type.value}, not a supplier."
                    )
                with click.progressbar(
                    length=max(total, 1), label="Importing offers", file=sys.stderr
                ) as bar:
                    last = [1]  # the header

                    def advance(row: int) -> None:
                        bar.update(row - last[0])
                        last[0] = row

                    report = offer_import.import_offers(
                        session,
                        CLI_ACTOR,
                        stream,
                        supplier_id=supplier.id,
                        dry_run=dry_run,
                        on_row=advance,
                    )
        for error in report.errors:
            click.echo(f"{file}:{error.row}: {error.column}: {error.reason}", err=True)
        if dry_run:
            click.echo("dry run: nothing was written")
        click.echo(f"supplier: {supplier.name} ({supplier.id})")
        for label, value in (
            ("rows", report.rows),
            ("created products", report.created_products),
            ("created offers", report.created_offers),
            ("updated offers", report.updated_offers),
            ("unchanged", report.unchanged),
            ("rejected", report.rejected),
        ):
            click.echo(f"{label}: {value}")

    run()


def _data_row_count(stream: IO[bytes]) -> int:
    """How many rows follow the header, numbered as the import numbers them (for the progress
    bar): up to the first row that cannot be read, where the import stops too."""
    rows = 1
    try:
        for row, _cells in csv_import.csv_records(stream):
            rows = row
    except csv_import.UnreadableCsv as error:
        rows = error.row
    return max(rows - 1, 0)
