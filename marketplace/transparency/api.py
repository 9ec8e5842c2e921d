"""Public open-data endpoints (no token): OCDS release and record packages, the change feed,
PHB spending aggregates and the bulk downloads."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, request

from ..errors import NotFound
from ..web import Blueprint, get_session
from . import downloads, feed, ocds, service
from .schemas import (
    ChangePageSchema,
    FeedArgs,
    FormatArgs,
    OpenDataIndexSchema,
    PhbSpendingSchema,
    RecordPackageSchema,
    ReleasePackageSchema,
)

blp = Blueprint(
    "open-data",
    __name__,
    description="Public open data: OCDS releases and records of trust orders, the change feed, "
    "personal health budget spending aggregates and bulk downloads. No token needed; licensed "
    "under the Open Government Licence v3.0.",
)
CSV_DOC = {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}


@blp.record_once
def _register_settings(state: Any) -> None:
    marketplace = state.app.extensions["marketplace"]
    service.register_settings(marketplace.engine, marketplace.settings)


def _settings() -> Any:
    return current_app.extensions["marketplace"].settings


def _base_url() -> str:
    return _settings().public_base_url


def _here() -> str:
    return _base_url() + request.full_path.rstrip("?")


def _url(path: str, **query: Any) -> str:
    query = {k: v for k, v in query.items() if v is not None}
    return _base_url() + path + ("?" + urlencode(query) if query else "")


# --- OCDS ------------------------------------------------------------------------------------------


@blp.route("/ocds/releases", methods=["GET"])
@blp.arguments(FeedArgs, location="query")
@blp.response(200, ReleasePackageSchema)
@blp.alt_response(204, description="No release after this cursor yet: poll again later.")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def releases(args: dict):
    """An OCDS 1.1 release package of the releases published for trust orders, in feed order.
    Follow `links.next` (or pass `next_cursor` as `cursor`) to read on; a crawler that keeps
    the last `next_cursor` and polls with it later sees every release exactly once, even while
    orders are being placed. An empty page answers 204 (a package needs a release)."""
    page = service.release_page(
        get_session(), since=args["since"], cursor=args["cursor"], limit=args["limit"]
    )
    next_cursor = feed.encode(page.position)
    if not page.rows:
        empty = Response(status=204, headers={"X-Next-Cursor": next_cursor})
        del empty.headers["Content-Type"]
        return empty
    items = [json.loads(row.data) for row in page.rows]
    body = ocds.package_metadata(_here(), _base_url(), ocds.latest_date(items))
    body["releases"] = items
    if page.has_more:
        limit = args["limit"] if "limit" in request.args else None
        body["links"] = {"next": _url("/api/v1/ocds/releases", cursor=next_cursor, limit=limit)}
    body["next_cursor"] = next_cursor
    return body


@blp.route("/ocds/records/<string:ocid>", methods=["GET"])
@blp.response(200, RecordPackageSchema)
@blp.alt_response(404, response="NOT_FOUND")
def record(ocid: str):
    """An OCDS 1.1 record package for one contracting process (one trust order): every release,
    embedded and oldest first, and the compiled release (the releases merged by the OCDS merge
    rules)."""
    if len(ocid) > 100:
        raise NotFound(f"No contracting process with ocid {ocid[:100]!r}…", code="ocid-not-found")
    rec = service.record(get_session(), ocid)
    body = ocds.package_metadata(_here(), _base_url(), rec["compiledRelease"]["date"])
    body["records"] = [rec]
    return body


# --- the change feed ---------------------------------------------------------------------------------

_HREF = {
    "product": "/api/v1/products/{id}",
    "offer": "/api/v1/offers/{id}",
    "ocds_release": None,
}


def _href(entry: Any, data: dict[str, Any]) -> str:
    if entry.object_type == "ocds_release":
        return _url(f"/api/v1/ocds/records/{data['ocid']}")
    return _url(_HREF[entry.object_type].format(id=entry.object_id))


@blp.route("/changes", methods=["GET"])
@blp.arguments(FeedArgs, location="query")
@blp.response(200, ChangePageSchema)
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def changes(args: dict):
    """Catalogue changes (products created/updated, offers listed/changed, new offer prices)
    and award changes (each OCDS release published), in a commit-safe order: keep the last
    `next_cursor` and poll with it, and you see every change exactly once."""
    page = service.change_page(
        get_session(), since=args["since"], cursor=args["cursor"], limit=args["limit"]
    )
    items = []
    for entry in page.rows:
        data = json.loads(entry.data)
        items.append(
            {
                "kind": entry.kind,
                "object_type": entry.object_type,
                "object_id": entry.object_id,
                "recorded_at": entry.recorded_at,
                "data": data,
                "href": _href(entry, data),
                "cursor": feed.encode((entry.xid, entry.seq)),
            }
        )
    return {"items": items, "next_cursor": feed.encode(page.position), "has_more": page.has_more}


# --- aggregates and downloads ------------------------------------------------------------------------


def _wants_csv(args: dict) -> bool:
    if args.get("format"):
        return args["format"] == "csv"
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


@blp.route("/open-data/phb-spending", methods=["GET"])
@blp.arguments(FormatArgs, location="query")
@blp.response(200, PhbSpendingSchema)
@blp.doc(responses={200: CSV_DOC})
def phb_spending(args: dict):
    """Personal health budget spending by commissioner, category and month: people, orders
    and total. Only groups of at least `min_group_size` distinct people are published; no
    budget holder is ever named or identifiable."""
    minimum = _settings().min_group_size
    rows = service.phb_spending(get_session(), minimum)
    if _wants_csv(args):
        return Response(
            b"".join(downloads.csv_chunks(service.PHB_COLUMNS, rows)),
            mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="phb-spending.csv"'},
        )
    return {"min_group_size": minimum, "items": rows}


@blp.route("/open-data", methods=["GET"])
@blp.response(200, OpenDataIndexSchema)
def index():
    """What is published, where, in which formats and with which columns."""
    return {
        "license": ocds.LICENSE,
        "documentation": _url("/open-data"),
        "ocds_releases": _url("/api/v1/ocds/releases"),
        "changes": _url("/api/v1/changes"),
        "datasets": [
            {
                "name": d.name,
                "title": d.title,
                "columns": list(d.columns),
                "csv": _url(f"/api/v1/open-data/downloads/{d.name}.csv"),
                "jsonl": _url(f"/api/v1/open-data/downloads/{d.name}.jsonl"),
            }
            for d in downloads.DATASETS.values()
        ],
    }


@blp.route("/open-data/downloads/<string:dataset>.<any(csv, jsonl):fmt>", methods=["GET"])
@blp.response(
    200,
    description="The whole dataset, streamed (gzip-compressed when the client sends "
    "`Accept-Encoding: gzip`).",
    content_type="text/csv",
)
@blp.alt_response(404, response="NOT_FOUND")
def download(dataset: str, fmt: str):
    """A whole dataset as CSV (header row, UTF-8) or JSON lines: `catalogue`,
    `offer-price-history`, `price-variance`, `awarded-order-lines`, `phb-spending`. Columns are
    fixed and documented in docs/open-data.md (and listed at /api/v1/open-data)."""
    chosen = downloads.DATASETS.get(dataset)
    if chosen is None:
        raise NotFound(
            f"No dataset {dataset!r}; see /api/v1/open-data for the list.",
            code="dataset-not-found",
        )
    state = current_app.extensions["marketplace"]
    use_gzip = request.accept_encodings.quality("gzip") > 0
    body = downloads.stream(state.read_session, chosen, fmt, state.settings, gzip=use_gzip)
    response = Response(body, mimetype=downloads.FORMATS[fmt], direct_passthrough=True)
    response.headers["Content-Disposition"] = f'attachment; filename="{dataset}.{fmt}"'
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = "public, max-age=300"
    if use_gzip:
        response.headers["Content-Encoding"] = "gzip"
    return response
