"""The public price-transparency pages, rendered on the server (Jinja, no JavaScript):

- ``/``: search the catalogue; each result with its best offer;
- ``/products/<id>``: the product, its offers side by side (cheapest unit price first), the
  cross-trust price chart and what each trust paid;
- ``/open-data``: what is published, where, the columns, the licence and publication policy.

Every page carries security headers: a Content-Security-Policy without inline scripts (there are
no scripts at all), ``X-Content-Type-Options``, ``Referrer-Policy`` and ``frame-ancestors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup
from sqlalchemy.orm import Session

from ..catalog import search
from ..catalog import service as catalog
from ..errors import NotFound, Problem
from ..money import format_gbp, format_unit_price
from ..pricing import chart
from ..pricing import service as pricing
from ..web import HTML_SECURITY_HEADERS, get_session
from . import downloads, ocds

STATIC = Path(__file__).resolve().parent.parent / "static" / "transparency"
RESULTS_PER_PAGE = 20
MAX_QUERY = 200

blp = Blueprint("pages", __name__, static_folder=str(STATIC), static_url_path="/assets")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    **HTML_SECURITY_HEADERS,
}


@blp.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@blp.errorhandler(Problem)
def _problem_page(problem: Problem) -> tuple[str, int]:
    return render_template("transparency/error.html", problem=problem), problem.status


@blp.app_template_filter("gbp")
def _gbp(pence: int | None) -> str:
    return "" if pence is None else format_gbp(int(pence))


@blp.app_template_filter("per_unit")
def _per_unit(value: Decimal | float | None) -> str:
    return "" if value is None else format_unit_price(Decimal(str(value)))


# --- search ---------------------------------------------------------------------------------------


@dataclass
class Result:
    id: str
    name: str
    gtin: str | None
    category: str
    unit_of_measure: str
    units_per_pack: int
    offer_count: int
    best_supplier: str | None
    best_pack_price_pence: int | None
    best_unit_price: Decimal | None


def _search(session: Session, q: str, cursor: str | None) -> tuple[list[Result], str | None]:
    """The same search as ``GET /api/v1/search``, whichever backend answers it."""
    result = search.get_backend(current_app).search(
        session, search.SearchQuery(q=q, cursor=cursor, limit=RESULTS_PER_PAGE)
    )
    items = [
        Result(
            id=item.id,
            name=item.name,
            gtin=item.gtin,
            category=item.category.name,
            unit_of_measure=item.unit_of_measure,
            units_per_pack=item.units_per_pack,
            offer_count=item.offer_count,
            best_supplier=item.best_offer.supplier.name if item.best_offer else None,
            best_pack_price_pence=item.best_offer.pack_price_pence if item.best_offer else None,
            best_unit_price=item.best_offer.unit_price_pence if item.best_offer else None,
        )
        for item in result.items
    ]
    return items, result.next_cursor


@blp.get("/")
def home():
    q = (request.args.get("q") or "").strip()[:MAX_QUERY]
    cursor = request.args.get("cursor") or None
    session = get_session()
    results, next_cursor = _search(session, q, cursor) if q else (None, None)
    savings = [] if q else pricing.variance_ranking(session, limit=5).items
    return render_template(
        "transparency/home.html",
        q=q,
        results=results,
        next_cursor=next_cursor,
        savings=savings,
    )


# --- a product ------------------------------------------------------------------------------------


@blp.get("/products/<string:product_id>")
def product(product_id: str):
    if len(product_id) > 40:
        raise NotFound("There is no such product.", code="product-not-found")
    session = get_session()
    item = catalog.get_product(session, product_id)
    offers = catalog.active_offers(session, product_id)
    view = pricing.product_variance(session, product_id)
    # The chart escapes every text it contains (tests/transparency/test_pages.py checks it).
    svg = Markup(chart.render(view))  # noqa: S704  # nosec B704 # chart.render escapes all text
    distribution = view.variance.distribution if view.variance else None
    return render_template(
        "transparency/product.html",
        product=item,
        offers=offers,
        view=view,
        distribution=distribution,
        benchmark=view.variance.benchmark if view.variance else None,
        chart_svg=svg,
    )


# --- what is published ---------------------------------------------------------------------------


@blp.get("/open-data")
def open_data():
    return render_template(
        "transparency/open_data.html",
        datasets=list(downloads.DATASETS.values()),
        license=ocds.LICENSE,
        min_group_size=current_app.extensions["marketplace"].settings.min_group_size,
    )
