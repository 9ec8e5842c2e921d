"""The same search scenarios against a real Elasticsearch 9 server. Runs when ELASTICSEARCH_URL
is set (e.g. http://127.0.0.1:9200); skipped, with the reason, otherwise. It uses its own
throw-away alias and deletes its indices afterwards."""

from __future__ import annotations

import os
import uuid

import pytest

from marketplace import create_app
from marketplace.catalog.gtin import normalise_gtin
from marketplace.catalog.search import EXTENSION
from marketplace.catalog.search.elasticsearch import ElasticsearchBackend
from tests.search.conftest import Catalogue, gtin13
from tests.support import Factory

URL = os.environ.get("ELASTICSEARCH_URL")
pytestmark = pytest.mark.skipif(
    not URL,
    reason="needs a real Elasticsearch 9 server: set ELASTICSEARCH_URL (none can be installed "
    "on the project's machines; the adapter's HTTP boundary is covered by test_elasticsearch.py)",
)


@pytest.fixture
def live(migrated):
    from elasticsearch import Elasticsearch

    from tests.conftest import _empty_all_tables

    alias = f"test-marketplace-{uuid.uuid4().hex[:8]}"
    settings = migrated.with_overrides(
        search_backend="elasticsearch", elasticsearch_url=URL, elasticsearch_index=alias
    )
    app = create_app(settings)
    _empty_all_tables(app.extensions["marketplace"].engine)
    client = Elasticsearch(URL, request_timeout=30)
    backend = ElasticsearchBackend(client, alias)
    app.extensions[EXTENSION] = backend
    yield app, backend
    client.indices.delete(index=f"{alias}_v*", allow_no_indices=True)
    app.extensions["marketplace"].engine.dispose()


def test_live_search_scenarios(live):
    app, backend = live
    sf = app.extensions["marketplace"].session_factory
    cat = Catalogue(sf, Factory(sf))
    cat.load_categories()
    acme = cat.supplier("Acme Medical", sme=True)
    bexley = cat.supplier("Bexley Supplies")
    ae = cat.product(
        "Anti-embolism stockings thigh length",
        "MKT-HOSIERY-AE",
        [(acme, 1200), (bexley, 1100, 0)],
        units_per_pack=2,
        gtin=normalise_gtin(gtin13(1)),
    )
    gloves = cat.product(
        "Nitrile examination gloves", "18424300", [(acme, 650)], units_per_pack=100, mpn="NG-100-M"
    )
    chair = cat.product("Self-propelled wheelchair", "33193120", [(bexley, 24000)])
    speaker = cat.product("Amazon Echo Dot smart speaker", "MKT-VOICE", [(bexley, 4999)])
    for n in range(25):
        cat.product(f"Foam dressing {n} 10cm", "33141110", [(acme, 300 + n)], units_per_pack=10)
    backend.reindex(sf)
    backend.client.indices.refresh(index=backend.alias)
    http = app.test_client()

    def ids(**params):
        response = http.get("/api/v1/search", query_string=params)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [i["id"] for i in response.get_json()["items"]], response.get_json()

    assert ae in ids(q="DVT stockings")[0]
    assert chair in ids(q="wheelchiar")[0]
    assert chair in ids(q="wheel chair")[0]
    assert speaker in ids(q="alexa")[0]
    assert ids(q=gtin13(1))[0][0] == ae
    assert ids(q="NG-100-M")[0][0] == gloves
    # Stop words are dropped (the index keeps them; the query AND-matches what is left).
    assert gloves in ids(q="gloves for examination")[0]
    assert ids(q="for the")[1]["total"] == ids()[1]["total"] == 29
    assert ids(category="33193000")[0] == [chair]
    found, body = ids(supplier=bexley.id, kind="device")
    assert found == [chair]
    assert {f["id"]: f["count"] for f in body["facets"]["supplier"]} == {bexley.id: 1}
    seen, body = ids(q="foam dressing", sort="unit_price", limit=4)
    while body["next_cursor"]:
        more, body = ids(q="foam dressing", sort="unit_price", limit=4, cursor=body["next_cursor"])
        seen += more
    assert len(seen) == len(set(seen)) == 25
    # A price change travels through the outbox.
    cat.update_offer(chair, bexley, pack_price_pence=20000)
    assert backend.sync(sf).delivered >= 1
    backend.client.indices.refresh(index=backend.alias)
    _, body = ids(q="wheelchair")
    assert body["items"][0]["best_offer"]["pack_price_pence"] == 20000
