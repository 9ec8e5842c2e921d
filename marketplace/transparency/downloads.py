"""Bulk downloads of the public data, as CSV or JSON lines, streamed in constant memory.

Each dataset is a fixed list of columns (documented in docs/open-data.md; new columns are only
ever added at the end) and a generator of rows read with a server-side cursor
(``yield_per``). The bytes are produced chunk by chunk, gzip-compressed on the fly when the
client accepts it.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from ..accounts.models import Organisation
from ..catalog.models import Category, Offer, OfferPriceHistory, OfferStatus, Product
from ..money import unit_price, unit_price_json
from ..orders.models import Order, OrderLine, SupplierOrder, SupplierOrderStatus
from ..pricing import service as pricing
from . import service

CHUNK_BYTES = 64 * 1024
YIELD_PER = 1000


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: Callable[[Session, Any], Iterable[dict[str, Any]]]


def _enum(value: Any) -> Any:
    return getattr(value, "value", value)


# --- catalogue with offers ---------------------------------------------------------------------

CATALOGUE_COLUMNS = (
    "product_id",
    "gtin",
    "product_name",
    "manufacturer",
    "brand",
    "manufacturer_part_number",
    "category_code",
    "category_name",
    "category_scheme",
    "category_scheme_code",
    "unit_of_measure",
    "units_per_pack",
    "benchmark_excluded",
    "offer_id",
    "supplier_id",
    "supplier_name",
    "supplier_companies_house_number",
    "supplier_is_sme",
    "pack_price_pence",
    "unit_price_pence",
    "vat_rate_percent",
    "stock",
    "lead_time_days",
    "min_order_qty",
    "offer_updated_at",
)


def catalogue_rows(session: Session, _settings: Any) -> Iterator[dict[str, Any]]:
    """One row per active offer (the offers the public product pages show); a product with no
    active offer has one row with empty offer columns."""
    supplier = aliased(Organisation)
    offer_on = (Offer.product_id == Product.id) & (Offer.status == OfferStatus.ACTIVE)
    stmt = (
        select(Product, Category, Offer, supplier)
        .join(Category, Category.id == Product.category_id)
        .outerjoin(Offer, offer_on)
        .outerjoin(supplier, supplier.id == Offer.supplier_id)
        .order_by(Product.id, Offer.id)
        .execution_options(yield_per=YIELD_PER)
    )
    for product, category, offer, org in session.execute(stmt):
        row: dict[str, Any] = {
            "product_id": product.id,
            "gtin": product.gtin,
            "product_name": product.name,
            "manufacturer": product.manufacturer,
            "brand": product.brand,
            "manufacturer_part_number": product.manufacturer_part_number,
            "category_code": category.code,
            "category_name": category.name,
            "category_scheme": category.scheme,
            "category_scheme_code": category.scheme_code,
            "unit_of_measure": product.unit_of_measure,
            "units_per_pack": product.units_per_pack,
            "benchmark_excluded": product.benchmark_excluded,
        }
        if offer is not None:
            row.update(
                offer_id=offer.id,
                supplier_id=offer.supplier_id,
                supplier_name=org.name,
                supplier_companies_house_number=org.companies_house_number,
                supplier_is_sme=org.is_sme,
                pack_price_pence=offer.pack_price_pence,
                unit_price_pence=unit_price(offer.pack_price_pence, product.units_per_pack),
                vat_rate_percent=offer.vat_rate_percent,
                stock=offer.stock,
                lead_time_days=offer.lead_time_days,
                min_order_qty=offer.min_order_qty,
                offer_updated_at=offer.updated_at,
            )
        yield row


# --- offer price history -----------------------------------------------------------------------

PRICE_HISTORY_COLUMNS = (
    "offer_id",
    "product_id",
    "supplier_id",
    "supplier_name",
    "effective_from",
    "pack_price_pence",
    "units_per_pack",
    "unit_price_pence",
    "vat_rate_percent",
    "price_breaks",
)


def price_history_rows(session: Session, _settings: Any) -> Iterator[dict[str, Any]]:
    """Every price every offer has had (who changed it is not published)."""
    stmt = (
        select(
            OfferPriceHistory.offer_id,
            Offer.product_id,
            Offer.supplier_id,
            Organisation.name,
            OfferPriceHistory.effective_from,
            OfferPriceHistory.pack_price_pence,
            Product.units_per_pack,
            OfferPriceHistory.vat_rate_percent,
            OfferPriceHistory.price_breaks,
        )
        .join(Offer, Offer.id == OfferPriceHistory.offer_id)
        .join(Product, Product.id == Offer.product_id)
        .join(Organisation, Organisation.id == Offer.supplier_id)
        .order_by(
            OfferPriceHistory.offer_id, OfferPriceHistory.effective_from, OfferPriceHistory.id
        )
        .execution_options(yield_per=YIELD_PER)
    )
    for offer_id, product_id, supplier_id, name, when, price, units, vat, breaks in session.execute(
        stmt
    ):
        yield {
            "offer_id": offer_id,
            "product_id": product_id,
            "supplier_id": supplier_id,
            "supplier_name": name,
            "effective_from": when,
            "pack_price_pence": price,
            "units_per_pack": units,
            "unit_price_pence": unit_price(price, units),
            "vat_rate_percent": vat,
            "price_breaks": list(breaks or []),
        }


# --- price variance (the pricing service) -------------------------------------------------------

VARIANCE_COLUMNS = (
    "product_id",
    "product_name",
    "category_id",
    "window_from",
    "window_to",
    "n_trusts",
    "min_pence",
    "p10_pence",
    "p25_pence",
    "median_pence",
    "p75_pence",
    "max_pence",
    "mean_pence",
    "benchmark_pence",
    "spread",
    "iqr_over_median",
    "possible_savings_pence",
    "outliers",
    "units",
    "spend_pence",
)


def variance_rows(session: Session, _settings: Any) -> Iterator[dict[str, Any]]:
    """Every reported product's cross-trust distribution for the default window and method,
    page by page from ``pricing.variance_ranking`` (largest possible savings first)."""
    cursor = None
    while True:
        page = pricing.variance_ranking(session, cursor=cursor, limit=100)
        window = {"window_from": page.window.start, "window_to": page.window.end}
        for item in page.items:
            yield {**item, **window}
        if not page.next_cursor:
            return
        cursor = page.next_cursor


# --- awarded order lines (trust orders only) -----------------------------------------------------

AWARDED_LINE_COLUMNS = (
    "ocid",
    "order_id",
    "supplier_order_id",
    "order_line_id",
    "ordered_at",
    "trust_ods_code",
    "trust_name",
    "supplier_id",
    "supplier_name",
    "supplier_companies_house_number",
    "supplier_is_sme",
    "supplier_order_status",
    "product_id",
    "gtin",
    "product_name",
    "category_code",
    "quantity",
    "units_per_pack",
    "pack_price_pence",
    "unit_price_pence",
    "vat_rate_percent",
    "net_pence",
    "vat_pence",
    "gross_pence",
)


def awarded_line_rows(session: Session, settings: Any) -> Iterator[dict[str, Any]]:
    """Every line of every trust order (never an order paid from a personal health budget),
    except supplier orders still waiting for approval."""
    supplier = aliased(Organisation)
    stmt = (
        select(Order, Organisation, SupplierOrder, supplier, OrderLine, Product, Category)
        .join(Organisation, Organisation.id == Order.organisation_id)
        .join(SupplierOrder, SupplierOrder.order_id == Order.id)
        .join(supplier, supplier.id == SupplierOrder.supplier_id)
        .join(OrderLine, OrderLine.supplier_order_id == SupplierOrder.id)
        .join(Product, Product.id == OrderLine.product_id)
        .join(Category, Category.id == Product.category_id)
        .where(
            *service.trust_order_filter(),
            SupplierOrder.status != SupplierOrderStatus.PENDING_APPROVAL,
        )
        .order_by(Order.created_at, Order.id, SupplierOrder.id, OrderLine.position, OrderLine.id)
        .execution_options(yield_per=YIELD_PER)
    )
    for order, trust, so, org, line, product, category in session.execute(stmt):
        yield {
            "ocid": f"{settings.ocds_prefix}-{order.id}",
            "order_id": order.id,
            "supplier_order_id": so.id,
            "order_line_id": line.id,
            "ordered_at": order.created_at,
            "trust_ods_code": trust.ods_code,
            "trust_name": trust.name,
            "supplier_id": org.id,
            "supplier_name": org.name,
            "supplier_companies_house_number": org.companies_house_number,
            "supplier_is_sme": org.is_sme,
            "supplier_order_status": _enum(so.status),
            "product_id": product.id,
            "gtin": product.gtin,
            "product_name": product.name,
            "category_code": category.code,
            "quantity": line.quantity,
            "units_per_pack": line.units_per_pack,
            "pack_price_pence": line.pack_price_pence,
            "unit_price_pence": unit_price(line.pack_price_pence, line.units_per_pack),
            "vat_rate_percent": line.vat_rate_percent,
            "net_pence": line.net_pence,
            "vat_pence": line.vat_pence,
            "gross_pence": line.gross_pence,
        }


def phb_rows(session: Session, settings: Any) -> Iterator[dict[str, Any]]:
    yield from service.phb_spending(session, settings.min_group_size)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "catalogue", "Products with their active offers", CATALOGUE_COLUMNS, catalogue_rows
        ),
        Dataset(
            "offer-price-history",
            "Every price every offer has had",
            PRICE_HISTORY_COLUMNS,
            price_history_rows,
        ),
        Dataset(
            "price-variance",
            "Cross-trust unit price variance per product (default window and method)",
            VARIANCE_COLUMNS,
            variance_rows,
        ),
        Dataset(
            "awarded-order-lines",
            "Lines of orders placed by NHS trusts",
            AWARDED_LINE_COLUMNS,
            awarded_line_rows,
        ),
        Dataset(
            "phb-spending",
            "Personal health budget spending by commissioner, category and month (aggregates)",
            service.PHB_COLUMNS,
            phb_rows,
        ),
    )
}
FORMATS = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


# --- serialisation -------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A JSON cell: unit prices (Decimal) as numbers to 4 places, times as ISO 8601."""
    if isinstance(value, Decimal):
        return unit_price_json(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return _enum(value)


def csv_value(value: Any) -> Any:
    """A CSV cell: booleans ``true``/``false``, unit prices with 4 places, lists as JSON, and
    text a spreadsheet would run as a formula prefixed with ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{unit_price_json(value):.4f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    value = _enum(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_chunks(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_value(row.get(c)) for c in columns])
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def jsonl_chunks(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    parts: list[str] = []
    size = 0
    for row in rows:
        line = json.dumps(
            {c: json_value(row.get(c)) for c in columns}, separators=(",", ":"), ensure_ascii=False
        )
        parts.append(line + "\n")
        size += len(line) + 1
        if size >= CHUNK_BYTES:
            yield "".join(parts).encode()
            parts, size = [], 0
    if parts:
        yield "".join(parts).encode()


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Compress a stream on the fly (a gzip member, RFC 1952)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def stream(
    session_factory: Any, dataset: Dataset, fmt: str, settings: Any, *, gzip: bool
) -> Iterator[bytes]:
    """The dataset's bytes, read in a session of its own (the response outlives the request's
    session; a read session, one snapshot for the whole file), closed when the stream ends or
    the client goes away."""

    def produce() -> Iterator[bytes]:
        session = session_factory()
        try:
            rows = dataset.rows(session, settings)
            chunks = csv_chunks if fmt == "csv" else jsonl_chunks
            yield from chunks(dataset.columns, rows)
        finally:
            session.rollback()
            session.close()

    return gzipped(produce()) if gzip else produce()
