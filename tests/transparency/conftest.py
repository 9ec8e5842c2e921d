"""Open-data fixtures: trusts, suppliers (one SME), a commissioner with budget holders, products
and offers made through the catalogue service, orders made directly with the orders domain's ORM
models (its service is not wired yet), and helpers that publish OCDS releases."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from marketplace.accounts.models import Organisation, OrgType, Role
from marketplace.budgets import service as budgets
from marketplace.budgets.models import Budget, ManagementType
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Offer, Product
from marketplace.db import utcnow
from marketplace.money import unit_price, vat_pence
from marketplace.orders.models import (
    CardPayment,
    CardPaymentStatus,
    Order,
    OrderLine,
    OrderStatus,
    PaymentMethod,
    Quote,
    SupplierOrder,
    SupplierOrderStatus,
)
from marketplace.pricing import service as pricing
from marketplace.transparency import service as transparency
from tests.support import SYSTEM, Actor, Factory

# Real GTINs from the NHS Drug Tariff Part IX (valid GS1 check digits).
GTIN_BANDAGE = "5000223456030"
GTIN_OTHER = "5010058057531"


class OpenWorld:
    """A small marketplace: three trusts with buyers, an SME and a large supplier, a
    commissioner with a budget manager, the bundled category tree."""

    def __init__(self, factory: Factory, session_factory):
        self.factory = factory
        self.session_factory = session_factory
        with session_factory.begin() as session:
            catalog.load_categories(session, catalog.bundled_category_rows())
        self.trusts = [
            factory.org(OrgType.TRUST, name="Leeds Teaching Hospitals NHS Trust", ods_code="RR8"),
            factory.org(OrgType.TRUST, name="Barts Health NHS Trust", ods_code="R1H"),
            factory.org(OrgType.TRUST, name="Royal Cornwall Hospitals NHS Trust", ods_code="REF"),
        ]
        self.buyers = [factory.actor(Role.BUYER, trust) for trust in self.trusts]
        self.sme = factory.actor(
            Role.SUPPLIER,
            factory.org(OrgType.SUPPLIER, name="Small Medical Supplies Ltd", is_sme=True),
        )
        self.large = factory.actor(
            Role.SUPPLIER, factory.org(OrgType.SUPPLIER, name="Big Healthcare Distribution plc")
        )
        self.commissioner = factory.org(
            OrgType.COMMISSIONER, name="NHS West Yorkshire ICB", ods_code="QWO"
        )
        self.manager = factory.actor(Role.BUDGET_MANAGER, self.commissioner)
        self._po = 0

    # --- catalogue ---------------------------------------------------------------------------

    def product(self, **kwargs: Any) -> Product:
        kwargs.setdefault("name", "Cohesive bandage 10cm x 2.5m")
        kwargs.setdefault("category_code", "33141113")
        with self.session_factory.begin() as session:
            return catalog.create_product(session, SYSTEM, **kwargs)

    def offer(self, supplier: Actor, product: Product, pack_price_pence: int, **kwargs) -> Offer:
        kwargs.setdefault("stock", 500)
        kwargs.setdefault("vat_rate_percent", Decimal(20))
        with self.session_factory.begin() as session:
            offer = catalog.create_offer(
                session,
                supplier.principal,
                product_id=product.id,
                pack_price_pence=pack_price_pence,
                **kwargs,
            )
            offer.product  # noqa: B018 - loaded for later use
            return offer

    # --- people with budgets -----------------------------------------------------------------

    def holder(self, *, name: str, email: str, commissioner: Organisation | None = None) -> Actor:
        org = commissioner or self.commissioner
        actor = self.factory.actor(Role.BUDGET_HOLDER, org)
        with self.session_factory.begin() as session:
            session.get(type(actor.user), actor.user.id).name = name
            session.get(type(actor.user), actor.user.id).email = email
        actor.user.name, actor.user.email = name, email
        return actor

    def budget(
        self, holder: Actor, *, reference: str | None = None, manager: Actor | None = None
    ) -> Budget:
        today = utcnow().date()
        with self.session_factory.begin() as session:
            return budgets.create_budget(
                session,
                (manager or self.manager).principal,
                holder_id=holder.user.id,
                management_type=ManagementType.DIRECT_PAYMENT,
                period_start=today - timedelta(days=400),
                period_end=today + timedelta(days=300),
                approval_threshold_pence=1_000_000,
                reference=reference,
                allocation_pence=500_000,
            )

    # --- orders (ORM models directly) ------------------------------------------------------------

    def order(
        self,
        org: Organisation,
        placed_by: Actor,
        items: list[tuple[Offer, int]],
        *,
        payment_method: PaymentMethod = PaymentMethod.PURCHASE_ORDER,
        budget: Budget | None = None,
        created_at: datetime | None = None,
        address: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> Order:
        """An order placed now (or at ``created_at``), one supplier order per supplier; in its
        own committed transaction, or in ``session`` (not committed) when one is given."""
        if session is None:
            with self.session_factory.begin() as own:
                return self.order(
                    org,
                    placed_by,
                    items,
                    payment_method=payment_method,
                    budget=budget,
                    created_at=created_at,
                    address=address,
                    session=own,
                )
        created_at = created_at or utcnow()
        self._po += 1
        by_supplier: dict[str, list[tuple[Offer, int]]] = defaultdict(list)
        for offer, quantity in items:
            by_supplier[offer.supplier_id].append((session.get(Offer, offer.id), quantity))
        lines = {
            supplier: [self._line(offer, quantity) for offer, quantity in offers]
            for supplier, offers in by_supplier.items()
        }
        totals = [sum(line[k] for ls in lines.values() for line in ls) for k in ("net", "vat")]
        net, vat = totals
        card = payment_method == PaymentMethod.CARD
        quote = Quote(
            created_by=placed_by.user.id,
            organisation_id=org.id,
            payment_method=payment_method,
            budget_id=budget.id if budget else None,
            net_pence=net,
            vat_pence=vat,
            gross_pence=net + vat,
            budget_pence=net + vat if budget else 0,
            card_pence=net + vat if card else 0,
            created_at=created_at,
            expires_at=created_at + timedelta(hours=1),
        )
        session.add(quote)
        session.flush()
        order = Order(
            quote_id=quote.id,
            organisation_id=org.id,
            placed_by=placed_by.user.id,
            payment_method=payment_method,
            budget_id=budget.id if budget else None,
            po_number=f"PO-{self._po:05d}"
            if payment_method == PaymentMethod.PURCHASE_ORDER
            else None,
            delivery_address=address or {"line1": "Ward 7", "postcode": "LS1 3EX"},
            status=OrderStatus.PLACED,
            net_pence=net,
            vat_pence=vat,
            gross_pence=net + vat,
            budget_pence=net + vat if budget else 0,
            card_pence=net + vat if card else 0,
            created_at=created_at,
            updated_at=created_at,
        )
        session.add(order)
        session.flush()
        for supplier_id, supplier_lines in lines.items():
            so_net = sum(line["net"] for line in supplier_lines)
            so_vat = sum(line["vat"] for line in supplier_lines)
            so = SupplierOrder(
                order_id=order.id,
                supplier_id=supplier_id,
                status=SupplierOrderStatus.PLACED,
                net_pence=so_net,
                vat_pence=so_vat,
                gross_pence=so_net + so_vat,
                budget_pence=so_net + so_vat if budget else 0,
                card_pence=so_net + so_vat if card else 0,
                created_at=created_at,
                updated_at=created_at,
            )
            session.add(so)
            session.flush()
            for position, line in enumerate(supplier_lines, start=1):
                session.add(
                    OrderLine(
                        supplier_order_id=so.id,
                        position=position,
                        **{k: v for k, v in line.items() if k not in ("net", "vat", "gross")},
                        net_pence=line["net"],
                        vat_pence=line["vat"],
                        gross_pence=line["gross"],
                    )
                )
            if card:
                session.add(
                    CardPayment(
                        supplier_order_id=so.id,
                        reference=f"ref-{so.id}",
                        payment_intent_id=f"pi_{so.id}",
                        amount_pence=so_net + so_vat,
                        status=CardPaymentStatus.AUTHORISED,
                    )
                )
        session.flush()
        return self.load_order(session, order.id)

    @staticmethod
    def _line(offer: Offer, quantity: int) -> dict[str, Any]:
        net = offer.pack_price_pence * quantity
        vat = vat_pence(net, offer.vat_rate_percent)
        return {
            "offer_id": offer.id,
            "product_id": offer.product_id,
            "quantity": quantity,
            "units_per_pack": offer.product.units_per_pack,
            "pack_price_pence": offer.pack_price_pence,
            "unit_price_pence": unit_price(offer.pack_price_pence, offer.product.units_per_pack),
            "vat_rate_percent": offer.vat_rate_percent,
            "net": net,
            "vat": vat,
            "gross": net + vat,
        }

    @staticmethod
    def load_order(session: Session, order_id: str) -> Order:
        order = session.get(Order, order_id)
        for so in order.supplier_orders:
            so.lines  # noqa: B018
            so.card_payment  # noqa: B018
        return order

    def update_supplier_order(self, so_id: str, **values: Any) -> None:
        with self.session_factory.begin() as session:
            so = session.get(SupplierOrder, so_id)
            payment = values.pop("payment", None)
            for name, value in values.items():
                setattr(so, name, value)
            if payment:
                for name, value in payment.items():
                    setattr(so.card_payment, name, value)

    # --- publishing ------------------------------------------------------------------------------

    def publish_placed(self, order_id: str):
        with self.session_factory.begin() as session:
            return transparency.publish_order_placed(session, session.get(Order, order_id))

    def publish_event(self, so_id: str, event: str):
        with self.session_factory.begin() as session:
            return transparency.publish_supplier_order_event(
                session, session.get(SupplierOrder, so_id), event
            )

    def dispatch(self, so_id: str, *, capture: bool = False) -> None:
        values: dict[str, Any] = {
            "status": SupplierOrderStatus.DISPATCHED,
            "dispatched_at": utcnow(),
        }
        if capture:
            with self.session_factory() as session:
                amount = session.get(SupplierOrder, so_id).card_payment.amount_pence
            values["payment"] = {"status": CardPaymentStatus.CAPTURED, "captured_pence": amount}
        self.update_supplier_order(so_id, **values)
        self.publish_event(so_id, "dispatched")

    # --- what trusts paid (pricing) ----------------------------------------------------------------

    def purchase(
        self, trust: Organisation, product: Product, *, quantity: int, total_pence: int, ref: str
    ) -> None:
        with self.session_factory.begin() as session:
            pricing.record_marketplace_purchase(
                session,
                trust_id=trust.id,
                order_reference=ref,
                line=1,
                order_date=utcnow().date() - timedelta(days=10),
                product_id=product.id,
                supplier_id=None,
                quantity=quantity,
                total_price_pence=total_pence,
            )


@pytest.fixture
def world(factory, session_factory) -> OpenWorld:
    return OpenWorld(factory, session_factory)
