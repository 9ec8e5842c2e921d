"""Open data: OCDS releases for trust orders, the change feed, PHB spending aggregates.

Plain functions taking a ``Session``; they flush and never commit.

The ordering domain calls, in the same transaction as the change:
- ``publish_order_placed(session, order)`` when an order is placed;
- ``publish_supplier_order_event(session, supplier_order, event)`` when a supplier order is
  dispatched, delivered, cancelled, rejected or refunded.

Only trust orders are published (paid by purchase order or card, placed by a trust, no
budget). Orders paid from a personal health budget are never published one by one: they appear
only in ``phb_spending``'s aggregates, and only for groups of at least ``min_group_size`` people.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, distinct, func, literal_column, select
from sqlalchemy.orm import Session

from .. import config as config_module
from ..accounts import service as accounts
from ..accounts.models import Organisation, OrgType
from ..budgets.models import Budget
from ..catalog import service as catalog
from ..catalog.models import Category, Product
from ..config import Settings
from ..db import utcnow
from ..errors import NotFound
from ..money import format_gbp
from ..orders.models import (
    CardPayment,
    CardPaymentStatus,
    Order,
    OrderLine,
    OrderStatus,
    PaymentMethod,
    SupplierOrder,
    SupplierOrderStatus,
)
from . import feed, ocds
from .models import ChangeEntry, OcdsRelease

TRUST_PAYMENT_METHODS = (PaymentMethod.PURCHASE_ORDER, PaymentMethod.CARD)
UNPUBLISHED_ORDER_STATUSES = (
    OrderStatus.PENDING_APPROVAL,
    OrderStatus.REJECTED,
    OrderStatus.CANCELLED,
)
# Supplier orders whose lines count as PHB spending (money held or spent, not returned).
SPENDING_STATUSES = (
    SupplierOrderStatus.PLACED,
    SupplierOrderStatus.ACCEPTED,
    SupplierOrderStatus.DISPATCHED,
    SupplierOrderStatus.DELIVERED,
)
CAPTURED_CARD_STATUSES = (
    CardPaymentStatus.CAPTURED,
    CardPaymentStatus.PARTIALLY_REFUNDED,
    CardPaymentStatus.REFUNDED,
)


# --- settings without Flask ------------------------------------------------------------------

_settings_by_engine: weakref.WeakKeyDictionary[Engine, Settings] = weakref.WeakKeyDictionary()


def register_settings(engine: Engine, settings: Settings) -> None:
    """Let services find the app's settings (OCDS prefix, base URL) from a session's engine."""
    _settings_by_engine[engine] = settings


def settings_for(session: Session) -> Settings:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return _settings_by_engine.get(engine) or config_module.from_env()


def ocid_for(session: Session, order_id: str) -> str:
    return f"{settings_for(session).ocds_prefix}-{order_id}"


# --- which orders are public ------------------------------------------------------------------


def is_trust_order(session: Session, order: Order) -> bool:
    """Placed by a trust and paid by purchase order or card: published. Anything else (above
    all, orders paid from a personal health budget) never is."""
    if order.payment_method not in TRUST_PAYMENT_METHODS or order.budget_id is not None:
        return False
    return accounts.get_organisation(session, order.organisation_id).type == OrgType.TRUST


def trust_order_filter() -> list[Any]:
    """The same rule as ``is_trust_order``, as SQL over ``orders`` joined to its organisation."""
    return [
        Order.payment_method.in_(TRUST_PAYMENT_METHODS),
        Order.budget_id.is_(None),
        Organisation.type == OrgType.TRUST,
    ]


# --- building releases --------------------------------------------------------------------------


@dataclass
class _Parties:
    trust: dict[str, Any]
    suppliers: dict[str, dict[str, Any]]  # supplier organisation id → party

    @property
    def all(self) -> list[dict[str, Any]]:
        return [self.trust, *self.suppliers.values()]


def _supplier_orders(session: Session, order: Order) -> list[SupplierOrder]:
    """Read with a query (autoflushed), not the relationship, which may be stale inside the
    caller's transaction."""
    return list(
        session.scalars(
            select(SupplierOrder)
            .where(SupplierOrder.order_id == order.id)
            .order_by(SupplierOrder.id)
        )
    )


