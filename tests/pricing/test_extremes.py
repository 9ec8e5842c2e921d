"""Extreme but accepted figures: every unit price the importer can produce is served, on every
read path (JSON, CSV, the chart, the price check), and a price check's own argument is bounded."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from marketplace.money import format_unit_price, round_pence, round_unit_price, unit_price_json
from marketplace.pricing.chart import pounds
from tests.support import assert_problem

from .conftest import line, make_gtin

GLOVES = make_gtin(1)


@pytest.fixture
def extreme(world, import_as):
    """The cheapest and dearest unit prices the importer accepts, and one in between:
    1p for 10**15 units (10**-15p each) and 10**12p for one unit. The spread is ~10**27."""
    import_as(
        world.trust(0),
        [
            line(
                "PO-0",
                1,
                gtin=GLOVES,
                quantity=10**9,
                units_per_pack=10**6,
                total_price_pence=1,
            )
        ],
    )
    import_as(
        world.trust(1),
        [line("PO-1", 1, gtin=GLOVES, quantity=1, units_per_pack=1, total_price_pence=10**12)],
    )
    import_as(
        world.trust(2),
        [line("PO-2", 1, gtin=GLOVES, quantity=1, units_per_pack=1, total_price_pence=5)],
    )
    return world


def test_rounding_has_the_precision_any_figure_needs():
    spread = Decimal(10**12) / (Decimal(1) / Decimal(10**15)) - 1
    assert round_unit_price(spread) == Decimal(10**27 - 1)
    assert str(round_unit_price(Decimal("123456789012345678901234567890.12345"))) == (
        "123456789012345678901234567890.1234"
    )
    assert unit_price_json(spread) == float(10**27)
    assert round_pence(Decimal("1234567890123456789012345678901.5")) == (
        1234567890123456789012345678902
    )
    assert format_unit_price(Decimal(10**30)) == "£" + str(10**28)
    assert format_unit_price(Decimal("2.56")) == "£0.0256"


def test_extreme_unit_prices_are_served_on_every_read_path(client, extreme):
    product = extreme.gloves.id
    body = client.get(f"/api/v1/products/{product}/price-variance")
    assert body.status_code == 200, body.get_data(as_text=True)
    dist = body.get_json()["distribution"]
    assert dist["min_pence"] == 0.0
    assert dist["max_pence"] == 10**12
    assert dist["spread"] == float(10**27 - 1)

    for path in (
        "/api/v1/price-variance",
        "/api/v1/price-variance?sort=spread",
        "/api/v1/trusts/RT1/savings",
        "/api/v1/trusts/RT0/savings",
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.get_data(as_text=True))

    ranking = client.get("/api/v1/price-variance").get_json()
    assert ranking["items"][0]["product_id"] == product
    assert ranking["items"][0]["spread"] == float(10**27 - 1)

    r = client.get(f"/api/v1/products/{product}/price-variance?format=csv")
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert sorted(row["unit_price_pence"] for row in rows) == [
        "0.0000",
        "1000000000000.0000",
        "5.0000",
    ]
    r = client.get("/api/v1/price-variance?format=csv")
    assert r.status_code == 200
    (item,) = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    # every digit, not a float's approximation of 10**27
    assert item["spread"] == f"{10**27 - 1}.0000"

    r = client.get(f"/api/v1/products/{product}/price-variance.svg")
    assert r.status_code == 200
    assert r.mimetype == "image/svg+xml"
    r = client.get(f"/api/v1/price-check?product={product}&unit_price=3")
    assert r.status_code == 200
    assert r.get_json()["verdict"] is not None


@pytest.mark.parametrize(
    "price", ["1e30", "1e400", "123456789012345678901234567", "1000000000000.0001", "1e999999"]
)
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_price_check_refuses_a_price_above_the_bound(client, db, extreme, price, fmt):
    r = client.get(
        f"/api/v1/price-check?product={extreme.gloves.id}&unit_price={price}&format={fmt}"
    )
    body = assert_problem(r, 422)
    assert "unit_price" in str(body["errors"]), body


@pytest.mark.parametrize(
    ("price", "shown"),
    [
        ("1000000000000", 10**12),
        ("999999999999.99999999999999999999999999", 10**12),
        ("0.000000000000000000000000000000000000001", 0.0),
        ("1e-999999", 0.0),
    ],
)
def test_price_check_answers_every_accepted_price(client, extreme, price, shown):
    product = extreme.gloves.id
    r = client.get(f"/api/v1/price-check?product={product}&unit_price={price}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["unit_price_pence"] == shown
    r = client.get(f"/api/v1/price-check?product={product}&unit_price={price}&format=csv")
    assert r.status_code == 200, r.get_data(as_text=True)


# --- the chart's pounds at tiny unit prices ---------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def _chart(client, product_id):
    r = client.get(f"/api/v1/products/{product_id}/price-variance.svg")
    assert r.status_code == 200, r.get_data(as_text=True)
    root = ET.fromstring(r.get_data())  # noqa: S314 (our own output)
    axis = root.find(f"{SVG}g[@class='axis']")
    ticks = [t.text for t in axis.iter(f"{SVG}text") if t.text.startswith("£")]
    return ticks, root.find(f"{SVG}desc").text


@pytest.mark.parametrize(
    ("units", "totals"),
    [
        (10**6, [2000, 2500, 3000]),  # 0.002p - 0.003p a swab
        (10**5, [2000, 2500, 3000]),
        (10**4, [2000, 2100, 2200]),
        (1000, [2000, 2010, 2020]),
    ],
)
def test_axis_ticks_are_distinct_and_not_zero_at_tiny_prices(
    client, world, import_as, units, totals
):
    for i, total in enumerate(totals):
        import_as(
            world.trust(i),
            [
                line(
                    f"PO-{i}",
                    1,
                    gtin=GLOVES,
                    quantity=units,
                    units_per_pack=1,
                    total_price_pence=total,
                )
            ],
        )
    ticks, desc = _chart(client, world.gloves.id)
    assert len(ticks) >= 2, ticks
    assert len(set(ticks)) == len(ticks), ticks
    values = [Decimal(t[1:]) for t in ticks]
    assert values == sorted(values)
    assert values[-1] > 0
    assert "£0.0000 " not in desc, desc
    assert "£0.0000;" not in desc, desc


def test_description_shows_tiny_prices_as_not_zero(client, world, import_as):
    for i, total in enumerate([2000, 2500, 3000]):
        import_as(
            world.trust(i),
            [
                line(
                    f"PO-{i}",
                    1,
                    gtin=GLOVES,
                    quantity=1000,
                    units_per_pack=1000,
                    total_price_pence=total,
                )
            ],
        )
    _, desc = _chart(client, world.gloves.id)
    assert "Median £0.000025 per unit" in desc, desc
    assert "lowest £0.000020 (RT0), highest £0.000030 (RT2)" in desc, desc


def test_pounds_places():
    assert pounds(Decimal("2.56")) == "£0.0256"
    assert pounds(Decimal("125")) == "£1.25"
    assert pounds(Decimal(0)) == "£0.0000"
    assert pounds(Decimal("0.002")) == "£0.000020"
    assert pounds(Decimal(1) / Decimal(10**15)) == "£0.000000000000000010"
    assert pounds(Decimal("0.0015"), step=Decimal("0.0005")) == "£0.000015"
    assert pounds(Decimal(10**12)) == "£10000000000.00"


def test_extreme_chart_description(client, extreme):
    _, desc = _chart(client, extreme.gloves.id)
    assert "lowest £0.000000000000000010 (RT0), highest £10000000000.00 (RT1)" in desc, desc
    assert f"the highest paid {(10**27 - 1) * 100}% more" in desc, desc
