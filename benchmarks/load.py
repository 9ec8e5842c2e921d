"""Load test: a busy marketplace's mix of requests against gunicorn on loopback, then the same
with double the workers.

    python benchmarks/load.py --database-url postgresql://postgres@127.0.0.1/bench_load \\
        --workers 4 --clients 32 --rate 40 --duration 60

It loads the orders benchmark's world (the search benchmark's generated catalogue, purchase
history for a pool of offers, trust buyers with tokens), then for each worker count (WORKERS,
then 2 x WORKERS) starts gunicorn on 127.0.0.1 and sends this mix for DURATION seconds:

    60% search          GET  /api/v1/search (one word, two words with a typo, a category
                             filter with in_stock, or a word within a category)
    25% product page    GET  /api/v1/products/{id} (the product and its offers)
    10% quote           POST /api/v1/quotes (1 to 3 offers, purchase order)
     5% order           POST /api/v1/orders (the client's last unordered quote; a fresh one
                             if it has none, which then counts as a quote)

Open loop (``--rate R``, the default): requests are due at a fixed rate whatever the server's
speed, as users arrive independently of each other; CLIENTS threads, each with its own
keep-alive connection, take them in order. Latency runs from when a request was due, so a
server falling behind shows as latency (no coordinated omission). If the server cannot keep
up, the backlog grows and so does every percentile: the sustained rate is then below R.
Closed loop (``--rate 0``): CLIENTS threads send back to back, which measures the most the
server sustains, not latency at a given load.

With ``--redis-url``, the server gets that ``REDIS_URL`` (as a deployment of several workers
should have: they share the search's full-text matches and the rate-limit counters), and that
Redis database is emptied before each run, so that each run starts cold.

Every run is bounded by DURATION and by MAX_REQUESTS, and only ever talks to 127.0.0.1. It
prints sustained requests per second, p50/p95/p99 per endpoint class and the error rate for
each worker count, and exits non-zero if any response was an error (4xx or 5xx) or failed.
Requests still queued when an open-loop run's time is up are reported as unsent (the server
did not keep up), not sent late.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from orders import (
    ADDRESS,
    Client,
    free_port,
    machine,
    prepare,
    start_gunicorn,
    workers_cpu_seconds,
)
from search import ONE_WORD, TWO_WORDS, log, percentile, typo
from sqlalchemy import func, select

from marketplace.catalog.models import Category, Offer, Product

MIX = (("search", 60), ("product", 25), ("quote", 10), ("order", 5))
TARGETS_P95_MS = {"search": 100, "order": 250}


class World:
    """What the requests pick from: words, category codes, product and offer ids."""

    def __init__(self, state, offers: list[str], seed: int):
        with state.session_factory() as session:
            self.categories = list(
                session.scalars(
                    select(Category.code)
                    .join(Product, Product.category_id == Category.id)
                    .distinct()
                )
            )
            self.products = list(
                session.scalars(select(Product.id).order_by(func.random()).limit(5000))
            )
            self.pool_products = list(
                session.scalars(select(Offer.product_id).where(Offer.id.in_(offers)).distinct())
            )
        self.offers = offers
        self.seed = seed

    def search_params(self, rng: random.Random) -> dict:
        kind = rng.random()
        if kind < 0.45:
            return {"q": rng.choice(ONE_WORD)}
        if kind < 0.75:
            a, b = rng.choice(TWO_WORDS)
            return {"q": f"{a} {typo(b, rng) if len(b) >= 5 else b}"}
        if kind < 0.9:
            return {"category": rng.choice(self.categories), "in_stock": "true"}
        return {"q": rng.choice(ONE_WORD), "category": rng.choice(self.categories)}

    def product_id(self, rng: random.Random) -> str:
        # Half the product pages are the products people are quoting for, half anything.
        return rng.choice(self.pool_products if rng.random() < 0.5 else self.products)


class LoadClient:
    """One user agent: a keep-alive connection, a buyer's token, its last unordered quote."""

    def __init__(self, port: int, token: str, world: World, seed: int):
        self.http = Client(port, token)
        self.world = world
        self.rng = random.Random(seed)
        self.pending_quote: str | None = None

    def quote(self) -> tuple[int, float, str | None]:
        lines = [
            {"offer_id": o, "quantity": self.rng.randint(1, 5)}
            for o in self.rng.sample(self.world.offers, self.rng.randint(1, 3))
        ]
        status, body, ms = self.http.call(
            "POST", "/api/v1/quotes", {"lines": lines, "payment_method": "purchase_order"}
        )
        if status == 201:
            self.pending_quote = body["id"]
        return status, ms, body.get("type") if status >= 400 else None

    def run(self, kind: str) -> list[tuple[str, int, float, str | None]]:
        """Send one request of this class (an order with no quote to hand sends the quote
        first). Returns (class, status, ms, problem type) for each request sent."""
        if kind == "search":
            query = urlencode(self.world.search_params(self.rng))
            status, body, ms = self.http.call("GET", f"/api/v1/search?{query}")
        elif kind == "product":
            product = self.world.product_id(self.rng)
            status, body, ms = self.http.call("GET", f"/api/v1/products/{product}")
        elif kind == "quote":
            return [("quote", *self.quote())]
        else:
            sent = [] if self.pending_quote else [("quote", *self.quote())]
            if not self.pending_quote:
                return sent
            order = {
                "quote_id": self.pending_quote,
                "delivery_address": ADDRESS,
                "po_number": f"PO-{uuid.uuid4().hex[:10]}",
            }
            self.pending_quote = None
            status, body, ms = self.http.call(
                "POST", "/api/v1/orders", order, {"Idempotency-Key": uuid.uuid4().hex}
            )
            return [*sent, ("order", status, ms, body.get("type") if status >= 400 else None)]
        return [(kind, status, ms, body.get("type") if status >= 400 else None)]


