"""The authorisation matrix: every endpoint, called by every caller, answers as documented.

README "Who does what": a missing or invalid token answers 401, the wrong role 403, another
organisation's object 404 (as if it did not exist), and public data needs no token. OWASP API1
(broken object-level authorisation) and API5 (broken function-level authorisation).

The endpoints come from the application's URL map, so a new endpoint cannot be forgotten:
``test_the_table_names_every_endpoint`` fails when the URL map has an endpoint the table has no
row for, or the table a row for an endpoint that is gone. Only static files and the API's own
documentation are left out (``NOT_IN_THE_MATRIX``): they serve the same files to everyone.

Each row says what each caller gets (``tests.foundation.world.CALLERS``: anonymous, each role
at the object's own organisation, the same role at another organisation) and how to make the
request on a real object. A refused call must write nothing: the object it aimed at is
unchanged and no audit event was recorded. A change the caller may make runs on a fresh object
of its own, so that each allowed caller finds the object in the state the call needs. Lists are
checked for what they show: the own organisation's object appears, and nobody else's list has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, inspect, select

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.budgets import service as budgets
from marketplace.budgets.models import Budget
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Product
from marketplace.db import utcnow
from tests.foundation.world import CALLERS, World, seeded_world
from tests.orders.conftest import ADDRESS
from tests.support import SYSTEM

# Static files and the API's documentation (the same bytes for everyone, no object behind them).
NOT_IN_THE_MATRIX = frozenset(
    {
        "static",
        "pages.static",
        "docs_assets.docs_asset",
        "api-docs.openapi_json",
        "api-docs.openapi_swagger_ui",
    }
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

ROLE_OF = {
    caller: Role(caller.removeprefix("other_")) for caller in CALLERS if caller != "anonymous"
}
OWN = {"buyer", "supplier", "budget_holder", "budget_manager"}
OPERATORS = {"operator", "other_operator"}


def url_map_endpoints(app) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in NOT_IN_THE_MATRIX
        for method in rule.methods & set(METHODS)
    }


# --- what each caller gets --------------------------------------------------------------------


def public(status: int = 200) -> dict[str, int]:
    return dict.fromkeys(CALLERS, status)


def signed_in(status: int = 200) -> dict[str, int]:
    return {caller: 401 if caller == "anonymous" else status for caller in CALLERS}


def guarded(
    roles: Iterable[Role], owners: Iterable[str] = (), ok: int = 200, *, collection: bool = False
) -> dict[str, int]:
    """401 without a token, 403 for a role not in ``roles``; for the roles allowed: ``ok`` for
    the object's ``owners`` and operators (everyone, for a collection) and 404 for the rest."""
    roles, owners = set(roles), set(owners)
    expected = {}
    for caller in CALLERS:
        if caller == "anonymous":
            expected[caller] = 401
        elif ROLE_OF[caller] not in roles:
            expected[caller] = 403
        elif collection or caller in owners or caller in OPERATORS:
            expected[caller] = ok
        else:
            expected[caller] = 404
    return expected


# --- how to make each request -----------------------------------------------------------------


@dataclass
class Call:
    path: dict[str, str] = field(default_factory=dict)
    json: Any = None
    data: bytes | None = None
    content_type: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    watch: Any = None  # the object a refused call must leave as it was
    listed: str | None = None  # an id that only ``listed_for`` see in this list
    listed_for: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Row:
    expect: dict[str, int]
    call: Callable[[World, str], Call]


def budget_call(make: Callable[[World], Budget] | None = None, body=None) -> Callable:
    def call(w: World, caller: str) -> Call:
        budget = make(w) if make else w.budget
        return Call(path={"budget_id": budget.id}, json=body, watch=budget)

    return call


def _suspended_budget(w: World) -> Budget:
    budget = w.new_budget()
    with w.session_factory.begin() as session:
        fresh = budgets.get_budget(session, w.shop.manager.principal, budget.id)
        budgets.change_status(session, w.shop.manager.principal, fresh, "suspend", "Review")
    return budget


def supplier_order_call(state: str, body: dict | None = None) -> Callable:
    def call(w: World, caller: str) -> Call:
        supplier_order = w.new_supplier_order(state)
        return Call(
            path={"supplier_order_id": supplier_order.id}, json=body or {}, watch=supplier_order
        )

    return call


