"""Search benchmark: a generated catalogue, then search latency through the HTTP layer.

    python benchmarks/search.py --database-url sqlite:////tmp/search-bench.sqlite3 --reset
    python benchmarks/search.py --database-url postgresql://postgres@127.0.0.1/test_search --reset

It migrates the database, bulk-inserts PRODUCTS products and OFFERS offers (Core executemany;
names from the NHS Drug Tariff Part IX marketplace subset in ``shared/data``, which must be there,
with sizes and pack variants, plus PHB devices and digital tools), builds the search documents
(``rebuild_all``, the same code as ``marketplace search reindex``), then times ``GET
/api/v1/search`` for four query classes, in-process through the WSGI app (Flask's test client:
routing, argument parsing, the search, JSON serialisation; no sockets), and the raw full-text
query alone on the same database: the search's own full-text query (the query's plan, with
its spelling corrections and synonyms, as FTS5 ``MATCH ... ORDER BY rank LIMIT 20`` on SQLite
or ``@@ tsquery ... ORDER BY ts_rank LIMIT 20`` on PostgreSQL), and the typed words alone
(``words``: the comparator of the rounds up to the sixth; the typo class: each query's words
before the typo was made). The category class has no full-text query: its raw query is the
first page's walk under the same filters, and ``answer_sql`` is plain SQL for its whole
answer (the page, the total and the four facets' counts, on a sample of its requests).

Each class is timed three times, because the SQL backend caches totals, facets and pages under
the search generation: **off**, with the cache turned off (the search as computed before the
cache existed, nothing written between requests); **cold**, the search generation bumped (a
committed write, untimed) before every request, so each one misses the cache and computes
everything right after a catalogue change; **warm**, the same requests again after one untimed
pass over them, so each one is answered from the cache (the hit rate of the timed pass is
reported).

``--reset`` empties the database first (the SQLite file is deleted; on PostgreSQL the ``public``
schema is dropped and re-created: use a database kept for this, e.g. ``test_search``). Without
``--reset`` an already loaded catalogue of the same size is reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import REGISTRY  # noqa: E402
from sqlalchemy import func, insert, literal_column, select, text  # noqa: E402

from marketplace import create_app, migrate  # noqa: E402
from marketplace.accounts.models import Organisation, OrgType  # noqa: E402
from marketplace.catalog import service as catalog  # noqa: E402
from marketplace.catalog.gtin import check_digit  # noqa: E402
from marketplace.catalog.models import Category, Offer, OfferStatus, Product  # noqa: E402
from marketplace.catalog.search.base import SearchQuery, price_bucket_bounds  # noqa: E402
from marketplace.catalog.search.cache import SearchCache  # noqa: E402
from marketplace.catalog.search.documents import rebuild_all  # noqa: E402
from marketplace.catalog.search.models import SearchDocument  # noqa: E402
from marketplace.catalog.search.outbox import product_changed  # noqa: E402
from marketplace.config import Settings, normalise_database_url  # noqa: E402
from marketplace.db import new_id, unit_of_work  # noqa: E402
from tests.search.fulltext import fts5_query, tsquery  # noqa: E402

_TARIFF_FILE = (
    "shared/data/nhs-drug-tariff-part-ix/drug_tariff_part_ix_2026-07_marketplace_subset.csv"
)
# The shared data sits beside the checkout (or beside the folder holding several checkouts);
# DRUG_TARIFF_CSV names the file when it is elsewhere.
DRUG_TARIFF = (
    Path(os.environ["DRUG_TARIFF_CSV"])
    if os.environ.get("DRUG_TARIFF_CSV")
    else next(
        (d / _TARIFF_FILE for d in ROOT.parents if (d / _TARIFF_FILE).exists()),
        ROOT.parent / _TARIFF_FILE,
    )
)
TARIFF_CATEGORY = {
    "compression_hosiery": "MKT-HOSIERY-COMP",
    "compression_hosiery_accessory": "MKT-HOSIERY",
    "lymphoedema_compression_garment": "MKT-LYMPH",
    "compression_bandage_or_system": "33141113",
    "gloves": "18424300",
    "catheter_or_catheter_accessory": "33141200",
    "sharps_disposal": "33141123",
    "suture": "33140000",
    "syringe_or_needle": "33141310",
    "lancet": "33141320",
    "wound_dressing": "33141110",
    "bandage_tape_or_stockinette": "33141113",
}
EXTRA = [  # (category, name stem, typical pack price in pence, units per pack)
    ("MKT-HOSIERY-AE", "Anti-embolism stockings thigh length", 1800, 2),
    ("MKT-HOSIERY-AE", "Anti-embolism stockings knee length", 1500, 2),
    ("18424300", "Nitrile examination gloves powder free", 650, 100),
    ("18424300", "Vinyl examination gloves", 420, 100),
    ("33141420", "Sterile latex surgical gloves", 5200, 50),
    ("33193120", "Self-propelled wheelchair folding", 24000, 1),
    ("33193120", "Transit wheelchair lightweight", 18000, 1),
    ("33193121", "Powered wheelchair indoor outdoor", 320000, 1),
    ("33141720", "Walking frame with wheels", 4500, 1),
    ("33141710", "Elbow crutches adjustable", 2200, 2),
    ("33196200", "Long handled reacher grabber", 900, 1),
    ("33123100", "Blood pressure monitor upper arm automatic", 3500, 1),
    ("33195100", "Pulse oximeter fingertip", 2500, 1),
    ("MKT-VOICE", "Smart speaker with voice assistant", 5000, 1),
    ("MKT-TELECARE", "Personal alarm pendant with falls detection", 12000, 1),
    ("48180000", "Diabetes self-management app annual licence", 6000, 1),
]
SIZES = ["small", "medium", "large", "extra large", "petite", "regular", "long", "short"]
COLOURS = ["beige", "black", "white", "blue", "sand", "navy"]
ONE_WORD = [
    "gloves",
    "dressing",
    "catheter",
    "stockings",
    "wheelchair",
    "bandage",
    "syringe",
    "lancets",
    "foam",
    "silicone",
    "hosiery",
    "needles",
    "alginate",
    "crutches",
    "alarm",
]
TWO_WORDS = [
    ("foam", "dressing"),
    ("nitrile", "gloves"),
    ("compression", "hosiery"),
    ("foley", "catheter"),
    ("silicone", "dressing"),
    ("insulin", "syringe"),
    ("pen", "needles"),
    ("adhesive", "border"),
    ("lymphoedema", "garment"),
    ("walking", "frame"),
    ("blood", "pressure"),
    ("stockinette", "tubular"),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def typo(word: str, rng: random.Random) -> str:
    """One edit: swap two neighbours or drop a letter (never the first)."""
    i = rng.randrange(1, len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]


def gtin13(n: int) -> str:
    body = f"50{n:010d}"
    return "0" + body + str(check_digit(body))


def reset(settings: Settings) -> None:
    if settings.is_sqlite:
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        from marketplace.db import make_engine

        engine = make_engine(settings)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def templates() -> list[tuple[str, str, int, int]]:
    """Name stems with their category, pack price and pack size: the Drug Tariff's real packs
    (a catalogue generated from a handful of stems would make every search look alike, and its
    figures meaningless), plus devices and digital tools."""
    if not DRUG_TARIFF.exists():
        sys.exit(f"The Drug Tariff data is not at {DRUG_TARIFF}: set DRUG_TARIFF_CSV to the file.")
    found = []
    with DRUG_TARIFF.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row["amp_name"] or row["vmp_name"]
            code = TARIFF_CATEGORY.get(row["category"])
            if name and code and row["price_in_p"]:
                quantity = max(1, int(float(row["quantity"] or 1)))
                found.append((code, name, int(float(row["price_in_p"])), quantity))
    found.extend(EXTRA * max(1, len(found) // (len(EXTRA) * 6)))
    return found


def generate(state, products: int, offers: int, suppliers: int, seed: int) -> None:
    rng = random.Random(seed)
    sf = state.session_factory
    with unit_of_work(sf) as session:
        catalog.load_categories(session, catalog.bundled_category_rows())
    with unit_of_work(sf) as session:
        categories = {c.code: c.id for c in session.scalars(select(Category))}
        now = datetime.now(UTC)
        supplier_rows = [
            {
                "id": new_id("org"),
                "type": OrgType.SUPPLIER,
                "name": f"Supplier {n:04d} Healthcare Ltd",
                "companies_house_number": f"{20_000_000 + n:08d}",
                "is_sme": rng.random() < 0.6,
                "created_at": now,
                "updated_at": now,
            }
            for n in range(suppliers)
        ]
        session.execute(insert(Organisation), supplier_rows)
    supplier_ids = [r["id"] for r in supplier_rows]
    pool = templates()
    log(f"generating {products:,} products and {offers:,} offers from {len(pool):,} templates…")
    started = time.perf_counter()
    per_product = offers / products
    batch = 5000
    made_offers = 0
    for start in range(0, products, batch):
        product_rows, offer_rows = [], []
        for n in range(start, min(start + batch, products)):
            code, stem, price, units = rng.choice(pool)
            variant = f"{rng.choice(SIZES)}, {rng.choice(COLOURS)}, ref {n % 997}"
            pid = new_id("prd")
            created = now - timedelta(minutes=products - n)
            product_rows.append(
                {
                    "id": pid,
                    "gtin": gtin13(n) if rng.random() < 0.7 else None,
                    "name": f"{stem} {variant}"[:300],
                    "description": f"{stem}. Supplied in packs of {units}.",
                    "manufacturer": f"Maker {n % 400}",
                    "brand": None,
                    "manufacturer_part_number": f"MP-{n:07d}",
                    "category_id": categories[code],
                    "unit_of_measure": "EA",
                    "units_per_pack": units,
                    "attributes": {},
                    "assurance": {},
                    "benchmark_excluded": False,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            # 1 to 2*mean-1 offers per product, evenly: OFFERS in all, on average.
            want = rng.randint(1, max(1, round(2 * per_product) - 1))
            for supplier_id in rng.sample(supplier_ids, want):
                offer_rows.append(
                    {
                        "id": new_id("off"),
                        "product_id": pid,
                        "supplier_id": supplier_id,
                        "supplier_sku": None,
                        "pack_price_pence": max(1, int(price * rng.uniform(0.7, 1.4))),
                        "vat_rate_percent": 20,
                        "stock": 0 if rng.random() < 0.2 else rng.randrange(1, 500),
                        "lead_time_days": rng.randrange(0, 10),
                        "min_order_qty": 1,
                        "price_breaks": [],
                        "status": OfferStatus.PAUSED if rng.random() < 0.05 else OfferStatus.ACTIVE,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
            made_offers += want
        with unit_of_work(sf) as session:
            session.execute(insert(Product), product_rows)
            session.execute(insert(Offer), offer_rows)
        log(f"  {min(start + batch, products):,} products, {made_offers:,} offers")
    log(f"catalogue inserted in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done % 20000 < n:
            log(f"  search documents: {done:,}/{products:,}")

    with unit_of_work(sf) as session:
        searchable = rebuild_all(session, progress)
    log(
        f"search documents built in {time.perf_counter() - started:.1f} s ({searchable:,} searchable)"
    )
    if state.settings.is_sqlite:
        with state.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("INSERT INTO search_fts(search_fts) VALUES ('optimize')")
    else:
        with state.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn, calls: list, warmup: int = 5, before=None) -> tuple[list[float], list[float]]:
    """Wall-clock and this process's CPU time per call, in ms. In-process, SQLite's own work is
    in the CPU time too, so it shows the cost even when other processes share the cores.
    ``before()``, if given, runs before each call, untimed."""
    for args in calls[:warmup]:
        if before:
            before()
        fn(args)
    wall, cpu = [], []
    for args in calls:
        if before:
            before()
        started, started_cpu = time.perf_counter(), time.process_time()
        fn(args)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return wall, cpu


def cache_lookups(outcome: str) -> float:
    return sum(
        REGISTRY.get_sample_value(
            "marketplace_search_cache_lookups_total", {"part": part, "outcome": outcome}
        )
        or 0.0
        for part in ("facets", "page")
    )


def figures(prefix: str, wall: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(percentile(wall, 0.5), 2),
        f"{prefix}_p95_ms": round(percentile(wall, 0.95), 2),
        f"{prefix}_cpu_p50_ms": round(percentile(cpu, 0.5), 2),
        f"{prefix}_cpu_p95_ms": round(percentile(cpu, 0.95), 2),
    }


ANSWER_SAMPLE = 25


def category_sql(path: str, in_stock: bool | None, answer: bool) -> list[tuple[str, dict]]:
    """The category class in plain SQL: the first page of 20 by the tie-break under the same
    filters (``answer`` False: the raw query the ratio has been reported against), or
    (``answer`` True) the whole answer: that page, the total, and the four facets' counts,
    each facet with every filter but its own, as the API counts them."""
    stock = " AND d.in_stock = :in_stock" if in_stock is not None else ""
    params = {"p": path + "%", "in_stock": in_stock}
    in_category = (
        "FROM search_documents d JOIN categories c ON c.id = d.category_id WHERE c.path LIKE :p"
    )
    page = f"SELECT d.id {in_category}{stock} ORDER BY d.tie_break LIMIT 20"
    if not answer:
        return [(page, params)]
    buckets = " ".join(
        f"WHEN d.min_unit_price_nanopence < {high} THEN '{key}'"
        for key, _low, high in price_bucket_bounds()
        if high is not None
    )
    statements = [
        page,
        f"SELECT count(*) {in_category}{stock}",
        "SELECT d.category_id, count(*) FROM search_documents d WHERE true"
        f"{stock} GROUP BY d.category_id",
        "SELECT s.supplier_id, count(*) FROM search_document_suppliers s"
        f" JOIN search_documents d ON d.id = s.document_id JOIN categories c"
        f" ON c.id = d.category_id WHERE c.path LIKE :p{stock} GROUP BY s.supplier_id",
        f"SELECT d.kind, count(*) {in_category}{stock} GROUP BY d.kind",
        f"SELECT CASE {buckets} ELSE 'top' END, count(*) {in_category}{stock} GROUP BY 1",
    ]
    return [(sql, params) for sql in statements]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=300_000)
    parser.add_argument("--suppliers", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per class")
    parser.add_argument("--reset", action="store_true", help="empty the database first")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    settings = Settings(
        database_url=normalise_database_url(args.database_url),
        log_level="WARNING",
        testing=False,
        rate_limit_enabled=False,  # one client, one address: the limiter is not what is timed
    )
    if args.reset:
        reset(settings)
    migrate.upgrade(settings)
    app = create_app(settings)
    state = app.extensions["marketplace"]
    with state.session_factory() as session:
        have = session.scalar(select(func.count()).select_from(Product))
        docs = session.scalar(select(func.count()).select_from(SearchDocument))
    if have != args.products or not docs:
        if have:
            sys.exit("the database holds a different catalogue: run with --reset")
        generate(state, args.products, args.offers, args.suppliers, args.seed)
    with state.session_factory() as session:
        n_products = session.scalar(select(func.count()).select_from(Product))
        n_offers = session.scalar(select(func.count()).select_from(Offer))
        n_docs = session.scalar(select(func.count()).select_from(SearchDocument))
        codes = list(session.scalars(select(Category.code)))
    log(f"catalogue: {n_products:,} products, {n_offers:,} offers, {n_docs:,} searchable")

    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"load average before timing: {load_before}")
    rng = random.Random(args.seed + 1)
    client = app.test_client()
    n = args.requests

    def get(params: dict) -> dict:
        response = client.get("/api/v1/search", query_string=params)
        if response.status_code != 200:
            raise SystemExit(f"{params}: {response.status_code} {response.get_data(as_text=True)}")
        return response.get_json()

    one = [{"q": rng.choice(ONE_WORD)} for _ in range(n)]
    two, two_correct = [], []  # each query with a typo, and the words it was made from
    for _ in range(n):
        a, b = correct = rng.choice(TWO_WORDS)
        if rng.random() < 0.5 and len(a) >= 5:
            a = typo(a, rng)
        else:
            b = typo(b, rng) if len(b) >= 5 else b
        two.append({"q": f"{a} {b}"})
        two_correct.append(" ".join(correct))
    category = [
        {"category": rng.choice(codes), "in_stock": "true" if rng.random() < 0.5 else None}
        for _ in range(n)
    ]
    category = [{k: v for k, v in c.items() if v} for c in category]
    # Deep pages: walk 50 pages of 20 by unit price, keep the cursor, time page 51.
    deep = []
    for word in ONE_WORD:
        params = {"q": word, "sort": "unit_price", "limit": 20}
        body = get(params)
        for _ in range(50):
            if not body["next_cursor"]:
                break
            body = get({**params, "cursor": body["next_cursor"]})
        if body["next_cursor"]:
            deep.append({**params, "cursor": body["next_cursor"]})
    deep = [rng.choice(deep) for _ in range(n)] if deep else []

    classes = {
        "one word": one,
        "two words, one typo": two,
        "category filter + facets": category,
        "deep cursor page (page 51, sort=unit_price)": deep,
    }
    # The raw full-text query alone, on the same database, in two forms. "raw": the search's
    # own full-text query, its plan (spelling corrections and synonyms included) as the
    # database's query, ranked by the database. "words": the words alone, as the rounds up to
    # the sixth measured it (the typo class: each query's words before the typo was made).
    sqlite = state.settings.is_sqlite
    backend = app.extensions["marketplace.search"]
    fts5_raw = "SELECT rowid FROM search_fts WHERE search_fts MATCH :q ORDER BY rank LIMIT 20"
    words_raw = (
        fts5_raw
        if sqlite
        else "SELECT id FROM search_documents WHERE search_fts_vector @@ websearch_to_tsquery('english', :q) "
        "ORDER BY ts_rank(search_fts_vector, websearch_to_tsquery('english', :q)) DESC LIMIT 20"
    )
    plans: dict[str, Any] = {}

    def plan_raw(q: str) -> list[tuple[Any, dict]]:
        """The search's own full-text query for ``q``, as the database runs it."""
        if q not in plans:
            with state.session_factory() as session:
                plans[q] = backend._plan(session, SearchQuery(q=q))
        if sqlite:
            return [(fts5_raw, {"q": fts5_query(plans[q])})]
        vector = literal_column("search_documents.search_fts_vector")
        query = tsquery(plans[q])
        statement = (
            select(SearchDocument.id)
            .where(vector.op("@@")(query))
            .order_by(func.ts_rank(vector, query).desc())
            .limit(20)
        )
        return [(statement, {})]  # compiled once, then from SQLAlchemy's statement cache

    paths = {}
    with state.session_factory() as session:
        paths = {c.code: c.path for c in session.scalars(select(Category))}

    def stock(call: dict) -> bool | None:
        return {"true": True, "false": False}.get(call.get("in_stock", ""))

    def raw_calls(name: str, calls: list[dict]) -> list[list[tuple[Any, dict]]]:
        if name.startswith("category"):
            return [category_sql(paths[c["category"]], stock(c), answer=False) for c in calls]
        return [plan_raw(c["q"]) for c in calls]

    def other_calls(name: str, calls: list[dict]) -> tuple[str, list[list[tuple[Any, dict]]]]:
        """The second comparator: the words alone, or (the category class, which has no
        full-text query) the plain SQL of its whole answer."""
        if name.startswith("category"):
            # Plain SQL takes most of a second for each answer here: a sample is enough.
            sample = calls[:ANSWER_SAMPLE]
            answers = [category_sql(paths[c["category"]], stock(c), answer=True) for c in sample]
            return "answer_sql", answers
        if name.startswith("two"):
            return "words", [[(words_raw, {"q": q})] for q in two_correct]
        return "words", [[(words_raw, {"q": c["q"]})] for c in calls]

    with state.session_factory() as session:
        changeable = list(
            session.scalars(
                select(Offer.id).where(Offer.status == OfferStatus.ACTIVE).order_by(Offer.id)
            )
        )
    change_rng = random.Random(args.seed + 2)

    def new_generation() -> None:
        """A real catalogue change: one active offer's price moves by a penny (and back)."""
        with unit_of_work(state.session_factory) as session:
            offer = session.get(Offer, change_rng.choice(changeable))
            offer.pack_price_pence += 1 if offer.pack_price_pence % 2 else -1
            product_changed(session, offer.product_id)

    def ratio(a: list[float], b: list[float]) -> float:
        return round(percentile(a, 0.5) / max(percentile(b, 0.5), 1e-6), 2)

    results = {}
    with state.engine.connect() as connection:

        def run_raw(statements: list[tuple[Any, dict]]) -> None:
            for statement, params in statements:
                statement = text(statement) if isinstance(statement, str) else statement
                connection.execute(statement, params).all()

        for name, calls in classes.items():
            if not calls:
                continue
            cache, backend.cache = backend.cache, SearchCache(0)
            off, off_cpu = timed(get, calls)
            backend.cache = cache
            cold, cold_cpu = timed(get, calls, before=new_generation)
            for params in calls:  # fill the cache, untimed
                get(params)
            hits, misses = cache_lookups("hit"), cache_lookups("miss")
            warm, warm_cpu = timed(get, calls, warmup=0)
            hits, misses = cache_lookups("hit") - hits, cache_lookups("miss") - misses
            raw, raw_cpu = timed(run_raw, raw_calls(name, calls))
            other, other_statements = other_calls(name, calls)
            second = timed(run_raw, other_statements)[0]
            results[name] = {
                **figures("off", off, off_cpu),
                **figures("cold", cold, cold_cpu),
                **figures("warm", warm, warm_cpu),
                "warm_hit_rate": round(hits / max(hits + misses, 1), 3),
                "raw_p50_ms": round(percentile(raw, 0.5), 2),
                "raw_p95_ms": round(percentile(raw, 0.95), 2),
                "raw_cpu_p50_ms": round(percentile(raw_cpu, 0.5), 2),
                "off_ratio_p50": ratio(off, raw),
                "cold_ratio_p50": ratio(cold, raw),
                "warm_ratio_p50": ratio(warm, raw),
                f"{other}_p50_ms": round(percentile(second, 0.5), 2),
                f"{other}_p95_ms": round(percentile(second, 0.95), 2),
                f"off_ratio_to_{other}_p50": ratio(off, second),
                f"cold_ratio_to_{other}_p50": ratio(cold, second),
                "requests": len(calls),
            }
            log(f"{name}: {results[name]}")
    with state.engine.connect() as connection:
        version = connection.execute(
            text("SELECT sqlite_version()" if sqlite else "SHOW server_version")
        ).scalar()
    report = {
        "database": "SQLite " + version if sqlite else "PostgreSQL " + version,
        "products": n_products,
        "offers": n_offers,
        "searchable": n_docs,
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "search_cache_size": state.settings.search_cache_size,
        "load_average_before_timing": load_before,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "classes": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