def _lines(session: Session, so: SupplierOrder) -> list[OrderLine]:
    return list(
        session.scalars(
            select(OrderLine)
            .where(OrderLine.supplier_order_id == so.id)
            .order_by(OrderLine.position, OrderLine.id)
        )
    )


def _card_payment(session: Session, so: SupplierOrder) -> CardPayment | None:
    return session.scalars(
        select(CardPayment).where(CardPayment.supplier_order_id == so.id)
    ).first()


def _parties(session: Session, order: Order) -> _Parties:
    """The trust and every supplier of the order. Roles describe the whole process so far
    (arrays of strings are replaced whole when releases are merged): a refund makes the
    supplier a payer and the trust a payee too."""
    supplier_orders = _supplier_orders(session, order)
    refunded_by = {so.supplier_id for so in supplier_orders if so.refunded_pence > 0}
    trust_roles = ["buyer", "payer"] + (["payee"] if refunded_by else [])
    trust = ocds.trust_party(accounts.get_organisation(session, order.organisation_id), trust_roles)
    organisations = accounts.organisations_by_id(
        session, [so.supplier_id for so in supplier_orders]
    )
    suppliers: dict[str, dict[str, Any]] = {}
    for so in supplier_orders:
        if so.supplier_id not in suppliers:
            roles = ["supplier", "payee"] + (["payer"] if so.supplier_id in refunded_by else [])
            suppliers[so.supplier_id] = ocds.supplier_party(organisations[so.supplier_id], roles)
    return _Parties(trust=trust, suppliers=suppliers)


def _items(session: Session, so: SupplierOrder) -> list[dict[str, Any]]:
    lines = _lines(session, so)
    products = catalog.products_by_id(session, [line.product_id for line in lines])
    return [ocds.item(line, products[line.product_id]) for line in lines]


def _award(order: Order, so: SupplierOrder, parties: _Parties, items: list) -> dict[str, Any]:
    return {
        "id": so.id,
        "title": f"Marketplace order {order.id}: {parties.suppliers[so.supplier_id]['name']}",
        "status": "active",
        "date": ocds.timestamp(order.created_at),
        "value": ocds.value(so.net_pence),
        "suppliers": [ocds.reference(parties.suppliers[so.supplier_id])],
        "items": items,
    }


def _contract(order: Order, so: SupplierOrder, items: list) -> dict[str, Any]:
    return {
        "id": so.id,
        "awardID": so.id,
        "title": f"Marketplace order {order.id}, supplier order {so.id}",
        "status": "pending",  # in force once the supplier dispatches
        "value": ocds.value(so.net_pence),
        "items": items,
        "period": {"startDate": ocds.timestamp(order.created_at)},
    }


def _transaction(
    txn_id: str, when: datetime, pence: int, payer: dict[str, Any], payee: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": txn_id,
        "date": ocds.timestamp(when),
        "value": ocds.value(pence),
        "payer": ocds.reference(payer),
        "payee": ocds.reference(payee),
    }


def _milestone(milestone_id: str, title: str, when: datetime) -> dict[str, Any]:
    return {
        "id": milestone_id,
        "title": title,
        "type": "delivery",
        "status": "met",
        "dateMet": ocds.timestamp(when),
    }


def _envelope(
    ocid: str, release_id: str, date: datetime, tags: list[str], parties: _Parties
) -> dict[str, Any]:
    return {
        "ocid": ocid,
        "id": release_id,
        "date": ocds.timestamp(date),
        "tag": tags,
        "initiationType": "tender",  # the only value OCDS 1.1 allows
        "language": "en",
        "parties": parties.all,
        "buyer": ocds.reference(parties.trust),
    }