def approval_call(body: dict | None) -> Callable:
    def call(w: World, caller: str) -> Call:
        approval = w.new_approval() if body is not None else w.approval
        return Call(path={"approval_id": approval.id}, json=body, watch=approval)

    return call


def purchase_call(body: dict | None = None, *, fresh: bool = True) -> Callable:
    def call(w: World, caller: str) -> Call:
        record = w.new_purchase() if fresh else w.purchase
        return Call(path={"purchase_id": record.id}, json=body, watch=record)

    return call


def product_call(body: dict | None = None) -> Callable:
    def call(w: World, caller: str) -> Call:
        product = w.new_product() if body is not None else w.get(Product, w.product_id)
        return Call(path={"product_id": product.id}, json=body, watch=product)

    return call


def offer_call(suffix_body: dict | None = None) -> Callable:
    def call(w: World, caller: str) -> Call:
        offer = w.new_offer() if suffix_body is not None else w.offer
        return Call(path={"offer_id": offer.id}, json=suffix_body, watch=offer)

    return call


def _unlisted_product(w: World) -> Product:
    with w.session_factory.begin() as session:
        return catalog.create_product(
            session, SYSTEM, name=f"Gauze swab {w.next()}", category_code="33141110"
        )


def create_offer(w: World, caller: str) -> Call:
    body = {"product_id": _unlisted_product(w).id, "pack_price_pence": 300, "vat_rate_percent": 20}
    if caller in OPERATORS:
        body["supplier_id"] = w.shop.supplier.org.id
    return Call(json=body)


def create_product(w: World, caller: str) -> Call:
    body = {"name": f"Crepe bandage {w.next()}", "category_code": "33141110"}
    if caller in OPERATORS:
        body["supplier_id"] = w.shop.supplier.org.id
    return Call(json=body)


def import_offers(w: World, caller: str) -> Call:
    n = w.next()
    csv_text = (
        "gtin,name,manufacturer,brand,mpn,category_code,unit_of_measure,units_per_pack,"
        "pack_price_pence,vat_rate_percent,stock,lead_time_days,min_order_qty,supplier_sku\n"
        f",Gauze swab {n},,,,33141110,EA,10,300,20,5,1,1,SKU-{n}\n"
    )
    query = {"supplier_id": w.shop.supplier.org.id} if caller in OPERATORS else {}
    return Call(data=csv_text.encode(), content_type="text/csv", query=query)


def import_purchases(w: World, caller: str) -> Call:
    n = w.next()
    csv_text = (
        "po_number,line,order_date,supplier_name,supplier_sku,gtin,description,quantity,"
        f"units_per_pack,total_price_pence\nM-{n},1,{utcnow().date().isoformat()},Acme,S-{n},,"
        "Gloves,1,100,550\n"
    )
    query = {"trust": w.trust_ods} if caller in OPERATORS else {}
    return Call(data=csv_text.encode(), content_type="text/csv", query=query)


def create_budget(w: World, caller: str) -> Call:
    today = utcnow().date()
    return Call(
        json={
            "holder_id": w.shop.holder.user.id,
            "management_type": "notional",
            "period_start": today.isoformat(),
            "period_end": (today + timedelta(days=364)).isoformat(),
            "approval_threshold_pence": 10_000,
        }
    )


def budget_quote(w: World, caller: str) -> Call:
    """A quote paid from the "own" holder's budget: the budget is the object."""
    return Call(
        json={
            "lines": [{"offer_id": w.offer.id, "quantity": 1}],
            "payment_method": "budget",
            "budget_id": w.budget.id,
        },
        watch=w.budget,
    )


def place_order(w: World, caller: str) -> Call:
    quote = w.new_quote()
    body = {"quote_id": quote.id, "delivery_address": ADDRESS, "po_number": f"PO-{w.next()}"}
    return Call(json=body, watch=quote)


def cancel_order(w: World, caller: str) -> Call:
    order = w.new_trust_order()
    return Call(path={"order_id": order.id}, json={"reason": "Ordered twice"}, watch=order)


def release_hold(w: World, caller: str) -> Call:
    hold = w.new_hold()
    return Call(path={"budget_id": w.budget.id, "hold_id": hold.id}, json={}, watch=hold)


