"""Schema fuzzing: schemathesis drives every operation of the app's own OpenAPI document, as
anonymous and as each role, against a database holding real objects of every kind, with all
of schemathesis' default checks (no 5xx, responses match the documented status, content type,
headers and schema, invalid input refused, valid input accepted, auth enforced...).

Bounded for CI: ``MARKETPLACE_FUZZ_EXAMPLES`` examples per operation and caller (default 3),
generated deterministically (``schemathesis.toml``), so a failure reproduces on the next run.
The longer run (README, Development) raises the examples and adds schemathesis' coverage phase
(``MARKETPLACE_FUZZ_COVERAGE=1``: boundary values of every parameter).

Generated ids rarely name a real object, so about half of the valid (positive) cases have their
path ids swapped for ids of the seeded objects: those reach the views' real work, not only 404.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation

from marketplace import create_app
from marketplace.config import Settings
from tests.foundation.world import World, seeded_world

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("MARKETPLACE_FUZZ_EXAMPLES", "3"))
COVERAGE = os.environ.get("MARKETPLACE_FUZZ_COVERAGE", "") == "1"
# Anonymous and each role (other organisations are the authorisation matrix's business).
CALLERS = ("anonymous", "buyer", "supplier", "budget_holder", "budget_manager", "operator")
HEADER, PATH = ParameterLocation.HEADER, ParameterLocation.PATH


def _load_schema() -> schemathesis.BaseSchema:
    """The OpenAPI document of an application like the one under test (the document does not
    depend on the database, and the tests' own application only exists once fixtures run)."""
    folder = Path(tempfile.mkdtemp(prefix="marketplace-openapi-"))
    settings = Settings(
        database_url=f"sqlite:///{folder / 'unused.sqlite3'}",
        instance_dir=folder,
        testing=True,
        log_level="WARNING",
    )
    app = create_app(settings)
    config = schemathesis.Config.from_path(ROOT / "schemathesis.toml")
    config.projects.default.generation.update(max_examples=EXAMPLES)
    config.projects.default.phases.coverage.enabled = COVERAGE
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)
    app.extensions["marketplace"].engine.dispose()
    return loaded


schema = _load_schema()


@pytest.fixture(scope="module")
def world(shared_app) -> Iterator[World]:
    with seeded_world(shared_app) as world:
        yield world


@pytest.fixture(scope="module")
def real_ids(world: World) -> dict[str, list[str]]:
    """Ids of seeded objects, by the name of the path parameter that takes them."""
    supplier_orders = [world.trust_order.supplier_orders[0].id]
    supplier_orders += [so.id for so in world.supplier_orders.values()]
    return {
        "approval_id": [world.approval.id],
        "budget_id": [world.budget.id],
        "hold_id": [world.hold.id],
        "offer_id": [world.offer.id, world.shop.offers["gloves_b"].id],
        "order_id": [world.trust_order.id, world.budget_order.id],
        "org_id": [world.shop.buyer.org.id, world.shop.supplier.org.id],
        "product_id": [world.product_id],
        "purchase_id": [world.purchase.id],
        "quote_id": [world.quote.id],
        "supplier_order_id": supplier_orders,
        "ods": [world.trust_ods],
        "ocid": [world.ocid],
    }


@pytest.mark.parametrize("caller", CALLERS)
@schema.given(data=st.data())
@schema.parametrize()
def test_api_conforms_to_its_schema(case, caller, data, world, real_ids, shared_app):
    if case.path_parameters and case.meta and not case.meta.is_negative_at(PATH):
        for name in list(case.path_parameters):
            if name in real_ids and data.draw(st.booleans(), label=f"real {name}"):
                choice = st.sampled_from(real_ids[name])
                case.path_parameters[name] = data.draw(choice, label=name)
    # The caller's real token, unless the case is about the headers themselves (a removed or
    # mangled Authorization header must reach the API as generated, and be refused).
    headers = None if case.meta and case.meta.is_negative_at(HEADER) else world.headers(caller)
    case.call_and_validate(app=shared_app, headers=headers)