def _last_release(session: Session, ocid: str) -> OcdsRelease | None:
    return session.scalars(
        select(OcdsRelease)
        .where(OcdsRelease.ocid == ocid)
        .order_by(OcdsRelease.date.desc(), OcdsRelease.seq.desc())
        .limit(1)
    ).first()


def _release_date(last: OcdsRelease | None) -> datetime:
    """Now, but never earlier than the process's previous release (dates order a record)."""
    now = utcnow()
    if last is not None and now <= last.date:
        return last.date + timedelta(microseconds=1)
    return now


def _store(
    session: Session,
    *,
    order: Order,
    release: dict[str, Any],
    event: str,
    supplier_order_id: str | None = None,
    refunded_pence: int = 0,
) -> OcdsRelease:
    row = OcdsRelease(
        release_id=release["id"],
        ocid=release["ocid"],
        order_id=order.id,
        supplier_order_id=supplier_order_id,
        event=event,
        tags=",".join(release["tag"]),
        refunded_pence=refunded_pence,
        date=datetime.fromisoformat(release["date"]),
        data=json.dumps(release, separators=(",", ":"), ensure_ascii=False),
    )
    row.xid = feed.writer_xid(session)
    session.add(row)
    record_change(
        session,
        kind="order.awarded" if event == "placed" else "order.updated",
        object_type="ocds_release",
        object_id=release["id"],
        data={
            "ocid": release["ocid"],
            "release_id": release["id"],
            "tag": release["tag"],
            "event": event,
            "order_id": order.id,
            "supplier_order_id": supplier_order_id,
        },
    )
    session.flush()
    return row


def _existing(session: Session, release_id: str) -> OcdsRelease | None:
    return session.scalars(select(OcdsRelease).where(OcdsRelease.release_id == release_id)).first()


def publish_order_placed(session: Session, order: Order) -> OcdsRelease | None:
    """Publish the award/contract release of a trust order (one award and one contract per
    supplier order). Idempotent: a second call returns the release already published. Returns
    None, publishing nothing, for an order that is not a trust order or is not (yet) placed."""
    if not is_trust_order(session, order) or order.status in UNPUBLISHED_ORDER_STATUSES:
        return None
    ocid = ocid_for(session, order.id)
    release_id = f"{ocid}-placed"
    existing = _existing(session, release_id)
    if existing is not None:
        return existing
    parties = _parties(session, order)
    release = _envelope(
        ocid,
        release_id,
        _release_date(_last_release(session, ocid)),
        ocds.EVENT_TAGS["placed"],
        parties,
    )
    awards, contracts = [], []
    for so in _supplier_orders(session, order):
        items = _items(session, so)
        awards.append(_award(order, so, parties, items))
        contracts.append(_contract(order, so, items))
    release["awards"] = awards
    release["contracts"] = contracts
    return _store(session, order=order, release=release, event="placed")


