"""Catalogue fixtures: the bundled category tree, and helpers to make products and offers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from marketplace.accounts.models import Role
from marketplace.catalog import service as catalog
from tests.support import SYSTEM

# Real GTINs from the NHS Drug Tariff Part IX (valid GS1 check digits).
GTIN_BANDAGE = "5000223456030"
GTIN_BANDAGE_2 = "5010058057531"
GTIN_OTHER = "06955901200193"


@pytest.fixture
def categories(session_factory):
    with session_factory.begin() as session:
        catalog.load_categories(session, catalog.bundled_category_rows())


class CatalogMaker:
    def __init__(self, session_factory):
        self.session_factory = session_factory

    def product(self, actor=SYSTEM, **kwargs):
        kwargs.setdefault("name", "Cohesive bandage 10cm x 2.5m")
        kwargs.setdefault("category_code", "33141113")
        kwargs.setdefault("units_per_pack", 1)
        principal = actor.principal if hasattr(actor, "principal") else actor
        with self.session_factory.begin() as session:
            return catalog.create_product(session, principal, **kwargs)

    def offer(self, supplier, product, **kwargs):
        """``supplier`` is a supplier Actor; the offer is created as that supplier."""
        kwargs.setdefault("pack_price_pence", 1000)
        kwargs.setdefault("stock", 10)
        with self.session_factory.begin() as session:
            return catalog.create_offer(
                session, supplier.principal, product_id=product.id, **kwargs
            )


@pytest.fixture
def make(session_factory, categories) -> CatalogMaker:
    return CatalogMaker(session_factory)


@pytest.fixture
def supplier(factory):
    return factory.actor(Role.SUPPLIER)


@pytest.fixture
def existing(make):
    """A product already in the catalogue (GTIN_OTHER), listed by nobody yet."""
    return make.product(gtin=GTIN_OTHER, name="Existing dressing", category_code="33141110")


@pytest.fixture
def cli(app, monkeypatch):
    """The ``marketplace`` command bound to the test database."""
    from marketplace import cli as cli_module

    monkeypatch.setattr(cli_module, "_state", app.extensions["marketplace"])
    return cli_module.main


def run(cli, *args):
    """``marketplace catalog import-offers ARGS`` through ``cli``."""
    return CliRunner().invoke(cli, ["catalog", "import-offers", *args], catch_exceptions=False)
