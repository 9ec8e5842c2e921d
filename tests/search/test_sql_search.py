"""GET /api/v1/search with the SQL backend. The same tests run on SQLite (FTS5) and, with
MARKETPLACE_TEST_DATABASE_URL, on PostgreSQL (tsvector + pg_trgm)."""

from __future__ import annotations

import base64
import json
import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from marketplace.catalog import service as catalog
from marketplace.catalog.gtin import check_digit, normalise_gtin
from marketplace.catalog.models import OfferStatus
from marketplace.catalog.search.base import tie_break
from marketplace.catalog.search.models import (
    SearchChange,
    SearchDocument,
    SearchDocumentSupplier,
)
from tests.search.conftest import gtin13, search
from tests.support import assert_problem


@pytest.fixture
def shop(cat):
    """A small, realistic catalogue (names in the Drug Tariff's and suppliers' own words)."""
    s = {
        "acme": cat.supplier("Acme Medical", sme=True),
        "bexley": cat.supplier("Bexley Supplies"),
        "carey": cat.supplier("Carey Care", sme=True),
    }
    acme, bexley, carey = s["acme"], s["bexley"], s["carey"]
    s["ae"] = cat.product(
        "Anti-embolism stockings thigh length, medium",
        "MKT-HOSIERY-AE",
        [(acme, 1200, 5), (bexley, 1100, 0)],
        units_per_pack=2,
        gtin=normalise_gtin(gtin13(1)),
    )
    s["hosiery"] = cat.product(
        "Compression hosiery class 2 below knee stocking",
        "MKT-HOSIERY-COMP",
        [(carey, 2400)],
        units_per_pack=2,
    )
    s["nitrile"] = cat.product(
        "Nitrile examination gloves powder free, medium",
        "18424300",
        [(acme, 650), (carey, 700)],
        units_per_pack=100,
        mpn="NG-100-M",
    )
    s["surgical"] = cat.product(
        "Sterile latex surgical gloves size 7", "33141420", [(bexley, 5200, 3)], units_per_pack=50
    )
    s["wheelchair"] = cat.product(
        "Self-propelled wheelchair, folding", "33193120", [(bexley, 24000), (carey, 25000)]
    )
    s["powered"] = cat.product("Powered wheelchair indoor/outdoor", "33193121", [(acme, 320000, 1)])
    s["speaker"] = cat.product("Amazon Echo Dot smart speaker", "MKT-VOICE", [(bexley, 4999)])
    s["foam"] = cat.product(
        "Silicone foam dressing with adhesive border 10cm x 10cm",
        "33141110",
        [(carey, 450, 0)],
        units_per_pack=10,
        description="Absorbent polyurethane foam dressing for exuding wounds.",
    )
    s["paused"] = cat.product(
        "Crutches elbow adjustable", "33141710", [(acme, 2200, 5, OfferStatus.PAUSED)]
    )
    return s


def ids(body) -> list[str]:
    return [item["id"] for item in body["items"]]


# --- relevance ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("anti-embolism stockings", "ae"),
        ("DVT stockings", "ae"),  # synonym group, multi-word
        ("TED stockings", "ae"),
        ("wheel chair", "wheelchair"),  # "wheel chair" <-> "wheelchair"
        ("Alexa", "speaker"),  # alexa <-> smart speaker <-> voice assistant
        ("voice assistant", "speaker"),
        ("examination gloves", "nitrile"),
    ],
)
def test_synonyms_find_the_product(client, shop, q, expected):
    assert shop[expected] in ids(search(client, q=q))


def test_explicit_abbreviation_rule(client, shop):
    # "stkn => stocking": the Drug Tariff-style abbreviation finds stockings (porter: stock*).
    found = ids(search(client, q="stkn"))
    assert shop["hosiery"] in found
    assert shop["ae"] in found


def test_gloves_synonym_covers_examination_gloves_and_all_gloves(client, shop):
    found = ids(search(client, q="gloves"))
    assert set(found) == {shop["nitrile"], shop["surgical"]}