def publish_supplier_order_event(
    session: Session, supplier_order: SupplierOrder, event: str
) -> OcdsRelease | None:
    """Publish what happened to one supplier order of a trust order: ``dispatched`` (contract
    in force; captured card payments as transactions), ``delivered``, ``cancelled``,
    ``rejected`` (award and contract ended) or ``refunded`` (an amendment, and the refund as a
    transaction when it went back to a card). Publishes the order's placement first if that
    was missed. Idempotent per event (and, for refunds, per refunded total). Returns None for
    orders that are not published."""
    if event not in ocds.SUPPLIER_ORDER_EVENTS:
        raise ValueError(f"unknown supplier order event {event!r}")
    so = supplier_order
    order = session.get(Order, so.order_id)
    if not is_trust_order(session, order):
        return None
    ocid = ocid_for(session, order.id)
    if _existing(session, f"{ocid}-placed") is None:
        publish_order_placed(session, order)
    refunded_before = 0
    if event == "refunded":
        refunded_before = (
            session.scalar(
                select(func.max(OcdsRelease.refunded_pence)).where(
                    OcdsRelease.supplier_order_id == so.id, OcdsRelease.event == "refunded"
                )
            )
            or 0
        )
        if so.refunded_pence <= refunded_before:
            return None  # nothing new to say
        release_id = f"{ocid}-{so.id}-refunded-{so.refunded_pence}"
    else:
        release_id = f"{ocid}-{so.id}-{event}"
    existing = _existing(session, release_id)
    if existing is not None:
        return existing

    last = _last_release(session, ocid)
    date = _release_date(last)
    parties = _parties(session, order)
    trust, supplier = parties.trust, parties.suppliers[so.supplier_id]
    release = _envelope(ocid, release_id, date, ocds.EVENT_TAGS[event], parties)
    contract: dict[str, Any] = {"id": so.id, "awardID": so.id}
    payment = _card_payment(session, so)

    if event == "dispatched":
        dispatched = so.dispatched_at or date
        contract["status"] = "active"
        implementation: dict[str, Any] = {}
        if (
            payment is not None
            and payment.status in CAPTURED_CARD_STATUSES
            and payment.captured_pence > 0
        ):
            implementation["transactions"] = [
                _transaction(
                    f"{payment.id}-capture", dispatched, payment.captured_pence, trust, supplier
                )
            ]
        implementation["milestones"] = [_milestone(f"{so.id}-dispatch", "Dispatched", dispatched)]
        contract["implementation"] = implementation
    elif event == "delivered":
        delivered = so.delivered_at or date
        contract["status"] = "active"
        contract["period"] = {"endDate": ocds.timestamp(delivered)}
        contract["implementation"] = {
            "milestones": [_milestone(f"{so.id}-delivery", "Delivered", delivered)]
        }
    elif event in ("cancelled", "rejected"):
        release["awards"] = [
            {"id": so.id, "status": "cancelled" if event == "cancelled" else "unsuccessful"}
        ]
        contract["status"] = "terminated" if so.dispatched_at else "cancelled"
    else:  # refunded
        amount = so.refunded_pence - refunded_before
        contract["amendments"] = [
            {
                "id": f"{so.id}-refund-{so.refunded_pence}",
                "date": ocds.timestamp(date),
                "rationale": f"Refund of {format_gbp(amount)} (VAT included) to the buyer.",
                "amendsReleaseID": last.release_id if last is not None else None,
                "releaseID": release_id,
            }
        ]
        if contract["amendments"][0]["amendsReleaseID"] is None:
            del contract["amendments"][0]["amendsReleaseID"]
        if so.status == SupplierOrderStatus.REFUNDED:
            contract["status"] = "terminated"
        if payment is not None and payment.refunded_pence > 0:
            contract["implementation"] = {
                "transactions": [
                    _transaction(
                        f"{payment.id}-refund-{so.refunded_pence}", date, amount, supplier, trust
                    )
                ]
            }
    release["contracts"] = [contract]
    return _store(
        session,
        order=order,
        release=release,
        event=event,
        supplier_order_id=so.id,
        refunded_pence=so.refunded_pence if event == "refunded" else 0,
    )


# --- reading releases ---------------------------------------------------------------------------


def release_page(
    session: Session, *, since: datetime | None, cursor: str | None, limit: int
) -> feed.FeedPage:
    """Published releases in feed order (safe to follow while orders are being placed)."""
    after = feed.decode(cursor) if cursor else None
    first_match = [OcdsRelease.date >= since] if since is not None and after is None else []
    return feed.read(session, OcdsRelease, after=after, limit=limit, first_match=first_match)