def listing(listed: Callable[[World], str], owners: Iterable[str]) -> Callable:
    def call(w: World, caller: str) -> Call:
        return Call(listed=listed(w), listed_for=frozenset(owners) | OPERATORS)

    return call


def reading(make: Callable[[World], Call]) -> Callable:
    return lambda w, caller: make(w)


HOLDERS_AND_MANAGERS = (Role.BUDGET_HOLDER, Role.BUDGET_MANAGER)
BUDGET_OWNERS = ("budget_holder", "budget_manager")
BUYING = (Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.SUPPLIER)
ORDER_READERS = (Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.OPERATOR)
SUPPLIERS = (Role.SUPPLIER, Role.OPERATOR)
TRUSTS = (Role.BUYER, Role.OPERATOR)
MANAGER = (Role.BUDGET_MANAGER,)
OPERATOR = (Role.OPERATOR,)
API = "/api/v1"

TABLE: dict[tuple[str, str], Row] = {
    # --- public pages, probes and open data ---------------------------------------------------
    ("GET", "/"): Row(public(), reading(lambda w: Call())),
    ("GET", "/open-data"): Row(public(), reading(lambda w: Call())),
    ("GET", "/products/<string:product_id>"): Row(
        public(), reading(lambda w: Call(path={"product_id": w.product_id}))
    ),
    ("GET", "/healthz"): Row(public(), reading(lambda w: Call())),
    ("GET", "/readyz"): Row(public(), reading(lambda w: Call())),
    # Prometheus metrics: the scraper's METRICS_TOKEN or an operator's token.
    ("GET", "/metrics"): Row(guarded(OPERATOR), reading(lambda w: Call())),
    ("GET", f"{API}/categories"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/search"): Row(public(), reading(lambda w: Call(query={"q": "gloves"}))),
    ("GET", f"{API}/products"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/products/<string:product_id>"): Row(public(), product_call()),
    ("GET", f"{API}/offers/<string:offer_id>"): Row(public(), offer_call()),
    ("GET", f"{API}/offers/<string:offer_id>/price-history"): Row(public(), offer_call()),
    ("GET", f"{API}/price-variance"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/products/<string:product_id>/price-variance"): Row(public(), product_call()),
    ("GET", f"{API}/products/<string:product_id>/price-variance.svg"): Row(
        public(), product_call()
    ),
    ("GET", f"{API}/trusts/<string:ods>/savings"): Row(
        public(), reading(lambda w: Call(path={"ods": w.trust_ods}))
    ),
    ("GET", f"{API}/price-check"): Row(
        public(),
        reading(lambda w: Call(query={"product": w.product_id, "unit_price": "49.99"})),
    ),
    ("GET", f"{API}/ocds/releases"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/ocds/records/<string:ocid>"): Row(
        public(), reading(lambda w: Call(path={"ocid": w.ocid}))
    ),
    ("GET", f"{API}/changes"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/open-data"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/open-data/phb-spending"): Row(public(), reading(lambda w: Call())),
    ("GET", f"{API}/open-data/downloads/<string:dataset>.<any(csv, jsonl):fmt>"): Row(
        public(), reading(lambda w: Call(path={"dataset": "catalogue", "fmt": "csv"}))
    ),
    # Signed by Stripe, not by a token: an unsigned event is refused the same for everyone.
    ("POST", f"{API}/webhooks/stripe"): Row(public(400), lambda w, c: Call(json={})),
    # --- accounts (operators onboard; anyone signed in may ask who they are) -----------------
    ("GET", f"{API}/me"): Row(signed_in(), reading(lambda w: Call())),
    ("GET", f"{API}/organisations"): Row(guarded(OPERATOR), reading(lambda w: Call())),
    ("POST", f"{API}/organisations"): Row(
        guarded(OPERATOR, ok=201),
        lambda w, c: Call(json={"type": "supplier", "name": f"New supplier {w.next()}"}),
    ),
    ("GET", f"{API}/organisations/<string:org_id>"): Row(
        guarded(OPERATOR), reading(lambda w: Call(path={"org_id": w.shop.buyer.org.id}))
    ),
    ("GET", f"{API}/users"): Row(guarded(OPERATOR), reading(lambda w: Call())),
    ("GET", f"{API}/audit-events"): Row(
        guarded(OPERATOR), reading(lambda w: Call(query={"object": w.budget.id}))
    ),
    ("POST", f"{API}/users"): Row(
        guarded(OPERATOR, ok=201),
        lambda w, c: Call(
            json={
                "organisation_id": w.shop.buyer.org.id,
                "role": "buyer",
                "email": f"new{w.next()}@trust.example",
            }
        ),
    ),
    # --- catalogue (suppliers list their own; operators any) ---------------------------------
    ("POST", f"{API}/products"): Row(guarded(SUPPLIERS, ok=201, collection=True), create_product),
    # A product is public and shared by every supplier listing it, so another supplier sees it
    # and is refused the change (403); offers, by contrast, are each supplier's own (404).
    ("PATCH", f"{API}/products/<string:product_id>"): Row(
        guarded(SUPPLIERS, ["supplier"]) | {"other_supplier": 403},
        product_call({"description": "Non-adherent, 10 x 10 cm"}),
    ),
    ("GET", f"{API}/offers"): Row(
        guarded(SUPPLIERS, collection=True), listing(lambda w: w.offer.id, ["supplier"])
    ),
    ("POST", f"{API}/offers"): Row(guarded(SUPPLIERS, ok=201, collection=True), create_offer),
    ("PATCH", f"{API}/offers/<string:offer_id>"): Row(
        guarded(SUPPLIERS, ["supplier"]), offer_call({"stock": 7})
    ),
    ("POST", f"{API}/offers/import"): Row(guarded(SUPPLIERS, collection=True), import_offers),
    # --- pricing (a trust's purchase records are its own) ------------------------------------
    ("GET", f"{API}/purchases"): Row(
        guarded(TRUSTS, collection=True), listing(lambda w: w.purchase.id, ["buyer"])
    ),
    ("POST", f"{API}/purchases/import"): Row(guarded(TRUSTS, collection=True), import_purchases),
    ("GET", f"{API}/purchases/<string:purchase_id>"): Row(
        guarded(TRUSTS, ["buyer"]), purchase_call(fresh=False)
    ),
    ("POST", f"{API}/purchases/<string:purchase_id>/match"): Row(
        guarded(TRUSTS, ["buyer"]),
        lambda w, c: purchase_call({"product_id": w.product_id})(w, c),
    ),
    ("POST", f"{API}/purchases/<string:purchase_id>/exclude"): Row(
        guarded(OPERATOR), purchase_call({"reason": "A one-off special"})
    ),
    ("POST", f"{API}/purchases/<string:purchase_id>/include"): Row(
        guarded(OPERATOR), purchase_call()
    ),
    # --- personal health budgets (the holder's and their commissioner's managers') -----------
    ("GET", f"{API}/budgets"): Row(
        guarded(HOLDERS_AND_MANAGERS, collection=True),
        listing(lambda w: w.budget.id, BUDGET_OWNERS),
    ),
    # The holder is named in the body: like every reference in a body that names nothing the
    # caller may use, another commissioner's holder is a 422 (the same as a made-up id).
    ("POST", f"{API}/budgets"): Row(
        guarded(MANAGER, ["budget_manager"], ok=201) | {"other_budget_manager": 422},
        create_budget,
    ),
    ("GET", f"{API}/budgets/spend-report"): Row(
        guarded(MANAGER, collection=True), reading(lambda w: Call())
    ),
    ("GET", f"{API}/budgets/<string:budget_id>"): Row(
        guarded(HOLDERS_AND_MANAGERS, BUDGET_OWNERS), budget_call()
    ),
    ("GET", f"{API}/budgets/<string:budget_id>/ledger"): Row(
        guarded(HOLDERS_AND_MANAGERS, BUDGET_OWNERS), budget_call()
    ),
    ("GET", f"{API}/budgets/<string:budget_id>/statement"): Row(
        guarded(HOLDERS_AND_MANAGERS, BUDGET_OWNERS), budget_call()
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/plan-lines"): Row(
        guarded(MANAGER, ["budget_manager"], ok=201),
        budget_call(
            World.new_budget,
            {"description": "Stay connected", "category_codes": ["48180000"], "amount_pence": 500},
        ),
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/suspend"): Row(
        guarded(MANAGER, ["budget_manager"]), budget_call(World.new_budget, {"reason": "Review"})
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/reactivate"): Row(
        guarded(MANAGER, ["budget_manager"]), budget_call(_suspended_budget, {"reason": "Done"})
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/close"): Row(
        guarded(MANAGER, ["budget_manager"]), budget_call(World.new_budget, {"reason": "Ended"})
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/allocations"): Row(
        guarded(MANAGER, ["budget_manager"], ok=201),
        budget_call(World.new_budget, {"amount_pence": 1_000}),
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/adjustments"): Row(
        guarded(MANAGER, ["budget_manager"], ok=201),
        budget_call(World.new_budget, {"amount_pence": -100, "reason": "Overpaid"}),
    ),
    # The manager sees the budget but may not spend a direct payment (the holder's own money).
    ("POST", f"{API}/budgets/<string:budget_id>/holds"): Row(
        guarded(HOLDERS_AND_MANAGERS, ["budget_holder"], ok=201) | {"budget_manager": 403},
        budget_call(World.new_budget, {"amount_pence": 100, "category_code": "48180000"}),
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/holds/<string:hold_id>/release"): Row(
        guarded(HOLDERS_AND_MANAGERS, BUDGET_OWNERS, ok=201), release_hold
    ),
    ("POST", f"{API}/budgets/<string:budget_id>/check"): Row(
        guarded(HOLDERS_AND_MANAGERS, BUDGET_OWNERS),
        lambda w, c: budget_call(body={"items": [{"offer_id": w.offer.id, "quantity": 1}]})(w, c),
    ),
    ("GET", f"{API}/approvals"): Row(
        guarded(MANAGER, collection=True), listing(lambda w: w.approval.id, ["budget_manager"])
    ),
    ("GET", f"{API}/approvals/<string:approval_id>"): Row(
        guarded(MANAGER, ["budget_manager"]), approval_call(None)
    ),
    ("POST", f"{API}/approvals/<string:approval_id>/approve"): Row(
        guarded(MANAGER, ["budget_manager"]), approval_call({"reason": "In the plan"})
    ),
    ("POST", f"{API}/approvals/<string:approval_id>/reject"): Row(
        guarded(MANAGER, ["budget_manager"]), approval_call({"reason": "Not in the plan"})
    ),
    # --- quotes and orders (the caller's own; supplier orders the supplier's) ----------------
    # Paying from a budget is for holders and managers (buyers and suppliers: 403); the budget's
    # own manager sees it but may not spend a direct payment (403); other holders: 404.
    ("POST", f"{API}/quotes"): Row(
        guarded(HOLDERS_AND_MANAGERS, ["budget_holder"], ok=201) | {"budget_manager": 403},
        budget_quote,
    ),
    ("GET", f"{API}/quotes/<string:quote_id>"): Row(
        signed_in(404) | {"buyer": 200},
        reading(lambda w: Call(path={"quote_id": w.quote.id})),
    ),
    ("POST", f"{API}/orders"): Row(guarded(BUYING, ["buyer"], ok=201), place_order),
    ("GET", f"{API}/orders"): Row(
        guarded(ORDER_READERS, collection=True), listing(lambda w: w.trust_order.id, ["buyer"])
    ),
    ("GET", f"{API}/orders/<string:order_id>"): Row(
        guarded(ORDER_READERS, ["buyer"]),
        reading(lambda w: Call(path={"order_id": w.trust_order.id})),
    ),
    ("POST", f"{API}/orders/<string:order_id>/cancel"): Row(
        guarded(ORDER_READERS, ["buyer"]), cancel_order
    ),
    ("GET", f"{API}/supplier-orders"): Row(
        guarded(SUPPLIERS, collection=True),
        listing(lambda w: w.trust_order.supplier_orders[0].id, ["supplier"]),
    ),
    ("GET", f"{API}/supplier-orders/<string:supplier_order_id>"): Row(
        guarded(SUPPLIERS, ["supplier"]),
        reading(lambda w: Call(path={"supplier_order_id": w.trust_order.supplier_orders[0].id})),
    ),
    ("POST", f"{API}/supplier-orders/<string:supplier_order_id>/accept"): Row(
        guarded(SUPPLIERS, ["supplier"]), supplier_order_call("placed")
    ),
    ("POST", f"{API}/supplier-orders/<string:supplier_order_id>/reject"): Row(
        guarded(SUPPLIERS, ["supplier"]), supplier_order_call("placed", {"reason": "No stock"})
    ),
    ("POST", f"{API}/supplier-orders/<string:supplier_order_id>/dispatch"): Row(
        guarded(SUPPLIERS, ["supplier"]), supplier_order_call("accepted")
    ),
    ("POST", f"{API}/supplier-orders/<string:supplier_order_id>/deliver"): Row(
        guarded(SUPPLIERS, ["supplier"]), supplier_order_call("dispatched")
    ),
    ("POST", f"{API}/supplier-orders/<string:supplier_order_id>/refund"): Row(
        guarded(SUPPLIERS, ["supplier"]),
        supplier_order_call("delivered", {"amount_pence": 100, "reason": "Damaged box"}),
    ),
}


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(shared_app):
    with seeded_world(shared_app) as world:
        yield world


def test_the_table_names_every_endpoint(shared_app):
    in_app = url_map_endpoints(shared_app)
    missing = sorted(in_app - set(TABLE))
    gone = sorted(set(TABLE) - in_app)
    assert not missing, f"endpoints with no row in the authorisation matrix: {missing}"
    assert not gone, f"rows for endpoints that no longer exist: {gone}"


def test_a_new_endpoint_would_need_a_row():
    """The endpoint list is the URL map's: a route nobody wrote a row for shows up in it, and
    only static files and the documentation stay out."""
    app = Flask(__name__)
    app.add_url_rule("/api/v1/widgets/<string:widget_id>", "widgets.get", lambda widget_id: "")
    app.add_url_rule("/api/v1/widgets", "widgets.create", lambda: "", methods=["POST"])
    app.add_url_rule("/docs", "api-docs.openapi_swagger_ui", lambda: "")
    endpoints = url_map_endpoints(app)
    assert endpoints == {
        ("GET", "/api/v1/widgets/<string:widget_id>"),
        ("POST", "/api/v1/widgets"),
    }
    assert not endpoints & set(TABLE)


def _url(rule: str, call: Call) -> str:
    def value(match: re.Match[str]) -> str:
        return call.path[match.group(1)]

    return re.sub(r"<(?:[^:<>]+:)?([a-z_]+)>", value, rule)


def _snapshot(session, obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    model = type(obj)
    fresh = session.get(model, inspect(obj).identity)
    return {c.key: getattr(fresh, c.key) for c in inspect(model).column_attrs}


def _audit_count(session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEvent))


def _listed_ids(response) -> set[str]:
    return {item["id"] for item in response.get_json()["items"]}


@pytest.mark.parametrize("endpoint", sorted(TABLE), ids=lambda e: f"{e[0]} {e[1]}")
def test_each_caller_gets_the_documented_answer(endpoint, world, shared_app):
    method, rule = endpoint
    row = TABLE[endpoint]
    client = shared_app.test_client()
    changes = method != "GET"
    shared = row.call(world, "anonymous")
    wrong: list[str] = []
    for caller in CALLERS:
        expected = row.expect[caller]
        allowed = expected < 400
        call = row.call(world, caller) if changes and allowed else shared
        watched = changes and not allowed
        if watched:
            with world.session_factory() as session:
                before = (_audit_count(session), _snapshot(session, call.watch))
        headers = world.headers(caller)
        if call.content_type:
            headers["Content-Type"] = call.content_type
        response = client.open(
            _url(rule, call),
            method=method,
            headers=headers,
            json=call.json,
            data=call.data,
            query_string=call.query,
        )
        if response.status_code != expected:
            wrong.append(
                f"{caller}: {response.status_code} (expected {expected}) "
                f"{response.get_data(as_text=True)[:200]}"
            )
            continue
        if not allowed:
            assert response.mimetype == "application/problem+json", (caller, response.mimetype)
        if watched:
            with world.session_factory() as session:
                after = (_audit_count(session), _snapshot(session, call.watch))
            assert after == before, f"{caller}'s refused {method} wrote something"
        if call.listed is not None and allowed:
            seen = call.listed in _listed_ids(response)
            assert seen == (caller in call.listed_for), (caller, "lists", call.listed, seen)
    assert not wrong, f"{method} {rule}:\n  " + "\n  ".join(wrong)
