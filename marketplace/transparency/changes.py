"""The change feed's catalogue entries, recorded from ORM events so that no other domain has to
call anything: after every flush, new and changed products, new and changed offers (listing
terms, not stock) and new offer prices (rows of the offer price history) become feed entries,
written on the flush's own connection, in the same transaction as the change.

Award changes come from ``service.publish_*`` (one entry per published OCDS release).

Only public facts go into an entry: never who made the change (price history rows carry the
changer's e-mail address; it stays out), never stock levels.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session

from ..catalog.models import Category, Offer, OfferPriceHistory, Product
from ..catalog.service import PRODUCT_FIELDS
from ..db import utcnow
from ..money import unit_price, unit_price_json
from . import feed
from .models import ChangeEntry

OFFER_TERMS = ("status", "lead_time_days", "min_order_qty", "supplier_sku")


def _changed(obj: Any, names: tuple[str, ...]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _product(session: Session, product: Product) -> dict[str, Any]:
    category = session.get(Category, product.category_id)
    return {
        "id": product.id,
        "name": product.name,
        "gtin": product.gtin,
        "category_code": category.code if category else None,
        "unit_of_measure": product.unit_of_measure,
        "units_per_pack": product.units_per_pack,
        "benchmark_excluded": product.benchmark_excluded,
    }


def _offer(offer: Offer) -> dict[str, Any]:
    return {
        "id": offer.id,
        "product_id": offer.product_id,
        "supplier_id": offer.supplier_id,
        "status": getattr(offer.status, "value", offer.status),
        "pack_price_pence": offer.pack_price_pence,
        "lead_time_days": offer.lead_time_days,
        "min_order_qty": offer.min_order_qty,
    }


def _price(session: Session, row: OfferPriceHistory) -> dict[str, Any]:
    offer = session.get(Offer, row.offer_id)
    product = session.get(Product, offer.product_id) if offer is not None else None
    units = product.units_per_pack if product is not None else None
    return {
        "offer_id": row.offer_id,
        "product_id": offer.product_id if offer is not None else None,
        "supplier_id": offer.supplier_id if offer is not None else None,
        "pack_price_pence": row.pack_price_pence,
        "unit_price_pence": unit_price_json(unit_price(row.pack_price_pence, units))
        if units
        else None,
        "vat_rate_percent": str(row.vat_rate_percent),
        "price_breaks": list(row.price_breaks or []),
        "effective_from": row.effective_from.isoformat() if row.effective_from else None,
    }


def entries_for_flush(session: Session) -> list[dict[str, Any]]:
    """The feed entries the pending flush makes (called from ``after_flush``, where ``new``
    and ``dirty`` and attribute history still describe what was just written)."""
    entries: list[tuple[str, str, str, dict[str, Any]]] = []
    for obj in list(session.new):
        if isinstance(obj, Product):
            entries.append(("product.created", "product", obj.id, _product(session, obj)))
        elif isinstance(obj, Offer):
            entries.append(("offer.created", "offer", obj.id, _offer(obj)))
        elif isinstance(obj, OfferPriceHistory):
            entries.append(("offer.price_changed", "offer", obj.offer_id, _price(session, obj)))
    for obj in list(session.dirty):
        if isinstance(obj, Product) and _changed(obj, PRODUCT_FIELDS):
            entries.append(("product.updated", "product", obj.id, _product(session, obj)))
        elif isinstance(obj, Offer) and _changed(obj, OFFER_TERMS):
            entries.append(("offer.updated", "offer", obj.id, _offer(obj)))
    now = utcnow()
    return [
        {
            "kind": kind,
            "object_type": object_type,
            "object_id": object_id,
            "recorded_at": now,
            "data": json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str),
        }
        for kind, object_type, object_id, data in entries
    ]


@event.listens_for(Session, "after_flush")
def _record_catalogue_changes(session: Session, _flush_context: Any) -> None:
    rows = entries_for_flush(session)
    if rows:
        session.connection().execute(insert(ChangeEntry).values(xid=feed.writer_xid(session)), rows)
