"""Bulk listing: a supplier's price list as CSV (DESIGN §9), shared by the API and the CLI.

Columns, exactly (any order, names case-insensitive; cells may be empty where optional: an
existing offer then keeps its value, a new one takes ``DEFAULTS``)::

    gtin, name, manufacturer, brand, mpn, category_code, unit_of_measure, units_per_pack,
    pack_price_pence, vat_rate_percent, stock, lead_time_days, min_order_qty, supplier_sku

The file is read row by row. A row is matched to the supplier's existing offer by
``supplier_sku``, else to a product by ``gtin``; a row whose product is not in the catalogue
creates it (``name``, ``category_code`` and ``units_per_pack`` then required). Valid rows are
applied, each in its own savepoint; invalid rows are reported with their row number, column
and reason. Rows are numbered as a spreadsheet shows them: the header is row 1 and each record
is one row, however many lines a quoted cell with line breaks makes it span in the file. A
file lists each product and supplier SKU once (a later row repeating one is rejected), so
re-uploading the same file changes nothing. A file that cannot be read as such a CSV at all
raises ``MalformedFile`` (naming the row where it stops being readable) and nothing is
written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import csv_import, metrics
from ..accounts.service import Principal
from ..csv_import import RowError
from ..errors import Problem
from . import service
from .gtin import gtin_problem, normalise_gtin
from .models import Offer

COLUMNS = (
    "gtin",
    "name",
    "manufacturer",
    "brand",
    "mpn",
    "category_code",
    "unit_of_measure",
    "units_per_pack",
    "pack_price_pence",
    "vat_rate_percent",
    "stock",
    "lead_time_days",
    "min_order_qty",
    "supplier_sku",
)
MAX_ROWS = 50_000
# A new offer's values for empty optional cells; an existing offer keeps its own.
DEFAULTS: dict[str, Any] = {
    "vat_rate_percent": Decimal(20),
    "stock": 0,
    "lead_time_days": 0,
    "min_order_qty": 1,
}
# The offer's own columns (those before them describe the product).
OFFER_COLUMNS = COLUMNS[COLUMNS.index("pack_price_pence") :]
# The longest text each column may hold (the product and offer fields' limits).
MAX_LENGTHS = {
    "name": 300,
    "manufacturer": 200,
    "brand": 200,
    "mpn": 100,
    "category_code": 32,
    "unit_of_measure": 3,
    "supplier_sku": 100,
}
_WHOLE = re.compile(r"[0-9]{1,12}")
# Service field names that the CSV spells differently.
FIELD_COLUMNS = {
    "manufacturer_part_number": "mpn",
    "product_id": "gtin",
    "supplier_id": "supplier_sku",
    "price_breaks": "pack_price_pence",  # a new pack price must stay above the volume breaks
}
CONFLICT_COLUMNS = {
    "duplicate-gtin": "gtin",
    "duplicate-offer": "gtin",
    "duplicate-supplier-sku": "supplier_sku",
}


class MalformedFile(csv_import.MalformedFile):
    """The upload is not a readable offer CSV: nothing is imported."""

    code = "malformed-csv"


@dataclass
class ImportReport:
    supplier_id: str
    dry_run: bool
    rows: int = 0
    created_products: int = 0
    created_offers: int = 0
    updated_offers: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)


class RowRejected(Exception):
    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__(errors)
        self.errors = errors


def read_rows(
    stream: IO[bytes], *, max_rows: int | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row number, {column: cell})`` for each non-blank data row, reading as it goes.
    Rows are numbered as a spreadsheet shows them (``csv_import.csv_records``): the header is
    row 1 and each record is one row, however many lines its quoted cells span.

    Raises ``MalformedFile`` for a file that is not UTF-8, not CSV, empty, has no data rows,
    has too many, or whose header is not exactly ``COLUMNS``; an unreadable file's message
    names the row. A row with the wrong number of cells is yielded with the cells it has,
    under the key ``None`` as the count. At most ``max_rows`` rows (default ``MAX_ROWS``)."""
    max_rows = MAX_ROWS if max_rows is None else max_rows
    records = csv_import.csv_records(stream)
    try:
        yield from _data_rows(records, max_rows)
    except csv_import.NotUtf8 as error:
        raise MalformedFile(
            f"The file is not UTF-8 text (row {error.row}: {error.reason}); save it as UTF-8 CSV."
        ) from None
    except csv_import.BadCsv as error:
        raise MalformedFile(
            f"The file is not valid CSV at row {error.row}: {error.reason}."
        ) from None
    finally:
        records.close()


