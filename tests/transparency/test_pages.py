"""The price-transparency pages with the Flask test client: status, content, security headers,
labels and the other accessibility basics (``html_checks``)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from marketplace.catalog import search as search_package
from tests.transparency.conftest import GTIN_BANDAGE
from tests.transparency.html_checks import check_page


@pytest.fixture
def shop(world):
    gloves = world.product(
        name="Nitrile examination gloves, medium",
        category_code="18424300",
        units_per_pack=100,
        manufacturer="Glovemaker Ltd",
    )
    bandage = world.product(name="Cohesive bandage 10cm", gtin=GTIN_BANDAGE)
    world.product(name="Lonely gloves", category_code="18424300")
    world.offer(world.large, gloves, 399)
    world.offer(world.sme, gloves, 256)  # the cheapest per unit
    world.offer(world.sme, bandage, 120)
    for i, (trust, total) in enumerate(zip(world.trusts, (2560, 3100, 4200), strict=True)):
        world.purchase(trust, gloves, quantity=10, total_pence=total, ref=f"g{i}")
    world.purchase(world.trusts[0], bandage, quantity=1, total_pence=120, ref="b0")
    return {"gloves": gloves, "bandage": bandage}


def assert_secure_html(response) -> None:
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_home_page(shop, client):
    response = client.get("/")
    assert response.status_code == 200
    assert_secure_html(response)
    html = response.get_data(as_text=True)
    check_page(html)
    assert '<label for="q">' in html
    assert 'role="search"' in html
    assert "Where prices differ most" in html  # the pricing ranking, when nothing is searched
    assert shop["gloves"].name in html
    assert "Drug Tariff data © Crown copyright" in html
    assert "Open Government Licence" in html
    stylesheet = client.get("/assets/site.css")
    assert stylesheet.status_code == 200
    assert stylesheet.mimetype == "text/css"
    assert "@media" in stylesheet.get_data(as_text=True)  # readable on a phone


def test_search_shows_the_best_offer(shop, client):
    response = client.get("/?q=gloves")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    check_page(html)
    assert "Results for “gloves”" in html
    assert f'href="/products/{shop["gloves"].id}"' in html
    # As in the API, only products with an active offer are searchable: "Lonely gloves" has none.
    assert "Lonely gloves" not in html
    best = html.split(shop["gloves"].name, 1)[1].split("</li>", 1)[0]
    assert "£0.0256 per unit" in best
    assert "Small Medical Supplies Ltd" in best
    assert "2 offers" in best
    assert shop["bandage"].name not in html


def test_search_by_gtin_words_and_nothing(shop, client):
    assert shop["bandage"].name in client.get(f"/?q={GTIN_BANDAGE}").get_data(as_text=True)
    html = client.get("/?q=EXAMINATION medium").get_data(as_text=True)
    assert shop["gloves"].name in html
    html = client.get("/?q=zzzzqqq").get_data(as_text=True)
    assert "No products match" in html
    html = client.get("/?q=<script>alert(1)</script>").get_data(as_text=True)
    assert "<script>" not in html  # escaped
    check_page(html)


def test_search_pages_through_results(world, client):
    for i in range(25):
        world.offer(world.large, world.product(name=f"Gauze swab {i:02d}"), 100 + i)
    first = client.get("/?q=gauze").get_data(as_text=True)
    assert first.count('class="result"') == 20
    more = re.search(r'href="(/\?q=gauze&amp;cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(more).get_data(as_text=True)
    assert second.count('class="result"') == 5
    shown = re.findall(r"Gauze swab \d\d", first) + re.findall(r"Gauze swab \d\d", second)
    assert sorted(set(shown)) == [f"Gauze swab {i:02d}" for i in range(25)]  # every one, once


def test_search_uses_the_catalogue_search_backend_when_there_is_one(shop, client, monkeypatch):
    calls = []

    class Backend:
        def search(self, session, query):
            calls.append(query)
            offer = SimpleNamespace(
                supplier=SimpleNamespace(name="Backend Supplier"),
                pack_price_pence=500,
                unit_price_pence=5,
            )
            item = SimpleNamespace(
                id=shop["bandage"].id,
                name="From the search backend",
                gtin=None,
                category=SimpleNamespace(name="Bandages"),
                unit_of_measure="EA",
                units_per_pack=1,
                offer_count=1,
                best_offer=offer,
            )
            return SimpleNamespace(items=[item], next_cursor=None)

    monkeypatch.setattr(search_package, "SearchQuery", lambda **kw: kw, raising=False)
    monkeypatch.setattr(search_package, "get_backend", lambda app: Backend(), raising=False)
    html = client.get("/?q=anything").get_data(as_text=True)
    assert "From the search backend" in html
    assert "Backend Supplier" in html
    assert calls == [{"q": "anything", "cursor": None, "limit": 20}]


def test_product_page(shop, client):
    response = client.get(f"/products/{shop['gloves'].id}")
    assert response.status_code == 200
    assert_secure_html(response)
    html = response.get_data(as_text=True)
    page = check_page(html)
    assert page.tables == 2
    # Offers side by side, cheapest per unit first.
    offers = html.split('class="offers"', 1)[1].split("</table>", 1)[0]
    assert offers.index("Small Medical Supplies Ltd") < offers.index(
        "Big Healthcare Distribution plc"
    )
    assert "£0.0256" in offers
    assert "£0.0399" in offers
    assert '<span class="tag">SME</span>' in offers
    # The cross-trust chart, inline, with its title and description for screen readers.
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in html
    assert 'role="img"' in html
    assert "<title" in html
    assert "<desc" in html
    assert f"/api/v1/products/{shop['gloves'].id}/price-variance.svg" in html
    # What each trust paid, cheapest first.
    trusts = html.split('class="trusts"', 1)[1].split("</table>", 1)[0]
    names = [t.name for t in shop_trusts(client, shop)]
    positions = [trusts.index(name) for name in names]
    assert positions == sorted(positions)
    assert '<th scope="row">' in trusts


def shop_trusts(client, shop):
    body = client.get(f"/api/v1/products/{shop['gloves'].id}/price-variance").get_json()
    return [SimpleNamespace(name=t["trust_name"]) for t in body["trusts"]]


def test_a_product_too_few_trusts_bought_shows_no_trust(shop, client):
    html = client.get(f"/products/{shop['bandage'].id}").get_data(as_text=True)
    check_page(html)
    assert "Not enough trusts have bought this product" in html
    assert "Leeds Teaching Hospitals" not in html  # one trust's price is never published


def test_unknown_product_is_an_html_404(client, world):
    response = client.get("/products/prd_missing")
    assert response.status_code == 404
    assert_secure_html(response)
    check_page(response.get_data(as_text=True))
    assert client.get("/products/" + "x" * 100).status_code == 404


def test_open_data_page(world, client):
    response = client.get("/open-data")
    assert response.status_code == 200
    assert_secure_html(response)
    html = response.get_data(as_text=True)
    check_page(html)
    assert 'id="publication-policy"' in html
    for name in (
        "catalogue",
        "offer-price-history",
        "price-variance",
        "awarded-order-lines",
        "phb-spending",
    ):
        assert f"/api/v1/open-data/downloads/{name}.csv" in html
    assert "at least 5 people" in html


def test_the_inline_chart_escapes_a_hostile_product_name(world, client):
    # The page marks the chart's SVG as safe markup; it may do so only because the chart escapes
    # every text it contains (the product name above all, which a supplier chooses).
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)> gloves'
    gloves = world.product(name=hostile, category_code="18424300", units_per_pack=100)
    world.offer(world.sme, gloves, 256)
    for i, (trust, total) in enumerate(zip(world.trusts, (2560, 3100, 4200), strict=True)):
        world.purchase(trust, gloves, quantity=10, total_pence=total, ref=f"h{i}")
    response = client.get(f"/products/{gloves.id}")
    assert response.status_code == 200
    assert_secure_html(response)
    html = response.get_data(as_text=True)
    svg = html.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "&lt;script&gt;" in svg  # the name is in the chart, escaped
    assert "<script" not in html
    assert "<img" not in html
    check_page(html)