def pick(rng: random.Random) -> str:
    roll = rng.uniform(0, sum(w for _, w in MIX))
    for kind, weight in MIX:
        roll -= weight
        if roll <= 0:
            return kind
    return MIX[-1][0]


def run_load(port: int, tokens: list[str], world: World, args) -> tuple[list, float]:
    """Send the mix for DURATION seconds (at most MAX_REQUESTS due requests). Returns the
    records (class, status, ms, problem) and the seconds it took."""
    records: list[tuple[str, int, float, str | None]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.duration
    due: queue.Queue = queue.Queue()
    clients = [LoadClient(port, t, world, args.seed + i) for i, t in enumerate(tokens)]
    mix_rng = random.Random(args.seed)

    def record(results, due_at: float | None) -> None:
        # Open loop: the first request's latency runs from when it was due.
        if due_at is not None and results:
            kind, status, ms, problem = results[0]
            waited = (time.perf_counter() - due_at) * 1000 - sum(r[2] for r in results)
            results[0] = (kind, status, ms + max(0.0, waited), problem)
        with lock:
            records.extend(results)

    def safe_run(client: LoadClient, kind: str):
        try:
            return client.run(kind)
        except (OSError, ValueError) as error:  # connection refused/reset, bad JSON
            return [(kind, 0, 0.0, type(error).__name__)]

    def open_loop_worker(client: LoadClient) -> None:
        while True:
            item = due.get()
            if item is None:
                return
            kind, due_at = item
            record(safe_run(client, kind), due_at)

    def closed_loop_worker(client: LoadClient, budget: int) -> None:
        for _ in range(budget):
            if time.monotonic() >= stop_at:
                return
            record(safe_run(client, pick(client.rng)), None)

    started = time.perf_counter()
    if args.rate > 0:
        threads = [threading.Thread(target=open_loop_worker, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        interval = 1.0 / args.rate
        sent = 0
        next_due = time.perf_counter()
        while sent < args.max_requests and time.monotonic() < stop_at:
            now = time.perf_counter()
            if now < next_due:
                time.sleep(next_due - now)
            due.put((pick(mix_rng), next_due))
            sent += 1
            next_due += interval
        # Requests still queued when time is up are dropped, not waited for (bounded in time).
        dropped = 0
        while True:
            try:
                due.get_nowait()
                dropped += 1
            except queue.Empty:
                break
        for _ in threads:
            due.put(None)
        for thread in threads:
            thread.join(timeout=60)
        if dropped:
            records.extend(("unsent", 0, 0.0, "backlog at the end") for _ in range(dropped))
    else:
        budget = max(1, args.max_requests // len(clients))
        threads = [threading.Thread(target=closed_loop_worker, args=(c, budget)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return records, time.perf_counter() - started


def report(records: list, seconds: float) -> dict:
    by_kind: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    kinds: dict[str, int] = defaultdict(int)
    unsent = 0
    for kind, status, ms, problem in records:
        if kind == "unsent":
            unsent += 1
            continue
        if status == 0 or status >= 400:
            errors[kind] += 1
            kinds[f"{kind} {status} {problem}"] += 1
        else:
            by_kind[kind].append(ms)
    answered = sum(len(v) for v in by_kind.values())
    total = answered + sum(errors.values())
    per_class = {
        kind: {
            "n": len(values),
            "share_percent": round(100 * len(values) / max(answered, 1), 1),
            "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "p99_ms": round(percentile(values, 0.99), 1),
            "errors": errors.get(kind, 0),
        }
        for kind, values in sorted(by_kind.items())
    }
    targets = {
        f"p95 {kind} <= {limit} ms": bool(per_class.get(kind))
        and per_class[kind]["p95_ms"] <= limit
        for kind, limit in TARGETS_P95_MS.items()
    }
    targets["error rate 0"] = not errors
    return {
        "seconds": round(seconds, 1),
        "requests": total,
        "sustained_requests_per_second": round(answered / seconds, 1),
        "errors": sum(errors.values()),
        "error_rate_percent": round(100 * sum(errors.values()) / max(total, 1), 3),
        "error_kinds": dict(sorted(kinds.items())[:10]),
        "unsent_at_end": unsent,
        "classes": per_class,
        "targets_met": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=300_000)
    parser.add_argument("--workers", type=int, default=4, help="then twice as many")
    parser.add_argument("--clients", type=int, default=32, help="connections (threads)")
    parser.add_argument(
        "--rate", type=float, default=40.0, help="requests/s due (open loop); 0: closed loop"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each run")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per run, a bound")
    parser.add_argument("--history-trusts", type=int, default=40)
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--redis-url",
        default=None,
        help="REDIS_URL for the server (the workers share the search's full-text matches); "
        "that Redis database is emptied before each run, so that each starts cold: use one "
        "kept for this",
    )
    args = parser.parse_args()
    if args.redis_url:
        os.environ["REDIS_URL"] = args.redis_url  # start_gunicorn passes the environment on

    settings, state, tokens, offers, history, n_offers = prepare(args)
    world = World(state, offers, args.seed)

    runs = []
    for workers in (args.workers, 2 * args.workers):
        port = free_port()
        if args.redis_url:
            redis.Redis.from_url(args.redis_url).flushdb()
        server = start_gunicorn(settings.database_url, port, workers)
        try:
            if args.warmup > 0:
                warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
                run_load(port, tokens, world, warm)
            load_before = [round(x, 2) for x in os.getloadavg()]
            mode = f"open loop at {args.rate:g}/s" if args.rate > 0 else "closed loop"
            log(f"{workers} workers, {args.clients} clients, {mode}, {args.duration:.0f} s…")
            cpu_before = workers_cpu_seconds(server.pid)
            records, seconds = run_load(port, tokens, world, args)
            cpu = workers_cpu_seconds(server.pid) - cpu_before
            load_after = [round(x, 2) for x in os.getloadavg()]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        result = {
            "workers": workers,
            "load_average_before": load_before,
            "load_average_after": load_after,
            **report(records, seconds),
        }
        result["app_cpu_ms_per_request"] = round(1000 * cpu / max(result["requests"], 1), 1)
        log(json.dumps(result))
        runs.append(result)

    first, second = runs
    output = {
        "database": "postgresql" if settings.is_postgresql else "sqlite",
        "catalogue": {"products": args.products, "offers": n_offers},
        "purchase_history_lines": history,
        "machine": machine(),
        "clients": args.clients,
        "mode": "open" if args.rate > 0 else "closed",
        "rate_due_per_second": args.rate,
        "duration_seconds": args.duration,
        "mix_percent": dict(MIX),
        "runs": runs,
        "scaling_sustained_rps": round(
            second["sustained_requests_per_second"]
            / max(first["sustained_requests_per_second"], 1e-9),
            2,
        ),
    }
    print(json.dumps(output, indent=2))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    if any(run["errors"] for run in runs):
        raise SystemExit("errors: some responses were 4xx/5xx or failed (see error_kinds)")


if __name__ == "__main__":
    main()