def _data_rows(
    records: Iterator[tuple[int, list[str]]], max_rows: int
) -> Iterator[tuple[int, dict[str, str]]]:
    _, header = next(records, (1, None))
    if header is None or not any(cell.strip() for cell in header):
        raise MalformedFile("The file is empty: it needs a header row and at least one row.")
    columns = _check_header(header)
    count = 0
    for row_number, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        count += 1
        if count > max_rows:
            raise MalformedFile(
                f"The file has more than {max_rows} rows; split it into smaller files."
            )
        if len(cells) != len(columns):
            yield row_number, {None: str(len(cells))}  # type: ignore[dict-item]
            continue
        yield row_number, {name: cell.strip() for name, cell in zip(columns, cells, strict=True)}
    if count == 0:
        raise MalformedFile("The file has a header but no rows to import.")


def _check_header(header: list[str]) -> list[str]:
    columns = [cell.strip().lower() for cell in header]
    problems = csv_import.header_problems(columns, COLUMNS)
    if problems:
        raise MalformedFile(
            "The header row must name exactly these columns: "
            + ", ".join(COLUMNS)
            + f" ({problems.describe()}).",
            unknown_columns=problems.unknown,
            missing_columns=problems.missing,
        )
    return columns


def _parse(cells: dict[str, str]) -> dict[str, Any]:
    """Cells → typed values; every problem is collected as (column, reason). An empty optional
    offer cell is left out (see ``DEFAULTS``)."""
    errors: list[tuple[str, str]] = [
        (column, "Contains a NUL character.") for column, cell in cells.items() if "\x00" in cell
    ]
    errors += [
        (column, f"At most {limit} characters ({len(cells[column])} given).")
        for column, limit in MAX_LENGTHS.items()
        if len(cells[column]) > limit
    ]
    if errors:
        raise RowRejected(errors)
    values: dict[str, Any] = {}
    gtin = cells["gtin"] or None
    if gtin is not None:
        problem = gtin_problem(gtin)
        if problem:
            errors.append(("gtin", problem))
        else:
            gtin = normalise_gtin(gtin)
    values["gtin"] = gtin
    for column in (
        "units_per_pack",
        "pack_price_pence",
        "stock",
        "lead_time_days",
        "min_order_qty",
    ):
        raw = cells[column]
        if not raw and column in DEFAULTS:
            continue
        if not raw:
            errors.append((column, "Required: a positive whole number."))
        elif not _WHOLE.fullmatch(raw):
            errors.append((column, f"{raw!r} is not a whole number."))
        else:
            values[column] = int(raw)
    for column in ("units_per_pack", "pack_price_pence"):
        if values.get(column) == 0:
            errors.append((column, "Must be positive."))
    if cells["vat_rate_percent"]:
        rate = service.vat_rate(cells["vat_rate_percent"])
        if rate is None:
            errors.append(("vat_rate_percent", "Must be 0, 5 or 20."))
        values["vat_rate_percent"] = rate
    if cells["supplier_sku"]:
        values["supplier_sku"] = cells["supplier_sku"]
    if gtin is None and not cells["supplier_sku"] and not cells["gtin"]:
        errors.append(
            (
                "supplier_sku",
                "A row without a GTIN needs a supplier_sku, so that it can be found again.",
            )
        )
    for column in ("name", "manufacturer", "brand", "mpn", "category_code", "unit_of_measure"):
        values[column] = cells[column] or None
    if errors:
        raise RowRejected(errors)
    return values


def _apply(
    session: Session,
    actor: Principal,
    supplier_id: str,
    values: dict[str, Any],
    seen: _SeenRows,
) -> tuple[str, list[tuple[str, str | None]]]:
    """Create or update the row's product and offer; return the outcome's name and what the
    row listed (for ``seen``, once the row is applied)."""
    sku = values.get("supplier_sku")
    seen.check("supplier_sku", sku)
    offer = None
    if sku:
        offer = service.find_offer_by_supplier_sku(session, supplier_id, sku)
    product = service.find_product_by_gtin(session, values["gtin"]) if values["gtin"] else None
    if offer is not None and values["gtin"] and offer.product.gtin != values["gtin"]:
        raise RowRejected(
            [
                (
                    "supplier_sku",
                    f"Already used by your offer on another product ({offer.product_id}).",
                )
            ]
        )
    if offer is not None:
        product = offer.product
    elif product is not None:
        offer = session.scalar(
            select(Offer).where(Offer.supplier_id == supplier_id, Offer.product_id == product.id)
        )
    outcome = "updated"
    if product is None:
        missing = [
            (c, "Required to add a new product.")
            for c in ("name", "category_code")
            if not values[c]
        ]
        if missing:
            raise RowRejected(missing)
        product = service.create_product(
            session,
            actor,
            supplier_id=supplier_id,
            gtin=values["gtin"],
            name=values["name"],
            category_code=values["category_code"],
            unit_of_measure=values["unit_of_measure"] or "EA",
            units_per_pack=values["units_per_pack"],
            manufacturer=values["manufacturer"],
            brand=values["brand"],
            manufacturer_part_number=values["mpn"],
        )
        outcome = "created_product"
    elif values["units_per_pack"] != product.units_per_pack:
        raise RowRejected(
            [
                (
                    "units_per_pack",
                    f"The product with this GTIN has {product.units_per_pack} units per pack, "
                    f"not {values['units_per_pack']}.",
                )
            ]
        )
    seen.check("gtin", product.id)
    listed = [("supplier_sku", sku), ("gtin", product.id)]
    offer_values = {name: values[name] for name in OFFER_COLUMNS if name in values}
    if offer is None:
        service.create_offer(
            session,
            actor,
            product_id=product.id,
            supplier_id=supplier_id,
            **(DEFAULTS | offer_values),
        )
        return (outcome if outcome == "created_product" else "created_offer"), listed
    changed = service.apply_offer_changes(session, actor, offer, offer_values)
    return ("updated" if changed else "unchanged"), listed