def record_releases(session: Session, ocid: str) -> list[dict[str, Any]]:
    """Every release of one contracting process, oldest first; 404 when there is none."""
    rows = session.scalars(
        select(OcdsRelease.data)
        .where(OcdsRelease.ocid == ocid)
        .order_by(OcdsRelease.date, OcdsRelease.seq)
    ).all()
    if not rows:
        raise NotFound(f"No contracting process with ocid {ocid!r}.", code="ocid-not-found")
    return [json.loads(data) for data in rows]


def record(session: Session, ocid: str) -> dict[str, Any]:
    releases = record_releases(session, ocid)
    return {
        "ocid": ocid,
        "releases": releases,
        "compiledRelease": ocds.compile_releases(releases),
    }


# --- the change feed ------------------------------------------------------------------------------


def record_change(
    session: Session, *, kind: str, object_type: str, object_id: str, data: dict[str, Any]
) -> None:
    entry = ChangeEntry(
        kind=kind,
        object_type=object_type,
        object_id=object_id,
        recorded_at=utcnow(),
        data=json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str),
    )
    entry.xid = feed.writer_xid(session)
    session.add(entry)


def change_page(
    session: Session, *, since: datetime | None, cursor: str | None, limit: int
) -> feed.FeedPage:
    after = feed.decode(cursor) if cursor else None
    first_match = [ChangeEntry.recorded_at >= since] if since is not None and after is None else []
    return feed.read(session, ChangeEntry, after=after, limit=limit, first_match=first_match)


# --- personal health budget spending: aggregates only ----------------------------------------------

PHB_COLUMNS = (
    "month",
    "commissioner_ods_code",
    "commissioner_name",
    "category_code",
    "category_name",
    "people",
    "orders",
    "total_pence",
)


def _month(session: Session, column: Any) -> Any:
    if feed.is_postgresql(session):
        return func.to_char(func.timezone("UTC", column), literal_column("'YYYY-MM'"))
    return func.strftime("%Y-%m", column)  # SQLite keeps UTC datetimes as text


def phb_spending(session: Session, min_group_size: int) -> list[dict[str, Any]]:
    """Spending from personal health budgets by commissioner, category and month: how many
    people, how many orders, and the total (VAT included) of the order lines, for supplier
    orders that are placed, accepted, dispatched or delivered. A group with fewer than
    ``min_group_size`` distinct budget holders is left out entirely, in the query itself.

    Derived from the orders domain's data (orders paid from a budget and their lines), with
    each budget's holder read from ``budgets`` only to count distinct people."""
    if min_group_size < config_module.MIN_GROUP_SIZE_FLOOR:
        raise ValueError("min_group_size is below the floor")
    month = _month(session, Order.created_at).label("month")
    people = func.count(distinct(Budget.holder_user_id))
    stmt = (
        select(
            month,
            Organisation.ods_code,
            Organisation.name,
            Category.code,
            Category.name,
            people,
            func.count(distinct(Order.id)),
            func.sum(OrderLine.gross_pence),
        )
        .select_from(Order)
        .join(Budget, Budget.id == Order.budget_id)
        .join(Organisation, Organisation.id == Budget.commissioner_id)
        .join(SupplierOrder, SupplierOrder.order_id == Order.id)
        .join(OrderLine, OrderLine.supplier_order_id == SupplierOrder.id)
        .join(Product, Product.id == OrderLine.product_id)
        .join(Category, Category.id == Product.category_id)
        .where(
            Order.payment_method == PaymentMethod.BUDGET,
            SupplierOrder.status.in_(SPENDING_STATUSES),
        )
        .group_by(month, Organisation.ods_code, Organisation.name, Category.code, Category.name)
        .having(people >= min_group_size)
        .order_by(month, Organisation.ods_code, Category.code)
    )
    return [
        dict(zip(PHB_COLUMNS, (m, ods, org, code, name, int(p), int(o), int(t)), strict=True))
        for m, ods, org, code, name, p, o, t in session.execute(stmt)
    ]
