"""A marketplace holding real objects of every kind, for tests that call every endpoint.

Two organisations of every role (so "another organisation of the same role" exists), the small
shop of ``tests/orders/conftest.py`` (products, offers from two suppliers), a personal health
budget, trust and budget orders with their supplier orders, an approval, a budget hold, a quote
and imported purchase records. Everything is made through the services, the way the API makes
it, and each ``new_*`` helper makes one more object of its kind for a test that changes one.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from marketplace.accounts.models import OrgType, Role
from marketplace.budgets import ledger
from marketplace.budgets import service as budgets
from marketplace.budgets.models import Approval, Budget, LedgerEntry
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Offer, Product
from marketplace.orders import quotes
from marketplace.orders import service as orders
from marketplace.orders.models import Order, Quote, SupplierOrder
from marketplace.pricing import service as pricing
from marketplace.pricing.models import PurchaseRecord
from marketplace.pricing.rollups import today_utc
from marketplace.transparency import service as transparency
from tests.orders.conftest import ADDRESS, HOME, Shop
from tests.support import Actor, Factory

WEBHOOK_SECRET = "whsec_tests"

# Who calls: anonymous, then each role at the objects' own organisation ("own") and the same
# role at another organisation ("other"). Operators are marketplace-wide, so "other_operator"
# works for a second operator organisation and must see the same as "operator".
CALLERS = (
    "anonymous",
    "buyer",
    "other_buyer",
    "supplier",
    "other_supplier",
    "budget_holder",
    "other_budget_holder",
    "budget_manager",
    "other_budget_manager",
    "operator",
    "other_operator",
)


@dataclass
class World:
    factory: Factory
    session_factory: Any
    shop: Shop = field(init=False)
    actors: dict[str, Actor | None] = field(init=False)
    budget: Budget = field(init=False)
    trust_order: Order = field(init=False)
    budget_order: Order = field(init=False)
    approval: Approval = field(init=False)
    hold: LedgerEntry = field(init=False)
    quote: Quote = field(init=False)
    purchase: PurchaseRecord = field(init=False)
    supplier_orders: dict[str, SupplierOrder] = field(init=False)
    _n: int = 0

    def __post_init__(self) -> None:
        shop = self.shop = Shop(self.factory, self.session_factory)
        commissioner = self.factory.org(OrgType.COMMISSIONER)
        self.actors = {
            "anonymous": None,
            "buyer": shop.buyer,
            "other_buyer": shop.other_buyer,
            "supplier": shop.supplier,
            "other_supplier": shop.other_supplier,
            "budget_holder": shop.holder,
            "other_budget_holder": self.factory.actor(Role.BUDGET_HOLDER, commissioner),
            "budget_manager": shop.manager,
            "other_budget_manager": self.factory.actor(Role.BUDGET_MANAGER, commissioner),
            "operator": self.factory.actor(Role.OPERATOR),
            "other_operator": self.factory.actor(Role.OPERATOR),
        }
        with self.session_factory.begin() as session:  # enough wheelchairs for every test
            catalog.update_offer(
                session, shop.other_supplier.principal, shop.offers["chair"].id, {"stock": 10_000}
            )
        self.budget = self.new_budget()
        self.trust_order = self.new_trust_order()
        self.budget_order = self.new_budget_order(self.budget)
        self.approval = self.get(Approval, self.budget_order.approval_id)
        self.hold = self.new_hold()
        self.quote = self.new_quote()
        self.purchase = self.new_purchase()
        # Supplier orders in every state the supplier moves them through.
        states = ("accepted", "dispatched", "delivered")
        self.supplier_orders = {state: self.new_supplier_order(state) for state in states}

    # --- lookups ------------------------------------------------------------------------------

    def headers(self, caller: str) -> dict[str, str]:
        actor = self.actors[caller]
        return actor.headers if actor is not None else {}

    @property
    def offer(self) -> Offer:
        """An active offer of the "own" supplier."""
        return self.shop.offers["app"]

    @property
    def product_id(self) -> str:
        return self.offer.product_id

    @property
    def ocid(self) -> str:
        """The open-contracting id of the trust order (published when it was placed)."""
        with self.session_factory() as session:
            return transparency.ocid_for(session, self.trust_order.id)

    @property
    def trust_ods(self) -> str:
        return self.shop.buyer.org.ods_code or ""

    def get(self, model: type, object_id: str | None) -> Any:
        with self.session_factory() as session:
            return session.get(model, object_id)

    def next(self) -> int:
        """A number not used before in this world (for unique names and references)."""
        self._n += 1
        return self._n

    # --- one more object of each kind ---------------------------------------------------------

    def new_quote(self, actor: Actor | None = None, **kwargs: Any) -> Quote:
        with self.session_factory.begin() as session:
            return self._quote(session, actor or self.shop.buyer, **kwargs)

    def _quote(self, session: Any, actor: Actor, **kwargs: Any) -> Quote:
        kwargs.setdefault("payment_method", "purchase_order")
        kwargs.setdefault("lines", [quotes.BasketLine(offer_id=self.offer.id, quantity=1)])
        return quotes.create_quote(session, actor.principal, **kwargs)

    def new_trust_order(self) -> Order:
        """A purchase-order order of the "own" trust, for the "own" supplier (one supplier order)."""
        with self.session_factory.begin() as session:
            return self._trust_order(session)

    def _trust_order(self, session: Any) -> Order:
        order = orders.place_order(
            session,
            self.shop.buyer.principal,
            quote_id=self._quote(session, self.shop.buyer).id,
            delivery_address=ADDRESS,
            po_number=f"PO-{self.next()}",
        )
        order.supplier_orders  # noqa: B018 (loaded while the session is open)
        return order

    def new_budget_order(self, budget: Budget | None = None) -> Order:
        """The holder's wheelchair order: above the threshold, so it waits for approval (from a
        budget of its own unless one is given, so orders never run a budget dry)."""
        budget_id = (budget or self.new_budget()).id
        holder = self.shop.holder
        with self.session_factory.begin() as session:
            quote = self._quote(
                session,
                holder,
                payment_method="budget",
                budget_id=budget_id,
                lines=[quotes.BasketLine(offer_id=self.shop.offers["chair"].id, quantity=1)],
            )
            order = orders.place_order(
                session, holder.principal, quote_id=quote.id, delivery_address=HOME
            )
            order.supplier_orders  # noqa: B018
            return order

    def new_approval(self) -> Approval:
        return self.get(Approval, self.new_budget_order().approval_id)

    def new_supplier_order(self, state: str = "placed") -> SupplierOrder:
        """A supplier order of the "own" supplier, moved on to ``state`` (in one transaction)."""
        moves = {"placed": (), "accepted": ("accept",), "dispatched": ("accept", "dispatch")}
        moves["delivered"] = (*moves["dispatched"], "deliver")
        with self.session_factory.begin() as session:
            supplier_order = self._trust_order(session).supplier_orders[0]
            for action in moves[state]:
                orders.transition_supplier_order(
                    session, self.shop.supplier.principal, supplier_order.id, action
                )
            return supplier_order

    def new_budget(self) -> Budget:
        """A budget of the "own" holder; its threshold is below the wheelchair's price, so
        ordering one waits for the budget manager's approval."""
        return self.shop.budget(threshold=10_000, wheelchair_pence=200_000, digital_pence=200_000)

    def new_hold(self, budget: Budget | None = None) -> LedgerEntry:
        budget = budget or self.budget
        with self.session_factory.begin() as session:
            fresh = budgets.get_budget(session, self.shop.holder.principal, budget.id)
            line = fresh.plan_lines[1]  # the digital-tools line
            return ledger.hold(
                session, self.shop.holder.principal, fresh, 100, plan_line_id=line.id
            )

    def new_purchase(self) -> PurchaseRecord:
        """An imported purchase line of the "own" trust (unmatched: no GTIN)."""
        n = self.next()
        csv_text = (
            "po_number,line,order_date,supplier_name,supplier_sku,gtin,description,quantity,"
            f"units_per_pack,total_price_pence\nIMP-{n},1,{today_utc().isoformat()},Acme,SKU-{n},,"
            "Examination gloves,2,100,1100\n"
        )
        with self.session_factory.begin() as session:
            buyer = self.shop.buyer
            result = pricing.import_purchases(
                session, buyer.principal, buyer.org, io.BytesIO(csv_text.encode()), "csv"
            )
            import_id = result.import_id
        with self.session_factory() as session:
            return session.scalar(
                select(PurchaseRecord).where(PurchaseRecord.import_id == import_id)
            )

    def new_product(self, *, listed: bool = True) -> Product:
        """A product the "own" supplier created; ``listed``: and alone lists (so that it may
        still change it)."""
        n = self.next()
        with self.session_factory.begin() as session:
            product = catalog.create_product(
                session,
                self.shop.supplier.principal,
                name=f"Sterile dressing pad {n}",
                category_code="33141110",
            )
        if listed:
            self.new_offer(product.id)
        return product

    def new_offer(self, product_id: str | None = None) -> Offer:
        """An active offer of the "own" supplier (on a new product unless one is given)."""
        product_id = product_id or self.new_product(listed=False).id
        with self.session_factory.begin() as session:
            return catalog.create_offer(
                session,
                self.shop.supplier.principal,
                product_id=product_id,
                pack_price_pence=250,
                stock=10,
            )


@contextmanager
def seeded_world(app) -> Iterator[World]:
    """An emptied database seeded with a ``World``, for a module of tests that only add to it.
    Stripe webhooks are configured meanwhile, as in production (without a secret the webhook
    answers 503 by design, whoever calls)."""
    from tests.conftest import _empty_all_tables

    state = app.extensions["marketplace"]
    _empty_all_tables(state.engine)
    settings = state.settings
    state.settings = dataclasses.replace(settings, stripe_webhook_secret=WEBHOOK_SECRET)
    try:
        yield World(Factory(state.session_factory), state.session_factory)
    finally:
        state.settings = settings
