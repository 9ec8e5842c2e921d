"""Pricing endpoints: purchase imports and records (trust buyers, operators), and the public
price-variance reads (JSON, or CSV with ``Accept: text/csv`` or ``format=csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from flask import Response, current_app, request
from sqlalchemy.orm import Session

from .. import idempotency
from ..accounts import service as accounts
from ..accounts.models import Role
from ..auth import authenticated, current_principal
from ..db import unit_of_work
from ..errors import Problem, ValidationFailed
from ..money import round_unit_price
from ..pagination import paginate
from ..ratelimit import import_limited
from ..schemas import page_of
from ..web import Blueprint, get_session, streamed_body
from . import chart, service
from . import method as m
from .importer import CountingReader, detect_format
from .models import PurchaseRecord
from .rollups import Window, cached_window, ensure_current, today_utc
from .schemas import (
    ChartArgs,
    ExclusionSchema,
    ImportArgs,
    ImportResultSchema,
    MatchSchema,
    MethodArgs,
    PriceCheckArgs,
    PriceCheckSchema,
    ProductVarianceSchema,
    PurchaseListArgs,
    PurchaseSchema,
    RankingArgs,
    RankingSchema,
    TrustSavingsArgs,
    TrustSavingsSchema,
)

blp = Blueprint(
    "pricing",
    __name__,
    description=(
        "What trusts paid: purchase-line imports, and cross-trust price variance per product "
        "(public; JSON or CSV). Method: docs/pricing.md."
    ),
)

IMPORT_MAX_BYTES = 2 * 1024**3
MAX_WINDOW_DAYS = 3660
CSV_DOC = {"content": {"text/csv": {"schema": {"type": "string"}}}}
CSV_PAGE = 100  # rows read per statement while a long CSV answer streams
CSV_CHUNK = 64 * 1024  # characters sent at a time
T = TypeVar("T")


# --- shared helpers ----------------------------------------------------------------------------


def _window(date_from: date | None, date_to: date | None) -> Window:
    if date_from is None and date_to is None:
        return Window.default()
    end = date_to or today_utc()
    start = date_from or end - timedelta(days=m.WINDOW_DAYS - 1)
    if start > end:
        raise ValidationFailed("The window is empty.", errors={"from": ["Must not be after 'to'."]})
    if (end - start).days >= MAX_WINDOW_DAYS:
        raise ValidationFailed(
            "The window is too long.", errors={"from": [f"At most {MAX_WINDOW_DAYS} days."]}
        )
    return Window(start, end)


def _method(args: dict[str, Any]) -> m.Method:
    return m.Method(
        benchmark=args.get("benchmark", m.DEFAULT_BENCHMARK),
        min_trusts=args.get("min_trusts", m.DEFAULT_MIN_TRUSTS),
        outlier_threshold=Decimal(
            args.get("outlier_threshold_percent", int(m.DEFAULT_OUTLIER_THRESHOLD * 100))
        )
        / 100,
        min_savings_pence=args.get("min_savings_pence", m.DEFAULT_MIN_SAVINGS_PENCE),
    )


def _ensure_cache_current() -> None:
    """Roll the default-window caches forward when the day has changed, in a short write
    transaction of its own (cheap: only pairs bought on the days that left the window)."""
    session = get_session()
    if cached_window(session) == Window.default():
        return
    session.rollback()
    with unit_of_work(current_app.extensions["marketplace"].session_factory) as writer:
        ensure_current(writer)


def wants_csv(args: dict[str, Any]) -> bool:
    if args.get("format"):
        return args["format"] == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        # the 4-place Decimal itself, not a float: every digit of a large figure is exact
        return "" if not value.is_finite() else f"{round_unit_price(value):f}"
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else value


def csv_response(
    filename: str,
    columns: Sequence[str],
    rows: Iterable[dict[str, Any]],
    session: Session | None = None,
) -> Response:
    """Stream rows as CSV (UTF-8, header row). Per-unit prices and ratios have 4 places.
    ``session``, the read session the rows come from (``csv_session``), is closed once the
    last row is read, or with the response if the client goes away before."""

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        try:
            for row in rows:
                writer.writerow([_csv_value(row.get(c)) for c in columns])
                if buffer.tell() > CSV_CHUNK:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        finally:
            if session is not None:
                session.close()
        yield buffer.getvalue()

    response = Response(
        generate(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    if session is not None:
        response.call_on_close(session.close)
    return response


def csv_session(first_page: Callable[[Session], T]) -> tuple[Session, T]:
    """A read session of a CSV answer's own, so that every page of the file comes from one
    snapshot (the request's session ends before a streamed body is read), and the first page
    read in it: a bad request (an unknown category or trust) is a problem before streaming
    starts, and closes the session."""
    session = current_app.extensions["marketplace"].read_session()
    try:
        return session, first_page(session)
    except BaseException:
        session.close()
        raise


DISTRIBUTION_COLUMNS = (
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
)


# --- purchase records ---------------------------------------------------------------------------


def _upload() -> tuple[Any, str, str | None]:
    """The uploaded file as a binary stream, its format and its name."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ValidationFailed(
                "Send the file in a form field named 'file'.", errors={"file": ["Missing."]}
            )
        head = upload.stream.read(64)
        upload.stream.seek(0)
        return upload.stream, detect_format(upload.filename, upload.mimetype, head), upload.filename
    if request.mimetype in ("text/csv", "application/csv"):
        return request.stream, "csv", None
    if request.mimetype in ("application/json", "text/json"):
        return request.stream, "json", None
    raise Problem(
        "Send the purchase lines as text/csv or application/json (or multipart/form-data with a "
        "'file' field).",
        status=415,
        code="unsupported-media-type",
    )