@pytest.mark.parametrize(
    ("q", "expected"),
    [("wheelchiar", "wheelchair"), ("stokings", "ae"), ("dresing", "foam"), ("nitirle", "nitrile")],
)
def test_typos_still_find(client, shop, q, expected):
    assert shop[expected] in ids(search(client, q=q))


def test_two_words_with_a_typo(client, shop):
    assert ids(search(client, q="foam dresing")) == [shop["foam"]]


@pytest.mark.parametrize(
    ("q", "expected"), [("stocking", "ae"), ("dressings", "foam"), ("glove", "nitrile")]
)
def test_plurals_and_stems(client, shop, q, expected):
    assert shop[expected] in ids(search(client, q=q))


def test_every_word_must_match(client, shop):
    assert search(client, q="wheelchair gloves")["total"] == 0
    assert search(client, q="zzzzqqq")["items"] == []


def test_description_and_category_names_are_searchable(client, shop):
    assert ids(search(client, q="exuding wounds")) == [shop["foam"]]
    assert shop["surgical"] in ids(search(client, q="surgical"))
    # Category name "Wheelchairs and mobility" reaches both wheelchairs.
    assert {shop["wheelchair"], shop["powered"]} <= set(ids(search(client, q="mobility")))


def test_name_matches_rank_above_description_matches(client, cat, shop):
    described = cat.product(
        "Wound care pack", "33141110", [(shop["acme"], 300)], description="Contains a foam pad."
    )
    found = ids(search(client, q="foam"))
    assert found.index(shop["foam"]) < found.index(described)


@pytest.mark.parametrize(
    "form",
    [
        lambda g: g[1:],  # GTIN-13
        lambda g: g,  # GTIN-14
        lambda g: f"{g[1:4]} {g[4:9]} {g[9:]}",  # with spaces
    ],
)
def test_exact_gtin_returns_that_product_first(client, cat, shop, form):
    # Another product mentions the digits in its text; the exact GTIN still comes first.
    gtin = normalise_gtin(gtin13(1))
    cat.product(f"Stocking bundle {gtin[1:]}", "MKT-HOSIERY-AE", [(shop["acme"], 100)])
    body = search(client, q=form(gtin))
    assert body["items"][0]["id"] == shop["ae"]
    assert body["items"][0]["gtin"] == gtin


def test_gtin_8_and_12_are_normalised(client, cat, shop):
    g8 = "9638507" + str(check_digit("9638507"))
    g12 = "03600029145" + str(check_digit("03600029145"))
    p8 = cat.product("Lancets 30G", "33141320", [(shop["acme"], 500)], gtin=normalise_gtin(g8))
    p12 = cat.product(
        "Pen needles 4mm", "33141320", [(shop["acme"], 900)], gtin=normalise_gtin(g12)
    )
    assert ids(search(client, q=g8))[0] == p8
    assert ids(search(client, q=g12))[0] == p12


