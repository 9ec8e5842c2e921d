"""How long a search takes right after a text change (a product renamed), on a catalogue that
``benchmarks/search.py`` generated.

    python benchmarks/search_text_change.py --database-url sqlite:////tmp/search-bench.sqlite3

``search.py``'s classes time a query first searched since a text change with the cache off
(nothing written in between). This script makes the text change for real before every timed
request: a product's name gets a new word (and back), committed, so each search has to bring
the documents' columns and the kept postings forward to the new text, drop the kept matches,
and work the query out afresh. Broad words by relevance, the costliest case.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import percentile  # the search benchmark's own (linear interpolation)
from sqlalchemy import select

from marketplace import create_app
from marketplace.catalog.models import Product
from marketplace.catalog.search.outbox import product_changed
from marketplace.config import Settings, normalise_database_url
from marketplace.db import unit_of_work

WORDS = ["stockings", "hosiery", "dressing", "gloves", "compression hosiery", "foam dressing"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    settings = Settings(
        database_url=normalise_database_url(args.database_url),
        log_level="WARNING",
        testing=False,
        rate_limit_enabled=False,
    )
    app = create_app(settings)
    state = app.extensions["marketplace"]
    client = app.test_client()
    rng = random.Random(args.seed)
    with state.session_factory() as session:
        products = list(session.scalars(select(Product.id).order_by(Product.id).limit(5000)))
    for word in WORDS:  # every word's postings read once, as a running worker has them
        client.get("/api/v1/search", query_string={"q": word})
    timings = {"after a text change": [], "after a price change or none": []}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for i in range(args.requests):
        product_id = rng.choice(products)
        with unit_of_work(state.session_factory) as session:
            product = session.get(Product, product_id)
            product.name = (
                f"{product.name} Zebra" if i % 2 == 0 else product.name.removesuffix(" Zebra")
            )
            product_changed(session, product_id)
        word = rng.choice(WORDS)
        started = time.perf_counter()
        response = client.get("/api/v1/search", query_string={"q": word})
        timings["after a text change"].append(time.perf_counter() - started)
        assert response.status_code == 200, response.get_data(as_text=True)
        started = time.perf_counter()
        client.get("/api/v1/search", query_string={"q": rng.choice(WORDS)})
        timings["after a price change or none"].append(time.perf_counter() - started)
    result = {
        "database": state.engine.dialect.name,
        "requests": args.requests,
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **{
            name: {
                "p50_ms": round(percentile(values, 0.5) * 1000, 2),
                "p95_ms": round(percentile(values, 0.95) * 1000, 2),
            }
            for name, values in timings.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
