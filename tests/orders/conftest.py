"""A real Stripe-compatible server for payment tests: localstripe on 127.0.0.1, a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

LAUNCH = (
    "import sys; from aiohttp import web; from localstripe.server import app; "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    pytest.importorskip(
        "localstripe", reason="localstripe is not installed (pip install -e '.[test]')"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"localstripe did not start: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("localstripe did not start within 15 s")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


# --- a small marketplace to buy from ----------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from marketplace.accounts.models import OrgType, Role  # noqa: E402
from marketplace.budgets import service as budgets  # noqa: E402
from marketplace.budgets.models import Budget, ManagementType  # noqa: E402
from marketplace.catalog import service as catalog  # noqa: E402
from marketplace.catalog.models import Offer  # noqa: E402
from marketplace.db import utcnow  # noqa: E402
from marketplace.pricing import service as pricing  # noqa: E402
from tests.support import Actor, Factory  # noqa: E402

ADDRESS = {
    "name": "Stores, Freeman Hospital",
    "line1": "Freeman Road",
    "town": "Newcastle upon Tyne",
    "postcode": "NE7 7DN",
}
HOME = {
    "name": "H. Holder",
    "line1": "1 Acacia Avenue",
    "town": "Gloucester",
    "postcode": "GL1 1AA",
}


@dataclass
class Shop:
    factory: Factory
    session_factory: Any
    buyer: Actor = None  # type: ignore[assignment]
    other_buyer: Actor = None  # type: ignore[assignment]
    supplier: Actor = None  # type: ignore[assignment]
    other_supplier: Actor = None  # type: ignore[assignment]
    manager: Actor = None  # type: ignore[assignment]
    holder: Actor = None  # type: ignore[assignment]
    offers: dict[str, Offer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with self.session_factory.begin() as session:
            catalog.load_categories(session, catalog.bundled_category_rows())
        self.buyer = self.factory.actor(Role.BUYER)
        self.other_buyer = self.factory.actor(Role.BUYER)
        self.supplier = self.factory.actor(Role.SUPPLIER)
        self.other_supplier = self.factory.actor(Role.SUPPLIER)
        commissioner = self.factory.org(OrgType.COMMISSIONER)
        self.manager = self.factory.actor(Role.BUDGET_MANAGER, commissioner)
        self.holder = self.factory.actor(Role.BUDGET_HOLDER, commissioner)
        gloves = self.product("Nitrile examination gloves, medium", "18424300", units_per_pack=100)
        chair = self.product("Self-propelled lightweight wheelchair", "33193120")
        app = self.product("Pain management app, 12-month licence", "48180000")
        self.offers["gloves_a"] = self.offer(
            self.supplier,
            gloves,
            550,
            stock=50,
            vat="20",
            breaks=[{"min_qty": 10, "pack_price_pence": 500}],
        )
        self.offers["gloves_b"] = self.offer(self.other_supplier, gloves, 480, stock=50, vat="20")
        self.offers["chair"] = self.offer(
            self.other_supplier, chair, 42_000, stock=5, vat="0", lead_time_days=10
        )
        self.offers["app"] = self.offer(self.supplier, app, 4_999, stock=1000, vat="0")

    def product(self, name: str, category: str, units_per_pack: int = 1) -> str:
        with self.session_factory.begin() as session:
            return catalog.create_product(
                session,
                self.supplier.principal,
                name=name,
                category_code=category,
                units_per_pack=units_per_pack,
            ).id

    def offer(
        self,
        supplier: Actor,
        product_id: str,
        price: int,
        *,
        stock: int,
        vat: str,
        breaks=None,
        **kwargs,
    ) -> Offer:
        with self.session_factory.begin() as session:
            return catalog.create_offer(
                session,
                supplier.principal,
                product_id=product_id,
                pack_price_pence=price,
                stock=stock,
                vat_rate_percent=vat,
                price_breaks=breaks or [],
                **kwargs,
            )

    def budget(
        self,
        *,
        threshold: int = 100_000,
        top_up: bool = False,
        wheelchair_pence: int = 50_000,
        digital_pence: int = 20_000,
    ) -> Budget:
        today = utcnow().date()
        with self.session_factory.begin() as session:
            return budgets.create_budget(
                session,
                self.manager.principal,
                holder_id=self.holder.user.id,
                management_type=ManagementType.DIRECT_PAYMENT,
                period_start=today - timedelta(days=10),
                period_end=today + timedelta(days=355),
                approval_threshold_pence=threshold,
                top_up_allowed=top_up,
                plan_lines=[
                    {
                        "description": "Get about independently",
                        "category_codes": ["33193000"],
                        "amount_pence": wheelchair_pence,
                    },
                    {
                        "description": "Manage pain with apps",
                        "category_codes": ["48180000"],
                        "amount_pence": digital_pence,
                    },
                ],
            )

    def stock(self, key: str) -> int:
        with self.session_factory() as session:
            return catalog.get_offer(session, self.offers[key].id).stock


@pytest.fixture
def shop(factory, session_factory) -> Shop:
    return Shop(factory, session_factory)


def today() -> date:
    return utcnow().date()


@pytest.fixture
def priced_shop(shop, factory, session_factory) -> Shop:
    """The shop, with enough trusts' purchases of the gloves for a real verdict."""
    trusts = [factory.org(OrgType.TRUST) for _ in range(4)]
    gloves = shop.offers["gloves_a"]
    with session_factory.begin() as session:
        for n, trust in enumerate(trusts):
            pricing.record_marketplace_purchase(
                session,
                trust_id=trust.id,
                order_reference=f"PO-HIST-{n}",
                line=1,
                order_date=today(),
                product_id=gloves.product_id,
                supplier_id=gloves.supplier_id,
                quantity=10,
                total_price_pence=10 * (400 + 50 * n),
            )
    return shop


def top_up_quote(client, shop, budget) -> dict:
    """The holder's quote for the wheelchair, from the budget with a card top-up."""
    response = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": shop.offers["chair"].id, "quantity": 1}],
            "payment_method": "budget",
            "budget_id": budget.id,
            "card_top_up": True,
        },
        headers=shop.holder.headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def place_top_up(client, shop, quote: dict, key: str):
    """Place a top-up quote, the card part paid with localstripe's test Visa."""
    return client.post(
        "/api/v1/orders",
        json={
            "quote_id": quote["id"],
            "delivery_address": HOME,
            "card_payment_method": "pm_card_visa",
        },
        headers=shop.holder.headers | {"Idempotency-Key": key},
    )