def test_digits_other_than_0_to_9_are_text_not_a_gtin(client, shop):
    # a superscript two is a digit to str.isdigit(), not to GS1 (nor to int())
    response = client.get("/api/v1/search", query_string={"q": "1234567\u00b2"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["total"] == 0


def test_manufacturer_part_number_returns_that_product_first(client, shop):
    for q in ("NG-100-M", "ng100m", "NG 100 M"):
        assert ids(search(client, q=q))[0] == shop["nitrile"]


def test_ties_are_broken_by_a_hash_of_the_product_id_not_the_supplier(client, cat, shop):
    # Identical text, prices and suppliers named to sort first: order is the tie-break hash.
    made = [
        cat.product("Sharps bin 1 litre", "33141123", [(cat.supplier(f"{letter} Supplies"), 300)])
        for letter in ("AAA", "ZZZ", "MMM", "BBB")
    ]
    found = ids(search(client, q="sharps bin"))
    assert sorted(found) == sorted(made)
    assert found == sorted(made, key=tie_break)


# --- filters ------------------------------------------------------------------------------


def test_category_includes_descendants(client, shop):
    found = set(ids(search(client, category="33193000")))  # Wheelchairs and mobility
    assert found == {shop["wheelchair"], shop["powered"]}
    assert set(ids(search(client, category="33193121"))) == {shop["powered"]}


def test_supplier_filter(client, shop):
    found = set(ids(search(client, supplier=shop["carey"].id)))
    assert found == {shop["hosiery"], shop["nitrile"], shop["wheelchair"], shop["foam"]}


def test_kind_filter(client, shop):
    assert set(ids(search(client, kind="device"))) == {shop["wheelchair"], shop["powered"]}
    assert ids(search(client, kind="digital_tool")) == [shop["speaker"]]


def test_phb_eligible_filter(client, shop):
    eligible = set(ids(search(client, phb_eligible="true")))
    assert eligible == {shop["wheelchair"], shop["powered"], shop["speaker"]}
    not_eligible = set(ids(search(client, phb_eligible="false", limit=100)))
    assert not (eligible & not_eligible)
    assert shop["nitrile"] in not_eligible


def test_in_stock_filter(client, shop):
    found = set(ids(search(client, in_stock="true", limit=100)))
    assert shop["foam"] not in found  # its only offer has no stock
    assert shop["ae"] in found  # one of its two offers has stock
    assert ids(search(client, in_stock="false")) == [shop["foam"]]


def test_unit_price_filters_use_the_best_unit_price(client, shop):
    # nitrile: 650p / 100 = 6.5p per glove; foam: 450 / 10 = 45p; ae: 1100 / 2 = 550p.
    body = search(client, max_unit_price="6.5")
    assert ids(body) == [shop["nitrile"]]
    assert set(ids(search(client, min_unit_price="6.5001", max_unit_price="550"))) == {
        shop["foam"],
        shop["ae"],
        shop["surgical"],  # 5200 / 50 = 104p
    }
    assert shop["ae"] not in ids(search(client, min_unit_price="550.0001"))


@pytest.mark.parametrize(
    ("pack_price", "units", "shown", "included", "excluded"),
    [
        # 1000p for 3 is 333.3333...p: the figure shown is within max_unit_price=333.3333
        (
            1000,
            3,
            333.3333,
            [("max_unit_price", "333.3333"), ("min_unit_price", "333.3333")],
            [("max_unit_price", "333.3332"), ("min_unit_price", "333.3334")],
        ),
        # 255996p for 100,000 is 2.55996p, shown 2.56: within min_unit_price=2.56
        (
            255996,
            100_000,
            2.56,
            [("min_unit_price", "2.56"), ("max_unit_price", "2.56")],
            [("min_unit_price", "2.5601"), ("max_unit_price", "2.5599")],
        ),
        # 3p for 20,000 is 0.00015p exactly, shown 0.0002 (half to even)
        (
            3,
            20_000,
            0.0002,
            [("max_unit_price", "0.0002"), ("min_unit_price", "0.0002")],
            [("max_unit_price", "0.0001"), ("min_unit_price", "0.0003")],
        ),
        # 5p for 20,000 is 0.00025p exactly, shown 0.0002 (half to even)
        (
            5,
            20_000,
            0.0002,
            [("max_unit_price", "0.0002"), ("min_unit_price", "0.0002")],
            [("min_unit_price", "0.0003"), ("max_unit_price", "0.0001")],
        ),
    ],
)
def test_unit_price_filters_compare_with_the_price_as_shown(
    client, cat, shop, pack_price, units, shown, included, excluded
):
    product = cat.product(
        "Lancets 0.3mm", "33141320", [(shop["acme"], pack_price)], units_per_pack=units
    )
    item = search(client, q="lancets")["items"][0]
    assert item["best_offer"]["unit_price_pence"] == shown
    for name, bound in included:
        assert product in ids(search(client, q="lancets", **{name: bound})), (name, bound)
        assert product in ids(search(client, **{name: bound}, limit=100)), (name, bound)
    for name, bound in excluded:
        assert product not in ids(search(client, q="lancets", **{name: bound})), (name, bound)
        assert product not in ids(search(client, **{name: bound}, limit=100)), (name, bound)


def test_unit_price_buckets_count_the_price_as_shown(client, cat, shop):
    # 999,996p for 100,000 is 9.99996p, shown 10.0000p: in "10p-1", as min_unit_price=10 finds it
    product = cat.product(
        "Lancets 0.3mm", "33141320", [(shop["acme"], 999_996)], units_per_pack=100_000
    )
    body = search(client, q="lancets")
    assert body["items"][0]["best_offer"]["unit_price_pence"] == 10.0
    counts = {f["key"]: f["count"] for f in body["facets"]["unit_price"]}
    assert counts["10p-1"] == 1
    assert counts["under-10p"] == 0
    assert ids(search(client, q="lancets", min_unit_price="10")) == [product]
    assert ids(search(client, q="lancets", max_unit_price="9.9999")) == []


def test_filters_combine(client, shop):
    body = search(client, q="gloves", supplier=shop["acme"].id, in_stock="true")
    assert ids(body) == [shop["nitrile"]]


# --- the response ---------------------------------------------------------------------------


def test_item_shape_and_best_offer(client, shop):
    body = search(client, q="anti-embolism thigh")
    assert body["total"] == 1
    assert body["next_cursor"] is None
    item = body["items"][0]
    assert item["id"] == shop["ae"]
    assert item["category"] == {"code": "MKT-HOSIERY-AE", "name": "Anti-embolism (DVT) stockings"}
    assert item["kind"] == "commodity"
    assert item["offer_count"] == 2
    best = item["best_offer"]
    assert best["supplier"] == {"id": shop["bexley"].id, "name": "Bexley Supplies", "is_sme": False}
    assert best["pack_price_pence"] == 1100
    assert best["unit_price_pence"] == 550.0
    assert best["in_stock"] is False
    assert item["in_stock"] is True
    assert item["unit_price_range"] == {"min_pence": 550.0, "max_pence": 600.0}


def test_unit_prices_are_rounded_to_four_places(client, cat, shop):
    cat.product("Lancets 0.3mm", "33141320", [(shop["acme"], 1000)], units_per_pack=3)
    item = search(client, q="lancets")["items"][0]
    assert item["best_offer"]["unit_price_pence"] == 333.3333


def test_paused_offers_are_not_searchable(client, cat, shop):
    assert search(client, q="crutches")["total"] == 0
    cat.update_offer(shop["paused"], shop["acme"], status=OfferStatus.ACTIVE)
    assert ids(search(client, q="crutches")) == [shop["paused"]]
    # Pausing one of two offers leaves the product with the other as its best offer.
    cat.update_offer(shop["ae"], shop["bexley"], status=OfferStatus.PAUSED)
    item = search(client, q="anti-embolism thigh")["items"][0]
    assert item["offer_count"] == 1
    assert item["best_offer"]["supplier"]["id"] == shop["acme"].id
    assert shop["ae"] not in ids(search(client, supplier=shop["bexley"].id))


def test_price_changes_show_at_once(client, cat, shop):
    cat.update_offer(shop["wheelchair"], shop["carey"], pack_price_pence=20000)
    item = search(client, q="wheelchair", sort="unit_price")["items"][0]
    assert item["id"] == shop["wheelchair"]
    assert item["best_offer"]["supplier"]["id"] == shop["carey"].id
    assert item["best_offer"]["pack_price_pence"] == 20000
    assert item["unit_price_range"] == {"min_pence": 20000.0, "max_pence": 24000.0}
    assert ids(search(client, min_unit_price="20000", max_unit_price="20000")) == [
        shop["wheelchair"]
    ]


def test_product_text_changes_show_at_once(client, cat, shop):
    cat.update_product(shop["speaker"], name="Echo Show 8 smart display")
    assert search(client, q="dot")["total"] == 0
    assert ids(search(client, q="display")) == [shop["speaker"]]


def test_new_offer_updates_the_supplier_facet_and_filter(client, cat, shop):
    cat.add_offer(shop["speaker"], shop["carey"], 4500)
    assert shop["speaker"] in ids(search(client, supplier=shop["carey"].id))
    item = search(client, q="speaker")["items"][0]
    assert item["offer_count"] == 2
    assert item["best_offer"]["pack_price_pence"] == 4500


def test_one_document_per_searchable_product(db, shop):
    assert db.scalar(select(func.count()).select_from(SearchDocument)) == 8  # not the paused one
    suppliers = db.scalar(select(func.count()).select_from(SearchDocumentSupplier))
    assert suppliers == 11


# --- facets ---------------------------------------------------------------------------------


def facet(body, name, key="code"):
    return {f[key]: f["count"] for f in body["facets"][name]}


def test_facets_without_filters(client, shop):
    body = search(client)
    assert body["total"] == 8
    assert facet(body, "kind", "value") == {"commodity": 5, "device": 2, "digital_tool": 1}
    categories = facet(body, "category")
    assert categories["33193000"] == 2  # rolled up from its descendants
    assert categories["33193120"] == 2
    assert categories["33193121"] == 1
    assert categories["MKT-HOSIERY"] == 2
    suppliers = facet(body, "supplier", "id")
    assert suppliers == {shop["acme"].id: 3, shop["bexley"].id: 4, shop["carey"].id: 4}
    prices = facet(body, "unit_price", "key")
    assert prices == {"under-10p": 1, "10p-1": 1, "1-10": 2, "10-100": 2, "100-plus": 2}
    assert sum(prices.values()) == body["total"]


def test_each_facet_reflects_the_other_filters_but_not_its_own(client, shop):
    body = search(client, supplier=shop["carey"].id, kind="device")
    assert ids(body) == [shop["wheelchair"]]
    assert body["total"] == 1
    # supplier facet: kind=device applies, supplier does not -> every device supplier.
    assert facet(body, "supplier", "id") == {
        shop["acme"].id: 1,
        shop["bexley"].id: 1,
        shop["carey"].id: 1,
    }
    # kind facet: supplier applies, kind does not -> Carey's kinds.
    assert facet(body, "kind", "value") == {"commodity": 3, "device": 1}
    # category facet: both apply.
    assert facet(body, "category") == {"33193000": 1, "33193120": 1}
    assert facet(body, "unit_price", "key")["100-plus"] == 1


def test_facets_with_text_and_category_filter(client, shop):
    body = search(client, q="gloves", category="18424300")
    assert ids(body) == [shop["nitrile"]]
    # The category facet ignores the category filter: both glove categories.
    assert facet(body, "category") == {"33140000": 2, "18424300": 1, "33141420": 1}
    assert facet(body, "supplier", "id") == {shop["acme"].id: 1, shop["carey"].id: 1}
    assert facet(body, "unit_price", "key") == {
        "under-10p": 1,
        "10p-1": 0,
        "1-10": 0,
        "10-100": 0,
        "100-plus": 0,
    }


def test_price_facet_ignores_the_price_filter(client, shop):
    body = search(client, max_unit_price="50", phb_eligible="false")
    assert set(ids(body)) == {shop["nitrile"], shop["foam"]}
    prices = facet(body, "unit_price", "key")
    assert prices == {"under-10p": 1, "10p-1": 1, "1-10": 2, "10-100": 1, "100-plus": 0}


# --- sorts and cursors ----------------------------------------------------------------------


def best_unit(item) -> Decimal:
    return Decimal(str(item["best_offer"]["unit_price_pence"]))


def test_sort_by_unit_price_both_ways(client, shop):
    up = search(client, sort="unit_price")["items"]
    assert [best_unit(i) for i in up] == sorted(best_unit(i) for i in up)
    down = search(client, sort="-unit_price")["items"]
    assert [best_unit(i) for i in down] == sorted((best_unit(i) for i in down), reverse=True)


def test_sort_newest_first(client, shop):
    found = ids(search(client, sort="newest"))
    assert found[0] == shop["foam"]  # made last (the paused crutches are not searchable)
    assert found[-1] == shop["ae"]


@pytest.fixture
def many(cat):
    """70 glove products with a few equal prices, from 5 suppliers."""
    rng = random.Random(7)
    suppliers = [cat.supplier(f"Supplier {n}") for n in range(5)]
    made = []
    for n in range(70):
        offers = [(s, rng.choice([300, 450, 450, 600, 725, 900])) for s in rng.sample(suppliers, 2)]
        made.append(
            cat.product(
                f"Nitrile gloves {rng.choice(['small', 'medium', 'large'])} box {n}",
                "18424300",
                offers,
                units_per_pack=rng.choice([50, 100, 100, 200]),
            )
        )
    return {"ids": made, "suppliers": suppliers}


@pytest.mark.parametrize("sort", ["relevance", "unit_price", "-unit_price", "newest"])
@pytest.mark.parametrize("q", [None, "gloves", "nitrile medium"])
def test_cursor_walk_returns_every_match_once(client, many, sort, q):
    params = {"sort": sort, "limit": 7}
    if q:
        params["q"] = q
    first = search(client, **params)
    seen, pages, body = [], 0, first
    while True:
        seen.extend(ids(body))
        pages += 1
        assert body["total"] == first["total"]
        if not body["next_cursor"]:
            break
        body = search(client, **params, cursor=body["next_cursor"])
    assert len(seen) == len(set(seen)) == first["total"]
    everything = search(client, **{k: v for k, v in params.items() if k != "limit"}, limit=100)
    assert seen == ids(everything)  # same order as one big page
    assert pages == -(-first["total"] // 7)
    if q is None:
        assert set(seen) == set(many["ids"])


def test_cursor_walk_with_filters(client, many):
    supplier = many["suppliers"][0]
    params = {"supplier": supplier.id, "sort": "unit_price", "limit": 4, "max_unit_price": "6"}
    body = search(client, **params)
    seen = ids(body)
    while body["next_cursor"]:
        body = search(client, **params, cursor=body["next_cursor"])
        seen.extend(ids(body))
    assert len(seen) == len(set(seen)) == body["total"] > 0


# --- bad parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "price"}, "sort"),
        ({"kind": "gadget"}, "kind"),
        ({"phb_eligible": "maybe"}, "phb_eligible"),
        ({"in_stock": "2"}, "in_stock"),
        ({"min_unit_price": "cheap"}, "min_unit_price"),
        ({"min_unit_price": "-1"}, "min_unit_price"),
        ({"max_unit_price": "1.23456"}, "max_unit_price"),
        ({"max_unit_price": "1e3"}, "max_unit_price"),
        ({"min_unit_price": "10", "max_unit_price": "5"}, "max_unit_price"),
        ({"q": "x" * 201}, "q"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "x" * 600}, "cursor"),
        ({"category": "NOPE"}, "category"),
    ],
)
def test_bad_parameters_are_422_problems(client, shop, params, field):
    body = assert_problem(client.get("/api/v1/search", query_string=params), 422)
    assert field in body["errors"], body


