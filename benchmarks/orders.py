"""Orders benchmark: purchase-order orders (quote + order) from concurrent clients against
gunicorn, and a contended run on one low-stock offer that must never oversell.

    python benchmarks/orders.py --database-url postgresql://postgres@127.0.0.1/test_orders --reset

It migrates the database and loads a generated catalogue (the search benchmark's generator:
PRODUCTS products and their offers), creates trusts with buyers and tokens, starts gunicorn on
127.0.0.1 (WORKERS workers) and then, from CLIENTS threads with one keep-alive connection each,
runs for DURATION seconds: each iteration asks for a quote on 1 to 3 random offers and places the
order with a fresh Idempotency-Key. It reports orders per second and p50/p95 latency of the
quote, the order and the pair, and the p50 of a trivial JSON endpoint (``/healthz``) on the same
server at the same concurrency, as a ratio. Finally CLIENTS clients race for an offer with
STOCK packs (one pack each, many times over): the run must end with exactly STOCK packs sold.
Requests go to loopback only and every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import generate, log, percentile, reset
from sqlalchemy import func, insert, select

from marketplace import create_app, migrate
from marketplace.accounts import service as accounts
from marketplace.accounts.models import Organisation, OrgType, Role
from marketplace.accounts.service import Principal
from marketplace.catalog.models import Offer, OfferStatus, Product
from marketplace.config import Settings, normalise_database_url
from marketplace.db import new_id, unit_of_work
from marketplace.orders.models import Order, OrderLine
from marketplace.pricing import rollups
from marketplace.pricing.models import PurchaseRecord, PurchaseSource, PurchaseStatus

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = {"name": "Stores", "line1": "1 Hospital Road", "town": "Leeds", "postcode": "LS9 7TF"}
SYSTEM = Principal.system("benchmark")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_buyers(state, count: int) -> list[str]:
    """Trusts with one buyer each; returns their tokens."""
    tokens = []
    with unit_of_work(state.session_factory) as session:
        for n in range(count):
            trust = accounts.create_organisation(
                session,
                SYSTEM,
                type=OrgType.TRUST,
                name=f"Benchmark Trust {n}",
                ods_code=f"BT{uuid.uuid4().hex[:6].upper()}",
            )
            user = accounts.create_user(
                session,
                SYSTEM,
                organisation_id=trust.id,
                role=Role.BUYER,
                email=f"buyer{n}.{uuid.uuid4().hex[:6]}@bench.example",
            )
            tokens.append(accounts.issue_token(session, SYSTEM, user, expires_in_days=1).secret)
    return tokens


def purchase_history(state, offer_ids: list[str], trusts: int, seed: int) -> int:
    """What trusts paid for the products of these offers over the last year, so that every
    quote line gets a real price-variance verdict (3 to TRUSTS trusts per product, each with
    its own price level), then the full statistics refresh. Returns the lines written."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    today = now.date()
    with state.session_factory() as session:
        products = session.execute(
            select(Offer.product_id, Product.units_per_pack, Offer.pack_price_pence)
            .join(Product, Product.id == Offer.product_id)
            .where(Offer.id.in_(offer_ids))
        ).all()
    trust_rows = [
        {
            "id": new_id("org"),
            "type": OrgType.TRUST,
            "name": f"History Trust {n:03d}",
            "ods_code": f"HT{n:03d}",
            "is_sme": False,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(trusts)
    ]
    level = {t["id"]: rng.uniform(0.8, 1.5) for t in trust_rows}
    records = []
    for product_id, units_per_pack, pack_price in dict.fromkeys(products):
        for trust in rng.sample(trust_rows, rng.randint(3, trusts)):
            packs = rng.randint(1, 40)
            records.append(
                {
                    "id": new_id("pur"),
                    "trust_id": trust["id"],
                    "order_date": today - timedelta(days=rng.randrange(1, 360)),
                    "product_id": product_id,
                    "quantity": packs,
                    "units_per_pack": units_per_pack,
                    "total_price_pence": max(1, round(packs * pack_price * level[trust["id"]])),
                    "source": PurchaseSource.IMPORT,
                    "po_number": f"HIST-{len(records)}",
                    "line": 1,
                    "status": PurchaseStatus.MATCHED,
                    "benchmark_excluded": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    with unit_of_work(state.session_factory) as session:
        session.execute(insert(Organisation), trust_rows)
        for start in range(0, len(records), 5000):
            session.execute(insert(PurchaseRecord), records[start : start + 5000])
    with unit_of_work(state.session_factory) as session:
        rollups.refresh_all(session, rebuild=True)  # the lines went in below the importer
    return len(records)


def offer_pool(state, size: int, seed: int) -> list[str]:
    with state.session_factory() as session:
        ids = session.scalars(
            select(Offer.id).where(Offer.status == OfferStatus.ACTIVE).order_by(Offer.id)
        ).all()
    rng = random.Random(seed)
    return rng.sample(list(ids), min(size, len(ids)))


def top_up_stock(state, offer_ids: list[str], stock: int) -> None:
    with unit_of_work(state.session_factory) as session:
        session.query(Offer).filter(Offer.id.in_(offer_ids)).update(
            {"stock": stock, "min_order_qty": 1}, synchronize_session=False
        )


def prepare(args: argparse.Namespace):
    """Migrate, generate the catalogue on an empty database, one buyer per client, the pool of
    offers to order from (with stock enough for any run) and a year of trusts' purchases of their
    products. Returns (settings, state, buyers' tokens, offer ids, purchase lines, offers in the
    catalogue)."""
    settings = Settings(database_url=normalise_database_url(args.database_url))
    if args.reset:
        reset(settings)
    migrate.upgrade(settings)
    state = create_app(settings).extensions["marketplace"]
    with state.session_factory() as session:
        have = session.scalar(select(func.count(Product.id)))
    if not have:
        log(f"Generating {args.products:,} products and {args.offers:,} offers…")
        generate(state, args.products, args.offers, 300, args.seed)
    elif have != args.products:
        sys.exit(f"the database holds {have:,} products, not {args.products:,}: use --reset")
    tokens = make_buyers(state, args.clients)
    offers = offer_pool(state, 2_000, args.seed)
    top_up_stock(state, offers, 10_000_000)
    with state.session_factory() as session:
        history = session.scalar(select(func.count(PurchaseRecord.id)))
    if not history:
        log(f"Purchase history for the {len(offers):,} offers' products…")
        history = purchase_history(state, offers, args.history_trusts, args.seed)
    with state.session_factory() as session:
        n_offers = session.scalar(select(func.count(Offer.id)))
    return settings, state, tokens, offers, history, n_offers


def start_gunicorn(database_url: str, port: int, workers: int) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(workers),
        # Every client of a benchmark comes from 127.0.0.1: per-address limits would measure the
        # limiter, not the service (its own cost is benchmarks/request_overhead.py's figure).
        "RATE_LIMIT_ENABLED": "false",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--access-logfile",
            "/dev/null",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"gunicorn did not start: {process.stderr.read().decode()[-800:]}")


class Client:
    """One keep-alive connection, as a browser or a procurement system would hold."""

    def __init__(self, port: int, token: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ) -> tuple[int, dict, float]:
        started = time.perf_counter()
        self.connection.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers=self.headers | (headers or {}),
        )
        response = self.connection.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        return response.status, json.loads(payload or b"{}"), elapsed


def order_loop(port, token, offers, seed, deadline, max_iterations, out, errors):
    client = Client(port, token)
    rng = random.Random(seed)
    for _ in range(max_iterations):
        if time.monotonic() >= deadline:
            break
        lines = [
            {"offer_id": o, "quantity": rng.randint(1, 5)}
            for o in rng.sample(offers, rng.randint(1, 3))
        ]
        status, quote, quote_ms = client.call(
            "POST", "/api/v1/quotes", {"lines": lines, "payment_method": "purchase_order"}
        )
        if status != 201:
            errors.append(("quote", status, quote.get("type")))
            continue
        body = {
            "quote_id": quote["id"],
            "delivery_address": ADDRESS,
            "po_number": f"PO-{uuid.uuid4().hex[:10]}",
        }
        status, placed, order_ms = client.call(
            "POST", "/api/v1/orders", body, {"Idempotency-Key": uuid.uuid4().hex}
        )
        if status != 201:
            errors.append(("order", status, placed.get("type")))
            continue
        out.append((quote_ms, order_ms))


def healthz_loop(port, deadline, max_iterations, out):
    client = Client(port, "none")
    for _ in range(max_iterations):
        if time.monotonic() >= deadline:
            break
        out.append(client.call("GET", "/healthz")[2])


def run_threads(target, args_per_thread) -> float:
    threads = [threading.Thread(target=target, args=args) for args in args_per_thread]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def packs_sold(state, offer_id: str) -> int:
    with state.session_factory() as session:
        return int(
            session.scalar(
                select(func.coalesce(func.sum(OrderLine.quantity), 0)).where(
                    OrderLine.offer_id == offer_id
                )
            )
        )


def contended(state, port: int, tokens: list[str], stock: int, attempts_per_client: int) -> dict:
    """Every client keeps trying to buy one pack of the same offer; exactly STOCK may succeed."""
    with state.session_factory() as session:
        offer_id = session.scalar(
            select(Offer.id).where(Offer.status == OfferStatus.ACTIVE).order_by(Offer.id).limit(1)
        )
    top_up_stock(state, [offer_id], stock)
    sold_before = packs_sold(state, offer_id)  # earlier runs on the same database
    outcomes: list[int] = []

    def buyer(token: str) -> None:
        client = Client(port, token)
        for _ in range(attempts_per_client):
            status, quote, _ = client.call(
                "POST",
                "/api/v1/quotes",
                {
                    "lines": [{"offer_id": offer_id, "quantity": 1}],
                    "payment_method": "purchase_order",
                },
            )
            if status != 201 or not quote.get("orderable"):
                outcomes.append(409)
                continue
            body = {"quote_id": quote["id"], "delivery_address": ADDRESS, "po_number": "PO-RACE"}
            outcomes.append(
                client.call("POST", "/api/v1/orders", body, {"Idempotency-Key": uuid.uuid4().hex})[
                    0
                ]
            )

    run_threads(buyer, [(t,) for t in tokens])
    sold = packs_sold(state, offer_id) - sold_before
    with state.session_factory() as session:
        left = session.get(Offer, offer_id).stock
    return {
        "stock": stock,
        "attempts": len(outcomes),
        "orders_placed": outcomes.count(201),
        "refused_409": outcomes.count(409),
        "other_statuses": sorted({s for s in outcomes if s not in (201, 409)}),
        "packs_sold": int(sold),
        "stock_left": left,
        "oversold": int(sold) - stock if sold > stock else 0,
    }


def workers_cpu_seconds(server_pid: int) -> float:
    """CPU time (user + system) the gunicorn master's worker processes have used so far: what
    the application itself costs, whatever else the machine is doing."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == server_pid:  # the parent pid
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def summary(values: list[float]) -> dict:
    return (
        {
            "n": len(values),
            "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
        }
        if values
        else {"n": 0}
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=300_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of ordering")
    parser.add_argument(
        "--max-iterations", type=int, default=2_000, help="per client, a bound on the loop"
    )
    parser.add_argument("--stock", type=int, default=25, help="packs on the contended offer")
    parser.add_argument(
        "--history-trusts", type=int, default=40, help="trusts in the purchase history (≥ 3)"
    )
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    settings, state, tokens, offers, history, n_offers = prepare(args)
    with state.session_factory() as session:
        orders_before = session.scalar(select(func.count(Order.id)))

    port = free_port()
    load_before = [round(x, 2) for x in os.getloadavg()]
    server = start_gunicorn(settings.database_url, port, args.workers)
    try:
        log(f"Ordering from {args.clients} clients for {args.duration:.0f} s…")
        pairs: list[tuple[float, float]] = []
        errors: list = []
        deadline = time.monotonic() + args.duration
        cpu_before = workers_cpu_seconds(server.pid)
        elapsed = run_threads(
            order_loop,
            [
                (port, t, offers, args.seed + i, deadline, args.max_iterations, pairs, errors)
                for i, t in enumerate(tokens)
            ],
        )
        cpu_ordering = workers_cpu_seconds(server.pid) - cpu_before
        log("Timing /healthz at the same concurrency…")
        trivial: list[float] = []
        deadline = time.monotonic() + min(10.0, args.duration)
        run_threads(healthz_loop, [(port, deadline, args.max_iterations, trivial) for _ in tokens])
        log(f"Contended run: {args.clients} clients, {args.stock} packs…")
        race = contended(state, port, tokens, args.stock, attempts_per_client=3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    with state.session_factory() as session:
        orders_after = session.scalar(select(func.count(Order.id)))
    quote_ms = [q for q, _ in pairs]
    order_ms = [o for _, o in pairs]
    both_ms = [q + o for q, o in pairs]
    p50_trivial = percentile(trivial, 0.5) if trivial else None
    result = {
        "database": "postgresql" if settings.is_postgresql else "sqlite",
        "catalogue": {"offers": n_offers},
        "purchase_history_lines": history,
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "workers": args.workers,
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "orders": len(pairs),
        "orders_per_second": round(len(pairs) / elapsed, 1),
        "errors": len(errors),
        "error_kinds": sorted({str(e) for e in errors})[:5],
        "app_cpu_ms_per_quote_plus_order": round(1000 * cpu_ordering / len(pairs), 1)
        if pairs
        else None,
        "quote": summary(quote_ms),
        "order": summary(order_ms),
        "quote_plus_order": summary(both_ms),
        "healthz": summary(trivial),
        "order_p50_over_healthz_p50": round(percentile(order_ms, 0.5) / p50_trivial, 1)
        if pairs and p50_trivial
        else None,
        "quote_p50_over_healthz_p50": round(percentile(quote_ms, 0.5) / p50_trivial, 1)
        if pairs and p50_trivial
        else None,
        "quote_plus_order_p50_over_healthz_p50": round(percentile(both_ms, 0.5) / p50_trivial, 1)
        if pairs and p50_trivial
        else None,
        "orders_in_database": orders_after - orders_before,
        "contended": race,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if race["oversold"] or race["packs_sold"] != min(race["stock"], race["orders_placed"]):
        raise SystemExit("OVERSOLD: the contended run sold more than its stock")


if __name__ == "__main__":
    main()