class _SeenRows:
    """The products and supplier SKUs that the file's applied rows listed, with their row
    numbers: a file lists each at most once, or every upload would apply its rows in turn."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], int] = {}

    def check(self, column: str, key: str | None) -> None:
        earlier = self._rows.get((column, key)) if key else None
        if earlier is not None:
            what = "product" if column == "gtin" else "supplier_sku"
            raise RowRejected(
                [(column, f"Row {earlier} already lists this {what}; list it once per file.")]
            )

    def add(self, row_number: int, listed: list[tuple[str, str | None]]) -> None:
        for column, key in listed:
            if key:
                self._rows.setdefault((column, key), row_number)


def _problem_errors(problem: Problem) -> list[tuple[str, str]]:
    if isinstance(problem.errors, dict) and problem.errors:
        return [
            (FIELD_COLUMNS.get(name, name), " ".join(map(str, messages)))
            for name, messages in problem.errors.items()
        ]
    return [(CONFLICT_COLUMNS.get(problem.code, "row"), problem.detail)]


def import_offers(
    session: Session,
    actor: Principal,
    stream: IO[bytes],
    *,
    supplier_id: str | None = None,
    dry_run: bool = False,
    max_rows: int | None = None,
    on_row: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a supplier's offer CSV. With ``dry_run`` every row is checked and applied inside
    a savepoint that is then rolled back, so the report says exactly what would happen.
    ``on_row`` is called with each non-blank data row's number once it is imported."""
    supplier = service.acting_supplier_id(session, actor, supplier_id)
    report = ImportReport(supplier_id=supplier, dry_run=dry_run)
    seen = _SeenRows()
    outer = session.begin_nested()
    try:
        with metrics.import_running("offers"):
            for row_number, cells in read_rows(stream, max_rows=max_rows):
                report.rows += 1
                rejected_before = report.rejected
                _import_row(session, actor, supplier, row_number, cells, report, seen)
                metrics.import_row("offers", rejected=report.rejected > rejected_before)
                if on_row is not None:
                    on_row(row_number)
    except BaseException:
        outer.rollback()
        raise
    if dry_run:
        outer.rollback()
    else:
        outer.commit()
    return report


def _import_row(
    session: Session,
    actor: Principal,
    supplier_id: str,
    row_number: int,
    cells: dict[str, str],
    report: ImportReport,
    seen: _SeenRows,
) -> None:
    savepoint = session.begin_nested()
    try:
        if None in cells:
            raise RowRejected(
                [("row", f"Has {cells[None]} cells; the header has {len(COLUMNS)}.")]  # type: ignore[index]
            )
        outcome, listed = _apply(session, actor, supplier_id, _parse(cells), seen)
        savepoint.commit()
    except RowRejected as rejected:
        savepoint.rollback()
        _reject(report, row_number, rejected.errors)
        return
    except Problem as problem:
        savepoint.rollback()
        _reject(report, row_number, _problem_errors(problem))
        return
    except IntegrityError:
        savepoint.rollback()
        _reject(report, row_number, [("row", "Conflicts with data already in the catalogue.")])
        return
    seen.add(row_number, listed)
    if outcome == "created_product":
        report.created_products += 1
        report.created_offers += 1
    elif outcome == "created_offer":
        report.created_offers += 1
    elif outcome == "updated":
        report.updated_offers += 1
    else:
        report.unchanged += 1


def _reject(report: ImportReport, row_number: int, errors: list[tuple[str, str]]) -> None:
    report.rejected += 1
    report.errors.extend(RowError(row_number, column, reason) for column, reason in errors)