def _forge(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_cursor_from_another_search_is_refused(client, many):
    cursor = search(client, q="gloves", limit=5)["next_cursor"]
    body = assert_problem(
        client.get("/api/v1/search", query_string={"q": "nitrile", "limit": 5, "cursor": cursor}),
        422,
    )
    assert "cursor" in body["errors"]
    # A cursor with the right fingerprint but values of the wrong type.
    good = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for bad in ([{"x": 1}, 1], ["high", 1], [1.0, "x"], [True, 1], [1.0, 1, "p"], [1.0]):
        forged = _forge({"f": good["f"], "k": bad})
        response = client.get(
            "/api/v1/search", query_string={"q": "gloves", "limit": 5, "cursor": forged}
        )
        assert_problem(response, 422)


def test_search_is_public_and_read_only(client, shop, db):
    before = db.scalar(select(func.count()).select_from(SearchDocument))
    response = client.get("/api/v1/search", query_string={"q": "gloves"})
    assert response.status_code == 200
    assert db.scalar(select(func.count()).select_from(SearchDocument)) == before


def test_openapi_documents_the_search(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/search"]["get"]
    assert "security" not in operation or operation["security"] == []
    params = {p["name"] for p in operation["parameters"]}
    assert {
        "q",
        "category",
        "supplier",
        "kind",
        "phb_eligible",
        "in_stock",
        "min_unit_price",
        "max_unit_price",
        "sort",
        "limit",
        "cursor",
    } <= params


def test_an_unknown_category_code_is_refused_with_its_name(client):
    response = client.get("/api/v1/search", query_string={"category": "NOPE"})
    body = assert_problem(response, 422)
    assert "NOPE" in body["errors"]["category"][0]


def category_row(code: str, parent: str | None = None, **values: str) -> dict[str, str]:
    return {
        "code": code,
        "name": f"Category {code}",
        "parent_code": parent or "",
        "kind": "commodity",
        "phb_eligible": "false",
        "phb_excluded": "false",
        "scheme": "marketplace",
        "scheme_code": "",
        **values,
    }


def test_updating_a_category_refreshes_the_search_documents_below_it(cat, client, monkeypatch):
    """A product's search document holds its categories' names, kind and PHB flags: reloading
    the tree with a renamed, re-flagged category changes what search finds at once."""
    monkeypatch.setattr(catalog, "PATHS_PER_STATEMENT", 1)  # each changed subtree on its own
    cat.load_categories()
    first = [
        category_row("TOP"),
        category_row("LEAF", "TOP", phb_eligible="true"),
        category_row("SIDE"),
    ]
    with cat.session_factory.begin() as session:
        catalog.load_categories(session, first)
    cat.load_categories()
    acme = cat.supplier("Acme")
    item = cat.product("Reading magnifier", "LEAF", [(acme, 1500)])
    side = cat.product("Bath seat", "SIDE", [(acme, 2500)])
    cat.product("Gauze swab", "33141110", [(acme, 100)])
    assert search(client, q="optical")["items"] == []
    assert [i["id"] for i in search(client, phb_eligible="true")["items"]] == [item]
    with cat.session_factory.begin() as session:
        catalog.load_categories(
            session,
            [
                category_row("TOP", name="Optical aids"),
                category_row("LEAF", "TOP", phb_eligible="true", phb_excluded="true"),
                category_row("SIDE", name="Bathing aids"),
            ],
        )
    assert [i["id"] for i in search(client, q="optical")["items"]] == [item]
    assert [i["id"] for i in search(client, q="bathing")["items"]] == [side]
    assert search(client, phb_eligible="true")["items"] == []
    with cat.session_factory.begin() as session:  # unchanged rows refresh nothing
        before = session.scalar(select(func.count()).select_from(SearchChange))
        catalog.load_categories(
            session,
            [
                category_row("TOP", name="Optical aids"),
                category_row("LEAF", "TOP", phb_eligible="true", phb_excluded="true"),
                category_row("SIDE", name="Bathing aids"),
            ],
        )
        assert session.scalar(select(func.count()).select_from(SearchChange)) == before


def test_a_category_filter_takes_a_code_literally_wildcard_characters_included(cat, client):
    """A category includes what is below it by path; "_" and "%" in codes are characters, not
    the wildcards LIKE would make of them."""
    cat.load_categories()
    rows = [
        ("A_1", None),
        ("A_1-CHILD", "A_1"),
        ("AX1", None),
        ("B%", None),
        ("BZ", None),
    ]
    with cat.session_factory.begin() as session:
        catalog.load_categories(session, [category_row(code, parent) for code, parent in rows])
    cat.load_categories()
    acme = cat.supplier("Acme")
    child = cat.product("Gauze swab", "A_1-CHILD", [(acme, 100)])
    cat.product("Gauze pad", "AX1", [(acme, 100)])
    cat.product("Gauze roll", "BZ", [(acme, 100)])
    assert [i["id"] for i in search(client, category="A_1")["items"]] == [child]
    assert search(client, category="B%")["items"] == []
    facets = {f["code"]: f["count"] for f in search(client, q="gauze")["facets"]["category"]}
    assert facets == {"A_1": 1, "A_1-CHILD": 1, "AX1": 1, "BZ": 1}
