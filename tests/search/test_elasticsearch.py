"""The Elasticsearch backend, tested at its HTTP boundary (see ``fake_es``): the index it
creates, the bulk bodies, the alias swap, the query DSL, parsing real-shaped responses, and the
transactional outbox (including Elasticsearch being down)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from marketplace import create_app
from marketplace.catalog.search import EXTENSION
from marketplace.catalog.search.base import SearchQuery, encode_cursor, tie_break
from marketplace.catalog.search.elasticsearch import ElasticsearchBackend, search_text
from marketplace.catalog.search.models import SearchDocument, SearchOutbox
from marketplace.catalog.search.outbox import product_changed
from marketplace.catalog.search.text import MAX_QUERY_WORDS, load_synonyms, query_words, words
from tests.search.conftest import Catalogue
from tests.search.fake_es import FakeServer, fake_client
from tests.support import Factory, assert_problem

ALIAS = "marketplace-products"


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def es_app(migrated, server):
    settings = migrated.with_overrides(
        search_backend="elasticsearch", elasticsearch_url="http://es.test:9200"
    )
    app = create_app(settings)
    from tests.conftest import _empty_all_tables

    _empty_all_tables(app.extensions["marketplace"].engine)
    app.extensions[EXTENSION] = ElasticsearchBackend(fake_client(server), ALIAS)
    yield app
    app.extensions["marketplace"].engine.dispose()


@pytest.fixture
def backend(es_app) -> ElasticsearchBackend:
    return es_app.extensions[EXTENSION]


@pytest.fixture
def es_sf(es_app):
    return es_app.extensions["marketplace"].session_factory


@pytest.fixture
def es_cat(es_sf) -> Catalogue:
    catalogue = Catalogue(es_sf, Factory(es_sf))
    catalogue.load_categories()
    return catalogue


@pytest.fixture
def stock(es_cat):
    acme = es_cat.supplier("Acme Medical", sme=True)
    bexley = es_cat.supplier("Bexley Supplies")
    ids = {
        "ae": es_cat.product(
            "Anti-embolism stockings thigh length",
            "MKT-HOSIERY-AE",
            [(acme, 1200), (bexley, 1100, 0)],
            units_per_pack=2,
        ),
        "gloves": es_cat.product(
            "Nitrile examination gloves",
            "18424300",
            [(acme, 650)],
            units_per_pack=100,
            mpn="NG-100",
        ),
        "chair": es_cat.product("Self-propelled wheelchair", "33193120", [(bexley, 24000)]),
    }
    return {"acme": acme, "bexley": bexley, **ids}


def pending(sf) -> int:
    with sf() as session:
        return session.scalar(
            select(func.count())
            .select_from(SearchOutbox)
            .where(SearchOutbox.processed_at.is_(None))
        )


# --- the index ----------------------------------------------------------------------------


def test_index_settings_and_mapping(backend, es_sf, stock, server):
    backend.reindex(es_sf)
    (create,) = server.of("PUT", rf"/{ALIAS}_v1")
    body = create.json()
    analysis = body["settings"]["analysis"]
    rules = analysis["filter"]["marketplace_synonyms"]
    assert rules["type"] == "synonym_graph"
    assert len(rules["synonyms"]) == len(load_synonyms().lines)
    assert "dvt stockings, anti-embolism stockings" in rules["synonyms"][0]
    # The rules lose their stop words, as the query text does (and as SQL reads them).
    disposal = next(r for r in rules["synonyms"] if "disposal unit" in r)
    assert disposal.endswith("disposal unit hypodermic")
    assert not any(" for " in r for r in rules["synonyms"])
    assert analysis["filter"]["english_stemmer"] == {"type": "stemmer", "language": "english"}
    search = analysis["analyzer"]["product_search"]
    assert search["tokenizer"] == "standard"
    assert search["filter"] == [
        "lowercase",
        "asciifolding",
        "english_possessive",
        "english_stemmer",
        "marketplace_synonyms",
    ]
    assert "marketplace_synonyms" not in analysis["analyzer"]["product_text"]["filter"]
    mapping = body["mappings"]
    assert mapping["dynamic"] == "strict"
    props = mapping["properties"]
    assert props["name"] == {
        "type": "text",
        "analyzer": "product_text",
        "search_analyzer": "product_search",
    }
    for keyword in ("gtin", "mpn_key", "category_codes", "supplier_ids", "kind", "product_id"):
        assert props[keyword]["type"] == "keyword"
    assert props["min_unit_price_nanopence"]["type"] == "long"
    assert props["tie_break"]["type"] == "long"
    assert props["created_at"]["type"] == "date"


def test_reindex_bulk_loads_a_new_index_and_swaps_the_alias(backend, es_sf, stock, server):
    # An existing generation behind the alias.
    server.indices[f"{ALIAS}_v3"] = {"docs": {}, "body": None}
    server.aliases[ALIAS] = {f"{ALIAS}_v3"}
    with es_sf() as session:
        high_water = session.scalar(select(func.max(SearchOutbox.id)))
    name, indexed = backend.reindex(es_sf)
    assert name == f"{ALIAS}_v4"
    assert indexed == 3
    (bulk,) = server.of("PUT", rf"/{name}/_bulk")  # streaming_bulk, index in the path
    lines = bulk.ndjson()
    actions, sources = lines[0::2], lines[1::2]
    assert [list(a) for a in actions] == [["index"]] * 3
    assert {a["index"]["_id"] for a in actions} == {stock["ae"], stock["gloves"], stock["chair"]}
    assert all(a["index"]["version"] == high_water for a in actions)
    assert all(a["index"]["version_type"] == "external" for a in actions)
    ae = next(s for s in sources if s["product_id"] == stock["ae"])
    assert ae["category_codes"] == ["MKT-HOSIERY", "MKT-HOSIERY-AE"]
    assert ae["supplier_ids"] == sorted([stock["acme"].id, stock["bexley"].id])
    assert ae["best_pack_price_pence"] == 1100
    assert ae["offer_count"] == 2
    assert ae["min_unit_price_nanopence"] == 550 * 10**9
    assert ae["tie_break"] == tie_break(stock["ae"])
    # Refresh, then one atomic alias swap, then the old index goes.
    order = [(r.method, r.path) for r in server.requests]
    swap = order.index(("POST", "/_aliases"))
    assert (
        order.index(("POST", f"/{name}/_refresh")) < swap < order.index(("DELETE", f"/{ALIAS}_v3"))
    )
    (aliases,) = server.of("POST", "/_aliases")
    assert aliases.json() == {
        "actions": [
            {"remove": {"index": f"{ALIAS}_v3", "alias": ALIAS}},
            {"add": {"index": name, "alias": ALIAS, "is_write_index": True}},
        ]
    }
    assert server.aliases[ALIAS] == {name}
    assert f"{ALIAS}_v3" not in server.indices


def test_reindex_replays_changes_made_after_the_snapshot(backend, es_cat, es_sf, stock, server):
    backend.reindex(es_sf)
    # A change after the snapshot, delivered to the old index... then a new generation.
    es_cat.update_offer(stock["chair"], stock["bexley"], pack_price_pence=20000)
    backend.sync(es_sf)
    server.requests.clear()
    with es_sf() as session:
        latest = session.scalar(select(func.max(SearchOutbox.id)))
    name, _ = backend.reindex(es_sf)
    doc = server.indices[name]["docs"][stock["chair"]]
    assert doc["source"]["best_pack_price_pence"] == 20000
    assert doc["version"] == latest


# --- search -------------------------------------------------------------------------------


def test_query_dsl_with_filters_sort_and_search_after(backend, es_sf, stock):
    query = SearchQuery(
        q="dvt stokings",
        category="MKT-HOSIERY",
        supplier=stock["acme"].id,
        kind="commodity",
        in_stock=True,
        phb_eligible=False,
        min_unit_price=Decimal("2.5"),
        sort="unit_price",
        limit=10,
    )
    query = replace(query, cursor=encode_cursor(query, [550 * 10**9, 7, stock["ae"]]))
    with es_sf() as session:
        body = backend.build_request(session, query)
    assert body["size"] == 11
    assert body["track_total_hits"] is True
    assert body["sort"] == [
        {"min_unit_price_nanopence": "asc"},
        {"tie_break": "asc"},
        {"product_id": "asc"},
    ]
    assert body["search_after"] == [550 * 10**9, 7, stock["ae"]]
    text = body["query"]["bool"]["must"][0]["bool"]
    assert text["minimum_should_match"] == 1
    cross, fuzzy = text["should"][:2]
    assert cross["multi_match"]["type"] == "cross_fields"
    assert cross["multi_match"]["query"] == "dvt stokings"
    assert fuzzy["multi_match"]["fuzziness"] == "AUTO"
    assert fuzzy["multi_match"]["operator"] == "and"
    # Filters no facet ignores are in the query; facet filters in the post_filter.
    assert {"term": {"in_stock": True}} in body["query"]["bool"]["filter"]
    facet_filters = body["post_filter"]["bool"]["filter"]
    assert {"term": {"category_codes": "MKT-HOSIERY"}} in facet_filters
    assert {"term": {"supplier_ids": stock["acme"].id}} in facet_filters
    assert {"term": {"kind": "commodity"}} in facet_filters
    # min_unit_price=2.5 takes in every price shown as 2.5000p: from 2.49995p, a tie to even
    assert {"range": {"min_unit_price_nanopence": {"gte": 2_499_950_000}}} in facet_filters
    # Each facet aggregation applies the other facet filters, not its own.
    supplier_agg = body["aggs"]["supplier"]
    assert {"term": {"supplier_ids": stock["acme"].id}} not in supplier_agg["filter"]["bool"][
        "filter"
    ]
    assert {"term": {"kind": "commodity"}} in supplier_agg["filter"]["bool"]["filter"]
    assert supplier_agg["aggs"]["values"]["terms"]["field"] == "supplier_ids"
    ranges = body["aggs"]["unit_price"]["aggs"]["values"]["range"]["ranges"]
    # bucket edges on the price as shown: 9.99995p shows as 10.0000p (half to even)
    assert ranges[0] == {"key": "under-10p", "to": 10 * 10**9 - 50_000}
    assert ranges[-1] == {"key": "100-plus", "from": 10000 * 10**9 - 50_000}


def test_unit_price_bounds_take_in_the_prices_shown_at_the_bound(backend, es_sf):
    query = SearchQuery(min_unit_price=Decimal("0.0001"), max_unit_price=Decimal("333.3333"))
    with es_sf() as session:
        body = backend.build_request(session, query)
    price = {"range": {"min_unit_price_nanopence": {"gte": 50_001, "lte": 333_333_349_999}}}
    # an odd last place: its ties round away from it, to the even neighbour
    assert price in body["post_filter"]["bool"]["filter"]


@pytest.mark.parametrize(
    ("sort", "head", "tail"),
    [
        ("unit_price", [{"min_unit_price_nanopence": "asc"}], "asc"),
        ("-unit_price", [{"min_unit_price_nanopence": "desc"}], "desc"),
        ("newest", [{"created_at": "desc"}], "desc"),
        ("relevance", [{"_score": "desc"}], "asc"),
    ],
)
def test_ties_follow_the_sql_backends_order(backend, es_sf, sort, head, tail):
    with es_sf() as session:
        body = backend.build_request(session, SearchQuery(q="gloves", sort=sort))
    assert body["sort"] == [*head, {"tie_break": tail}, {"product_id": tail}]


def test_exact_gtin_and_part_number_are_boosted_terms(backend, es_sf):
    with es_sf() as session:
        body = backend.build_request(session, SearchQuery(q="5012345678900"))
    should = body["query"]["bool"]["must"][0]["bool"]["should"]
    assert {"term": {"gtin": {"value": "05012345678900", "boost": 1000.0}}} in should
    assert {"term": {"mpn_key": {"value": "5012345678900", "boost": 1000.0}}} in should


def _text_clause(backend, es_sf, q, **params):
    with es_sf() as session:
        body = backend.build_request(session, SearchQuery(q=q, **params))
    return body, body["query"]["bool"]["must"][0]


def test_stop_words_are_dropped_from_the_query_text(backend, es_sf):
    # The analyzer has no stop filter and the match is AND: "for" would have to be indexed.
    _body, clause = _text_clause(backend, es_sf, "Gloves for the Surgery")
    cross, fuzzy = clause["bool"]["should"][:2]
    assert cross["multi_match"]["query"] == fuzzy["multi_match"]["query"] == "gloves surgery"
    assert all(c["multi_match"]["operator"] == "and" for c in (cross, fuzzy))
    # Nothing sent holds them (no part-number term either: these words have no digit).
    assert "for" not in str(clause).lower()
    assert "the" not in str(clause).lower()


@pytest.mark.parametrize("q", ["the", "for the", "  With, the!  ", "--"])
def test_a_query_of_stop_words_searches_as_if_it_had_no_text(backend, es_sf, q):
    body, clause = _text_clause(backend, es_sf, q)
    plain, _ = _text_clause(backend, es_sf, None)
    assert clause == {"match_all": {}}
    # The same request as no text at all: no score in the sort (ties by the stable hash).
    assert body == plain
    assert body["sort"] == [{"tie_break": "asc"}, {"product_id": "asc"}]


def test_the_query_text_has_the_sql_backends_words():
    queries = [
        "gloves for surgery",
        "3.5mm needles for the O'Neill frame",
        "Bébé wipes, with aloe",
        "a an the",
        "  With, the!  ",
        " ".join(f"w{n}" for n in range(MAX_QUERY_WORDS + 5)),
        "for " * 30 + "gloves",
    ]
    for q in queries:
        assert words(search_text(q)) == query_words(q), q
    # What joins two kept words stays, so the standard tokenizer sees the indexed token.
    assert search_text("3.5mm needles for the O'Neill frame") == "3.5mm needles o'neill frame"
    assert search_text("for " * 30 + "gloves") == "gloves"


def test_only_a_key_with_digits_is_a_part_number(backend, es_sf):
    _body, clause = _text_clause(backend, es_sf, "gloves")
    assert not any("mpn_key" in c.get("term", {}) for c in clause["bool"]["should"])
    _body, clause = _text_clause(backend, es_sf, "AB-1234")
    assert {"term": {"mpn_key": {"value": "AB1234", "boost": 1000.0}}} in clause["bool"]["should"]


def test_an_exact_part_number_still_comes_first(backend, es_sf):
    _body, clause = _text_clause(backend, es_sf, "NG-100")
    should = clause["bool"]["should"]
    assert should[0]["multi_match"]["query"] == "ng-100"
    assert {"term": {"mpn_key": {"value": "NG100", "boost": 1000.0}}} in should


def test_non_ascii_digits_do_not_raise(backend, es_sf):
    # "²" is a digit to str.isdigit() but not to int(): never a GTIN, still searchable text.
    body, clause = _text_clause(backend, es_sf, "1234567²")
    should = clause["bool"]["should"]
    assert should[0]["multi_match"]["query"] == "12345672"
    assert not any("gtin" in c.get("term", {}) for c in should)
    assert body["sort"][0] == {"_score": "desc"}


def _hit(product_id, *, name="Anti-embolism stockings thigh length", sort=None, **overrides):
    source = {
        "product_id": product_id,
        "name": name,
        "keywords": "",
        "category_text": "Compression and anti-embolism hosiery Anti-embolism (DVT) stockings",
        "description": "",
        "gtin": None,
        "manufacturer_part_number": None,
        "mpn_key": None,
        "category_id": overrides.pop("category_id", None),
        "category_codes": ["MKT-HOSIERY", "MKT-HOSIERY-AE"],
        "category_path": "/MKT-HOSIERY/MKT-HOSIERY-AE/",
        "kind": "commodity",
        "phb_eligible": False,
        "phb_excluded": False,
        "unit_of_measure": "EA",
        "units_per_pack": 2,
        "offer_count": 2,
        "in_stock": True,
        "supplier_ids": [],
        "best_offer_id": "off_1",
        "best_supplier_id": overrides.pop("best_supplier_id", "org_x"),
        "best_pack_price_pence": 1100,
        "best_offer_in_stock": False,
        "max_pack_price_pence": 1200,
        "min_unit_price_nanopence": 550 * 10**9,
        "max_unit_price_nanopence": 600 * 10**9,
        "created_at": "2026-11-01T10:00:00+00:00",
        "tie_break": tie_break(product_id),
        **overrides,
    }
    return {
        "_index": f"{ALIAS}_v1",
        "_id": product_id,
        "_score": 7.25,
        "_source": source,
        "sort": sort or [7.25, tie_break(product_id), product_id],
    }


def _response(hits, aggregations=None, total=None):
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": total if total is not None else len(hits), "relation": "eq"},
            "max_score": 7.25,
            "hits": hits,
        },
        "aggregations": aggregations or {},
    }


def test_search_through_the_api_parses_hits_and_aggregations(es_app, es_sf, stock, server):
    with es_sf() as session:
        ae = session.scalar(select(SearchDocument).where(SearchDocument.product_id == stock["ae"]))
        category_id = ae.category_id
    hits = [
        _hit(stock["ae"], category_id=category_id, best_supplier_id=stock["bexley"].id),
        _hit(
            stock["gloves"],
            name="Nitrile examination gloves",
            category_id=category_id,
            best_supplier_id=stock["acme"].id,
            units_per_pack=3,
            best_pack_price_pence=1000,
        ),
    ]
    server.search_response = _response(
        hits,
        total=7,
        aggregations={
            "category": {
                "doc_count": 7,
                "values": {
                    "doc_count_error_upper_bound": 0,
                    "sum_other_doc_count": 0,
                    "buckets": [
                        {"key": "MKT-HOSIERY", "doc_count": 7},
                        {"key": "MKT-HOSIERY-AE", "doc_count": 5},
                    ],
                },
            },
            "supplier": {
                "doc_count": 7,
                "values": {
                    "buckets": [
                        {"key": stock["acme"].id, "doc_count": 4},
                        {"key": stock["bexley"].id, "doc_count": 4},
                    ]
                },
            },
            "kind": {"doc_count": 7, "values": {"buckets": [{"key": "commodity", "doc_count": 7}]}},
            "unit_price": {
                "doc_count": 7,
                "values": {
                    "buckets": [
                        {"key": "under-10p", "to": 1e10, "doc_count": 0},
                        {"key": "10p-1", "from": 1e10, "to": 1e11, "doc_count": 0},
                        {"key": "1-10", "from": 1e11, "to": 1e12, "doc_count": 6},
                        {"key": "10-100", "from": 1e12, "to": 1e13, "doc_count": 1},
                        {"key": "100-plus", "from": 1e13, "doc_count": 0},
                    ]
                },
            },
        },
    )
    response = es_app.test_client().get(
        "/api/v1/search", query_string={"q": "dvt stockings", "limit": 1}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    (search_request,) = server.of("POST", rf"/{ALIAS}/_search")
    assert search_request.json()["size"] == 2
    assert body["total"] == 7
    (item,) = body["items"]
    assert item["id"] == stock["ae"]
    assert item["category"] == {"code": "MKT-HOSIERY-AE", "name": "Anti-embolism (DVT) stockings"}
    assert item["best_offer"]["supplier"] == {
        "id": stock["bexley"].id,
        "name": "Bexley Supplies",
        "is_sme": False,
    }
    assert item["best_offer"]["unit_price_pence"] == 550.0
    assert item["unit_price_range"] == {"min_pence": 550.0, "max_pence": 600.0}
    assert body["next_cursor"]
    assert body["facets"]["category"][0] == {
        "code": "MKT-HOSIERY",
        "name": "Compression and anti-embolism hosiery",
        "parent_code": None,
        "count": 7,
    }
    suppliers = body["facets"]["supplier"]
    assert [s["count"] for s in suppliers] == [4, 4]
    assert [s["id"] for s in suppliers] == sorted(
        [stock["acme"].id, stock["bexley"].id], key=tie_break
    )
    assert {f["key"]: f["count"] for f in body["facets"]["unit_price"]}["1-10"] == 6
    # The cursor is the last hit's sort values, handed back as search_after.
    response = es_app.test_client().get(
        "/api/v1/search",
        query_string={"q": "dvt stockings", "limit": 1, "cursor": body["next_cursor"]},
    )
    assert response.status_code == 200
    assert server.of("POST", rf"/{ALIAS}/_search")[-1].json()["search_after"] == hits[0]["sort"]


def test_elasticsearch_backend_rejects_bad_parameters_like_sql(es_app, stock, server):
    client = es_app.test_client()
    assert_problem(client.get("/api/v1/search", query_string={"category": "NOPE"}), 422)
    assert_problem(client.get("/api/v1/search", query_string={"cursor": "junk"}), 422)
    assert not server.of("POST", rf"/{ALIAS}/_search")


# --- the outbox ---------------------------------------------------------------------------


def test_product_changed_writes_the_outbox_only_for_elasticsearch(
    es_sf, session_factory, stock, cat
):
    assert pending(es_sf) == 3  # one per catalogue change, in the change's own transaction
    cat.factory.counter = 100  # the other app's factory: fresh Companies House numbers
    cat.product("Walking frame", "33141720", [(cat.supplier(), 4500)])  # the SQL-backend app
    assert pending(session_factory) == 3


def test_outbox_rolls_back_with_the_change(es_sf, stock):
    with es_sf() as session:
        session.begin()
        product_changed(session, stock["ae"])
        session.rollback()
    assert pending(es_sf) == 3


def test_sync_when_elasticsearch_is_down_keeps_the_rows_then_delivers(
    backend, es_sf, stock, server
):
    server.down = True
    report = backend.sync(es_sf)
    assert report.delivered == 0
    assert report.failed == 3
    assert "Connection" in report.error
    assert pending(es_sf) == 3
    with es_sf() as session:
        rows = session.scalars(select(SearchOutbox)).all()
        assert {r.attempts for r in rows} == {1}
        assert all(r.last_error for r in rows)
    server.down = False
    report = backend.sync(es_sf)
    assert report.delivered == 3
    assert report.error is None
    assert pending(es_sf) == 0
    (bulk,) = server.of("POST|PUT", "/_bulk")[-1:]
    actions = bulk.ndjson()[0::2]
    with es_sf() as session:
        versions = dict(session.execute(select(SearchOutbox.product_id, SearchOutbox.id)).all())
    assert {a["index"]["_id"]: a["index"]["version"] for a in actions} == versions
    assert all(a["index"]["_index"] == ALIAS for a in actions)


def test_sync_deletes_products_that_stopped_being_searchable(backend, es_cat, es_sf, stock, server):
    backend.sync(es_sf)
    from marketplace.catalog.models import OfferStatus

    es_cat.update_offer(stock["chair"], stock["bexley"], status=OfferStatus.PAUSED)
    backend.sync(es_sf)
    last = server.of("POST|PUT", "/_bulk")[-1].ndjson()
    assert list(last[0]) == ["delete"]
    assert last[0]["delete"]["_id"] == stock["chair"]


def test_a_stale_delivery_never_overwrites_a_newer_one(backend, es_cat, es_sf, stock, server):
    backend.sync(es_sf)
    es_cat.update_offer(stock["chair"], stock["bexley"], pack_price_pence=20000)
    backend.sync(es_sf)
    # A slow worker now delivers an older version: Elasticsearch answers 409, counted delivered.
    delivered, failed = backend.deliver(es_sf, {stock["chair"]: 1})
    assert delivered == {stock["chair"]}
    assert not failed
    doc = next(iter(server.indices.values()))["docs"][stock["chair"]]
    assert doc["source"]["best_pack_price_pence"] == 20000


def test_a_failed_item_stays_pending(backend, es_sf, stock, server):
    server.bulk_status = lambda op, meta: 429 if meta["_id"] == stock["gloves"] else 201
    report = backend.sync(es_sf)
    assert report.delivered == 2
    assert report.failed == 1
    assert pending(es_sf) == 1
    server.bulk_status = lambda op, meta: 201
    assert backend.sync(es_sf).delivered == 1
    assert pending(es_sf) == 0


def test_writing_request_delivers_the_outbox_after_it_commits(es_app, es_sf, stock, server):
    @es_app.post("/test-only/touch/<product_id>")
    def touch(product_id):
        from marketplace.web import get_session

        product_changed(get_session(), product_id)
        return {"ok": True}

    backend = es_app.extensions[EXTENSION]
    backend.sync(es_sf)
    server.requests.clear()
    client = es_app.test_client()
    # buffered: the test client closes the response as a WSGI server does after sending it.
    assert client.post(f"/test-only/touch/{stock['ae']}", buffered=True).status_code == 200
    assert pending(es_sf) == 0
    assert len(server.of("POST|PUT", "/_bulk")) == 1
    # Elasticsearch down: the request still succeeds, the row waits for `search sync`.
    server.down = True
    assert client.post(f"/test-only/touch/{stock['ae']}", buffered=True).status_code == 200
    assert pending(es_sf) == 1
    # A read request does not touch Elasticsearch's outbox at all.
    server.requests.clear()
    client.get("/healthz")
    assert server.requests == []


def test_readiness_probe_checks_the_alias(es_app, backend, es_sf, stock, server):
    state = es_app.extensions["marketplace"]
    assert "elasticsearch" in state.readiness_probes
    state.readiness_probes["elasticsearch"] = backend.ping
    client = es_app.test_client()
    assert_problem(client.get("/readyz"), 503, code="elasticsearch-unreachable")
    backend.reindex(es_sf)
    body = client.get("/readyz").get_json()
    assert body["checks"]["elasticsearch"] == "ok"


def test_sql_backend_registers_no_hook_and_no_probe(app):
    assert "elasticsearch" not in app.extensions["marketplace"].readiness_probes
    names = [f.__name__ for f in app.after_request_funcs[None]]
    assert "after_request" not in names


def test_sync_prunes_rows_delivered_more_than_a_day_ago(backend, es_sf, stock):
    from datetime import timedelta

    from sqlalchemy import update

    from marketplace.db import utcnow

    backend.sync(es_sf)
    with es_sf.begin() as session:
        oldest = session.scalar(select(func.min(SearchOutbox.id)))
        session.execute(
            update(SearchOutbox)
            .where(SearchOutbox.id == oldest)
            .values(processed_at=utcnow() - timedelta(hours=25))
        )
    backend.sync(es_sf)
    with es_sf() as session:
        assert session.scalar(select(func.count()).select_from(SearchOutbox)) == 2