@blp.route("/purchases/import", methods=["POST"])
@authenticated(Role.BUYER, Role.OPERATOR)
@import_limited
@streamed_body(IMPORT_MAX_BYTES)
@idempotency.document_key_header
@blp.arguments(ImportArgs, location="query", as_kwargs=True)
@blp.response(200, ImportResultSchema)
@blp.alt_response(400, response="BAD_REQUEST")
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.doc(
    requestBody={
        "required": True,
        "description": (
            "Purchase-order lines (DESIGN §9): CSV with the header po_number, line, order_date, "
            "supplier_name, supplier_sku, gtin, description, quantity, units_per_pack, "
            "total_price_pence; or a JSON list of objects with those keys. Re-importing a line "
            "(same PO number and line) changes nothing."
        ),
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    },
)
def import_purchases(trust: str | None = None):
    """Import a trust's purchase lines (its buyers; operators name the trust).

    Lines are matched to products by GTIN, then by the supplier's product code; unmatched lines
    are kept. Rejected rows are listed with row, column and reason; a malformed file is refused
    whole (400) and nothing is written."""
    principal = current_principal()
    session = get_session()
    if principal.is_operator and not trust:
        raise ValidationFailed(
            "Name the trust the purchases belong to.", errors={"trust": ["Required for operators."]}
        )
    organisation = service.trust_for_actor(session, principal, trust)
    assert organisation is not None
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        idempotency.validate_key(key)
    stream, file_format, filename = _upload()
    if key:
        previous = service.find_import(session, organisation.id, key)
        if previous is not None:
            body = CountingReader(stream)
            body.drain()
            if previous.request_hash and body.sha256.hexdigest() != previous.request_hash:
                raise Problem(
                    "This Idempotency-Key was used for a different file.",
                    status=422,
                    code="idempotency-key-reused",
                )
            response = current_app.json.response(previous.summary)
            response.headers[idempotency.REPLAYED_HEADER] = "true"
            return response
    result = service.import_purchases(
        session,
        principal,
        organisation,
        stream,
        file_format,
        filename=filename,
        idempotency_key=key,
    )
    return result.as_dict()


def _purchases(records: list[PurchaseRecord]) -> list[dict[str, Any]]:
    """Records as the schema reads them, with each trust's ODS code (looked up once)."""
    trusts = accounts.organisations_by_id(get_session(), {r.trust_id for r in records})
    fields = [name for name in PurchaseSchema().fields if hasattr(PurchaseRecord, name)]
    return [
        {name: getattr(r, name) for name in fields}
        | {"unit_price": r.unit_price, "trust_ods": trusts[r.trust_id].ods_code}
        for r in records
    ]


@blp.route("/purchases", methods=["GET"])
@authenticated(Role.BUYER, Role.OPERATOR)
@blp.arguments(PurchaseListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(PurchaseSchema))
@blp.alt_response(404, response="NOT_FOUND")
def list_purchases(
    limit: int,
    cursor: str | None,
    status=None,
    trust: str | None = None,
    product_id: str | None = None,
    excluded: bool | None = None,
):
    """Purchase records, newest first: a buyer's own trust's, or any trust's for operators
    (`status=unmatched` lists the lines still to match)."""
    session = get_session()
    stmt = service.list_purchases(
        session,
        current_principal(),
        trust_ods=trust,
        status=status,
        product_id=product_id,
        excluded=excluded,
    )
    page = paginate(
        session,
        stmt,
        order_by=[PurchaseRecord.created_at, PurchaseRecord.id],
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    return {"items": _purchases(page.items), "next_cursor": page.next_cursor}


@blp.route("/purchases/<string:purchase_id>", methods=["GET"])
@authenticated(Role.BUYER, Role.OPERATOR)
@blp.response(200, PurchaseSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_purchase(purchase_id: str):
    """One purchase record (a buyer's own trust's; any for operators)."""
    record = service.get_purchase(get_session(), current_principal(), purchase_id)
    return _purchases([record])[0]


@blp.route("/purchases/<string:purchase_id>/match", methods=["POST"])
@authenticated(Role.BUYER, Role.OPERATOR)
@blp.arguments(MatchSchema)
@blp.response(200, PurchaseSchema)
@blp.alt_response(404, response="NOT_FOUND")
def match_purchase(body: dict, purchase_id: str):
    """Match a purchase line to a catalogue product; the statistics follow at once."""
    record = service.match_purchase(
        get_session(), current_principal(), purchase_id, body["product_id"]
    )
    return _purchases([record])[0]


@blp.route("/purchases/<string:purchase_id>/exclude", methods=["POST"])
@authenticated(Role.OPERATOR)
@blp.arguments(ExclusionSchema)
@blp.response(200, PurchaseSchema)
@blp.alt_response(404, response="NOT_FOUND")
def exclude_purchase(body: dict, purchase_id: str):
    """Exclude a line from benchmarking (a special, a one-off) with a reason (operators)."""
    record = service.set_benchmark_exclusion(
        get_session(), current_principal(), purchase_id, excluded=True, reason=body["reason"]
    )
    return _purchases([record])[0]


@blp.route("/purchases/<string:purchase_id>/include", methods=["POST"])
@authenticated(Role.OPERATOR)
@blp.response(200, PurchaseSchema)
@blp.alt_response(404, response="NOT_FOUND")
def include_purchase(purchase_id: str):
    """Count an excluded line in benchmarking again (operators)."""
    record = service.set_benchmark_exclusion(
        get_session(), current_principal(), purchase_id, excluded=False
    )
    return _purchases([record])[0]


# --- price variance (public) ---------------------------------------------------------------------


def _product_variance_dict(view: service.ProductVarianceView) -> dict[str, Any]:
    variance = view.variance
    return {
        "product": {
            "id": view.product.id,
            "name": view.product.name,
            "category_id": view.product.category_id,
            "benchmark_excluded": view.product.benchmark_excluded,
            "benchmark_excluded_reason": view.product.benchmark_excluded_reason,
        },
        "window": view.window,
        "method": service.method_fields(view.method),
        "reported": variance is not None,
        "reason": view.reason,
        "n_trusts": view.n_trusts,
        "distribution": service.distribution_fields(
            variance.distribution, variance.benchmark, variance.possible_savings_pence
        )
        if variance
        else None,
        "trusts": view.trusts,
    }


@blp.route("/price-variance", methods=["GET"])
@blp.arguments(RankingArgs, location="query")
@blp.response(200, RankingSchema)
@blp.doc(responses={200: CSV_DOC})
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def price_variance(args: dict):
    """Products ranked by total possible savings (or `sort=spread`), with totals. Only products
    bought by at least `min_trusts` trusts and not excluded from benchmarking are listed."""
    _ensure_cache_current()
    session = get_session()
    window = _window(args["date_from"], args["date_to"])
    method = _method(args)
    kwargs = {
        "window": window,
        "method": method,
        "sort": args["sort"],
        "category_code": args["category"],
    }
    if wants_csv(args):
        stream, first = csv_session(
            lambda s: service.variance_ranking(s, cursor=None, limit=CSV_PAGE, **kwargs)
        )

        def rows() -> Iterator[dict[str, Any]]:
            page = first
            while True:
                yield from page.items
                if not page.next_cursor:
                    return
                page = service.variance_ranking(
                    stream, cursor=page.next_cursor, limit=CSV_PAGE, **kwargs
                )

        return csv_response(
            "price-variance.csv",
            (
                "product_id",
                "product_name",
                "category_id",
                *DISTRIBUTION_COLUMNS,
                "outliers",
                "units",
                "spend_pence",
            ),
            rows(),
            stream,
        )
    page = service.variance_ranking(session, cursor=args["cursor"], limit=args["limit"], **kwargs)
    return {
        "window": page.window,
        "method": service.method_fields(method),
        "sort": page.sort,
        "totals": {
            "products": page.total_products,
            "possible_savings_pence": page.total_possible_savings_pence,
        },
        "items": page.items,
        "next_cursor": page.next_cursor,
    }


@blp.route("/products/<string:product_id>/price-variance", methods=["GET"])
@blp.arguments(MethodArgs, location="query")
@blp.response(200, ProductVarianceSchema)
@blp.doc(responses={200: CSV_DOC})
@blp.alt_response(404, response="NOT_FOUND")
def product_price_variance(args: dict, product_id: str):
    """A product's distribution of per-trust unit prices and one row per trust (CSV: the trust
    rows with the distribution repeated on each)."""
    view = service.product_variance(
        get_session(),
        product_id,
        window=_window(args["date_from"], args["date_to"]),
        method=_method(args),
    )
    body = _product_variance_dict(view)
    if wants_csv(args):
        dist = body["distribution"] or {}
        rows = (
            {
                "product_id": view.product.id,
                "window_from": view.window.start,
                "window_to": view.window.end,
                **{f"product_{k}": v for k, v in dist.items()},
                **row,
            }
            for row in view.trusts
        )
        columns = (
            "product_id",
            "window_from",
            "window_to",
            "ods_code",
            "trust_name",
            "unit_price_pence",
            "units",
            "spend_pence",
            "possible_savings_pence",
            "counted_in_totals",
            "outlier",
            *(f"product_{c}" for c in DISTRIBUTION_COLUMNS),
        )
        return csv_response(f"price-variance-{product_id}.csv", columns, rows)
    return body


@blp.route("/products/<string:product_id>/price-variance.svg", methods=["GET"])
@blp.arguments(ChartArgs, location="query")
@blp.response(200, description="An SVG chart", content_type="image/svg+xml")
@blp.alt_response(404, response="NOT_FOUND")
def product_price_variance_chart(args: dict, product_id: str):
    """An accessible SVG dot plot of what each trust paid per unit, with the median and the
    benchmark, and the `highlight` trust marked."""
    view = service.product_variance(
        get_session(),
        product_id,
        window=_window(args["date_from"], args["date_to"]),
        method=m.Method(benchmark=args["benchmark"], min_trusts=args["min_trusts"]),
    )
    return Response(chart.render(view, args["highlight"]), mimetype="image/svg+xml")


@blp.route("/trusts/<string:ods>/savings", methods=["GET"])
@blp.arguments(TrustSavingsArgs, location="query")
@blp.response(200, TrustSavingsSchema)
@blp.doc(responses={200: CSV_DOC})
@blp.alt_response(404, response="NOT_FOUND")
def trust_savings(args: dict, ods: str):
    """A trust's savings opportunities, largest first, its total, and for each product the
    cheapest current marketplace offer."""
    _ensure_cache_current()
    session = get_session()
    window = _window(args["date_from"], args["date_to"])
    method = _method(args)
    if wants_csv(args):

        def page_after(stream: Session, cursor: str | None) -> Any:
            return service.trust_savings(
                stream, ods, window=window, method=method, cursor=cursor, limit=CSV_PAGE
            )

        stream, first = csv_session(lambda s: page_after(s, None))  # 404 before streaming

        def rows() -> Iterator[dict[str, Any]]:
            page = first
            while True:
                for item in page.items:
                    offer = item.get("cheapest_offer") or {}
                    yield {**item, **{f"cheapest_offer_{k}": v for k, v in offer.items()}}
                if not page.next_cursor:
                    return
                page = page_after(stream, page.next_cursor)

        columns = (
            "product_id",
            "product_name",
            "unit_price_pence",
            "units",
            "spend_pence",
            "n_trusts",
            "benchmark_pence",
            "median_pence",
            "possible_savings_pence",
            "outlier",
            "cheapest_offer_offer_id",
            "cheapest_offer_supplier_id",
            "cheapest_offer_pack_price_pence",
            "cheapest_offer_unit_price_pence",
        )
        return csv_response(f"savings-{ods.upper()}.csv", columns, rows(), stream)
    page = service.trust_savings(
        session, ods, window=window, method=method, cursor=args["cursor"], limit=args["limit"]
    )
    return {
        "trust": {"ods_code": page.trust.ods_code, "name": page.trust.name},
        "window": page.window,
        "method": service.method_fields(method),
        "total_products": page.total_products,
        "total_possible_savings_pence": page.total_possible_savings_pence,
        "items": page.items,
        "next_cursor": page.next_cursor,
    }


@blp.route("/price-check", methods=["GET"])
@blp.arguments(PriceCheckArgs, location="query")
@blp.response(200, PriceCheckSchema)
@blp.doc(responses={200: CSV_DOC})
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def price_check(args: dict):
    """Where a unit price (pence per base unit) stands among what trusts paid over the window
    (`from`/`to`; default the last 365 days): its percentile, the benchmark, the median and a
    verdict (`below_benchmark`, `typical`, `above_median`, `outlier`), and a cheaper current
    offer if there is one."""
    result = service.price_verdict(
        get_session(),
        args["product"],
        args["unit_price"],
        window=_window(args["date_from"], args["date_to"]),
        method=_method(args),
    )
    body = result.as_dict()
    if wants_csv(args):
        offer = result.cheaper_offer or {}
        row = {
            **body,
            "window_from": result.window.start,
            "window_to": result.window.end,
            "cheaper_offer_id": offer.get("offer_id"),
            "cheaper_offer_unit_price_pence": offer.get("unit_price_pence"),
        }
        columns = (
            "product_id",
            "unit_price_pence",
            "window_from",
            "window_to",
            "n_trusts",
            "percentile",
            "benchmark_pence",
            "median_pence",
            "verdict",
            "reason",
            "cheaper_offer_id",
            "cheaper_offer_unit_price_pence",
        )
        return csv_response("price-check.csv", columns, [row])
    return body
