"""Price-variance benchmark: generate purchase records, then measure the full refresh (and its
ratio to one hand-written SQL statement computing the same per-trust aggregation), the
incremental refresh after importing 10,000 new lines, import throughput (and its ratio to
PostgreSQL COPY of the same file), peak RSS while importing a large CSV, and the p95 latency of
GET /api/v1/price-variance.

    python benchmarks/pricing.py --database-url postgresql://postgres@127.0.0.1/test_pricing \\
        --lines 10000000 --import-rows 1000000 --rss-rows 2000000
    python benchmarks/pricing.py --database-url sqlite:////tmp/bench-pricing.sqlite3 --lines 1000000

The database is emptied first (PostgreSQL: the public schema is recreated; SQLite: the file is
removed). Results are printed and written as JSON to benchmarks/results/. Figures and commands
are recorded in docs/benchmarks/pricing.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from marketplace import create_app, migrate  # noqa: E402
from marketplace.accounts.service import Principal  # noqa: E402
from marketplace.catalog.gtin import check_digit  # noqa: E402
from marketplace.config import normalise_database_url  # noqa: E402
from marketplace.db import unit_of_work  # noqa: E402
from marketplace.pricing import rollups, service  # noqa: E402
from marketplace.pricing.importer import COLUMNS  # noqa: E402
from marketplace.pricing.models import DailyTotal, PurchaseRecord  # noqa: E402

ACTOR = Principal.system("benchmark")
TODAY = rollups.today_utc()
# Distinguishes this run's imported purchase-order numbers, so that a run on the data of an
# earlier one (--reuse) imports new lines rather than re-imports (which change nothing).
RUN = datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def gtin(i: int) -> str:
    body = f"7{i:011d}"
    return (body + str(check_digit(body))).zfill(14)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.url = normalise_database_url(args.database_url)
        self.is_pg = self.url.startswith("postgresql")
        self.results: dict[str, object] = {}

    # --- setup ------------------------------------------------------------------------------

    def reset(self) -> None:
        if self.is_pg:
            from sqlalchemy import create_engine

            engine = create_engine(self.url)
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        else:
            path = Path(self.url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        self.app = create_app(self.app_settings())
        self.state = self.app.extensions["marketplace"]
        migrate.upgrade(self.state.settings)

    def app_settings(self) -> dict[str, object]:
        # One in-process client: per-address rate limits would time the limiter, not the reads.
        return {"database_url": self.url, "log_level": "WARNING", "rate_limit_enabled": False}

    def raw(self):
        """A raw DBAPI connection (psycopg or sqlite3) outside SQLAlchemy."""
        return self.state.engine.raw_connection()

    def copy_rows(self, table: str, columns: list[str], rows) -> None:
        connection = self.raw()
        try:
            cursor = connection.cursor()
            if self.is_pg:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in columns)
                cursor.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                )
            connection.commit()
        finally:
            connection.close()

    def setup_catalogue(self) -> None:
        a = self.args
        log(f"creating {a.trusts} trusts, 1 supplier, {a.products} products")
        now = datetime.now(UTC)
        stamp = now if self.is_pg else now.replace(tzinfo=None).isoformat(sep=" ")
        self.trust_ids = [f"org_trust{i:05d}" for i in range(a.trusts)]
        self.copy_rows(
            "organisations",
            ["id", "type", "name", "ods_code", "is_sme", "created_at", "updated_at"],
            [
                (t, "trust", f"Benchmark trust {i}", f"B{i:04d}", False, stamp, stamp)
                for i, t in enumerate(self.trust_ids)
            ],
        )
        self.copy_rows(
            "categories",
            ["id", "code", "name", "scheme", "path", "kind", "phb_eligible", "phb_excluded"],
            [
                (
                    "cat_bench",
                    "BENCH",
                    "Benchmark commodities",
                    "MKT",
                    "/BENCH/",
                    "commodity",
                    False,
                    False,
                )
            ],
        )
        self.catalogue_arrays()
        self.copy_rows(
            "products",
            [
                "id",
                "gtin",
                "name",
                "category_id",
                "unit_of_measure",
                "units_per_pack",
                "attributes",
                "assurance",
                "benchmark_excluded",
                "created_at",
                "updated_at",
            ],
            (
                (
                    p,
                    gtin(i),
                    f"Benchmark product {i}",
                    "cat_bench",
                    "EA",
                    int(self.units_per_pack[i]),
                    "{}",
                    "{}",
                    False,
                    stamp,
                    stamp,
                )
                for i, p in enumerate(self.product_ids)
            ),
        )

    def catalogue_arrays(self) -> None:
        """The generated products' pack sizes and price levels (deterministic, so a later
        ``--rss-only`` run can write CSV lines that match an earlier run's catalogue)."""
        rng = np.random.default_rng(1)
        self.units_per_pack = rng.choice([1, 1, 5, 10, 50, 100], size=self.args.products)
        self.base_price = rng.integers(2, 2000, size=self.args.products)  # pence/unit, times 10
        self.product_ids = [f"prd_bench{i:07d}" for i in range(self.args.products)]

    def generate_lines(self) -> None:
        """Purchase records straight into the table (COPY on PostgreSQL, executemany on
        SQLite): products by a skewed popularity, each bought by 3-60 trusts with their own
        price level, order dates over the last 400 days."""
        a = self.args
        log(f"generating {a.lines:,} purchase records")
        started = time.perf_counter()
        rng = np.random.default_rng(2)
        buyers_per_product = rng.integers(3, 61, size=a.products)
        trust_level = rng.uniform(0.8, 1.6, size=a.trusts)
        if self.is_pg:
            self._generate_lines_pg(buyers_per_product, trust_level)
            self.results["generate_seconds"] = round(time.perf_counter() - started, 1)
            return
        columns = [
            "id",
            "trust_id",
            "order_date",
            "product_id",
            "supplier_name",
            "description",
            "quantity",
            "units_per_pack",
            "total_price_pence",
            "source",
            "po_number",
            "line",
            "status",
            "benchmark_excluded",
            "created_at",
            "updated_at",
        ]
        now = datetime.now(UTC)
        stamp = now if self.is_pg else now.replace(tzinfo=None).isoformat(sep=" ")
        dates = [TODAY - timedelta(days=d) for d in range(400)]
        if not self.is_pg:
            dates = [d.isoformat() for d in dates]
        chunk = 500_000
        done = 0
        while done < a.lines:
            n = min(chunk, a.lines - done)
            product = (a.products * rng.random(n) ** 2).astype(np.int64)  # popular products first
            slot = (rng.random(n) * buyers_per_product[product]).astype(np.int64)
            trust = (product * 7919 + slot) % a.trusts
            day = rng.integers(0, 400, size=n)
            qty = rng.integers(1, 50, size=n)
            upp = self.units_per_pack[product]
            price = self.base_price[product] * trust_level[trust] * rng.uniform(0.97, 1.03, size=n)
            total = np.maximum(1, (qty * upp * price / 10).astype(np.int64))
            rows = (
                (
                    f"pur_b{done + i:011d}",
                    self.trust_ids[trust[i]],
                    dates[day[i]],
                    self.product_ids[product[i]],
                    "Benchmark Supplies Ltd",
                    "benchmark line",
                    int(qty[i]),
                    int(upp[i]),
                    int(total[i]),
                    "import",
                    f"BPO{(done + i) // 10}",
                    (done + i) % 10 + 1,
                    "matched",
                    False,
                    stamp,
                    stamp,
                )
                for i in range(n)
            )
            self.copy_rows("purchase_records", columns, rows)
            done += n
            log(f"  {done:,} lines")
        self.results["generate_seconds"] = round(time.perf_counter() - started, 1)
        if self.is_pg:
            connection = self.raw()
            connection.cursor().execute("ANALYZE")
            connection.commit()
            connection.close()

    def _generate_lines_pg(self, buyers_per_product, trust_level) -> None:
        """The same distribution, generated by PostgreSQL itself (INSERT ... SELECT over
        generate_series, a million lines per statement)."""
        a = self.args
        connection = self.raw()
        try:
            cursor = connection.cursor()
            cursor.execute(
                "CREATE TABLE bench_products (idx int PRIMARY KEY, id text, upp int, base int, buyers int)"
            )
            with cursor.copy("COPY bench_products FROM STDIN") as copy:
                for i, p in enumerate(self.product_ids):
                    copy.write_row(
                        (
                            i,
                            p,
                            int(self.units_per_pack[i]),
                            int(self.base_price[i]),
                            int(buyers_per_product[i]),
                        )
                    )
            cursor.execute("CREATE TABLE bench_trusts (idx int PRIMARY KEY, id text, level float8)")
            with cursor.copy("COPY bench_trusts FROM STDIN") as copy:
                for i, t in enumerate(self.trust_ids):
                    copy.write_row((i, t, float(trust_level[i])))
            cursor.execute("ANALYZE bench_products; ANALYZE bench_trusts; SELECT setseed(0.42)")
            connection.commit()
            chunk = 1_000_000
            for start in range(0, a.lines, chunk):
                end = min(a.lines, start + chunk) - 1
                cursor.execute(
                    """
                    INSERT INTO purchase_records (id, trust_id, order_date, product_id, supplier_name,
                        description, quantity, units_per_pack, total_price_pence, source, po_number,
                        line, status, benchmark_excluded, created_at, updated_at)
                    SELECT 'pur_b' || lpad(g::text, 11, '0'), t.id, current_date - x.d, p.id,
                        'Benchmark Supplies Ltd', 'benchmark line', x.q, p.upp,
                        greatest(1, (x.q * p.upp * p.base * t.level * x.jitter / 10)::bigint),
                        'import', 'BPO' || (g / 10), g %% 10 + 1, 'matched', false, now(), now()
                    FROM (
                        SELECT g, pi, (pi * 7919 + floor(random() * bp.buyers)::int) %% %(trusts)s AS ti,
                            floor(random() * 400)::int AS d, 1 + floor(random() * 49)::int AS q,
                            0.97 + random() * 0.06 AS jitter
                        FROM (SELECT g, least(%(products)s - 1, floor(%(products)s * random() ^ 2)::int) AS pi
                              FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS g) s
                        JOIN bench_products bp ON bp.idx = s.pi
                    ) x
                    JOIN bench_products p ON p.idx = x.pi
                    JOIN bench_trusts t ON t.idx = x.ti
                    """,
                    {"start": start, "end": end, "trusts": a.trusts, "products": a.products},
                )
                connection.commit()
                log(f"  {end + 1:,} lines")
            cursor.execute("DROP TABLE bench_products; DROP TABLE bench_trusts")
            connection.commit()
            driver = connection.driver_connection
            driver.autocommit = True
            driver.execute("VACUUM ANALYZE purchase_records")
            driver.autocommit = False
        finally:
            connection.close()

    # --- measurements ---------------------------------------------------------------------------

    def full_refresh(self) -> None:
        log("full refresh")
        stages: dict[str, float] = {}
        last = [time.perf_counter()]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            stages[stage] = stages.get(stage, 0) + now - last[0]
            last[0] = now

        with unit_of_work(self.state.session_factory) as session:
            have_rollups = session.scalar(select(DailyTotal.product_id).limit(1)) is not None
        if not have_rollups:
            # the generator wrote the lines below the importer, so the rollups are empty: build
            # them once (`marketplace pricing refresh --rollups`), timed on their own
            log("  rollups first (--rollups): the generated lines have none")
            started = time.perf_counter()
            with unit_of_work(self.state.session_factory) as session:
                rollups.refresh_all(session, rebuild=True)
            self.results["full_refresh_with_rollups_seconds"] = round(
                time.perf_counter() - started, 1
            )
            log(f"  with rollups {self.results['full_refresh_with_rollups_seconds']}s")
        window = rollups.Window.default()
        reference_sql = (
            "CREATE TEMP TABLE reference_totals AS "
            "SELECT product_id, trust_id, SUM(CAST(quantity AS BIGINT) * units_per_pack) AS units, "
            "SUM(total_price_pence) AS spend FROM purchase_records "
            "WHERE status = 'matched' AND benchmark_excluded = false "
            "AND order_date BETWEEN :start AND :end GROUP BY product_id, trust_id"
        )
        timings = []

        def reference_run() -> None:
            with unit_of_work(self.state.session_factory) as session:
                t = time.perf_counter()
                session.execute(text(reference_sql), {"start": window.start, "end": window.end})
                timings.append(time.perf_counter() - t)
                session.execute(text("DROP TABLE reference_totals"))

        # the reference once before the refresh as well, so that both start with the raw
        # lines as warm in the page cache as each other (the best of its runs is kept)
        log("reference: one SQL statement for the per-trust aggregation")
        reference_run()
        started = last[0] = time.perf_counter()
        with unit_of_work(self.state.session_factory) as session:
            products = rollups.refresh_all(session, progress=progress)
        refresh = time.perf_counter() - started
        log("reference again")
        reference_run()
        reference = min(timings)
        self.results["full_refresh"] = {
            "seconds": round(refresh, 2),
            "stages_seconds": {k: round(v, 2) for k, v in stages.items()},
            "products_with_statistics": products,
            "reference_sql_seconds": round(reference, 2),
            "ratio": round(refresh / reference, 2),
            "reference_sql": reference_sql,
        }
        log(
            f"  refresh {refresh:.1f}s, reference {reference:.1f}s, ratio {refresh / reference:.1f}"
        )

    def _csv_file(self, rows: int, path: Path, prefix: str, trust_offset: int = 0) -> Path:
        rng = np.random.default_rng(3 + trust_offset)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            batch = 100_000
            for start in range(0, rows, batch):
                n = min(batch, rows - start)
                product = (len(self.product_ids) * rng.random(n) ** 2).astype(np.int64)
                day = rng.integers(0, 360, size=n)
                qty = rng.integers(1, 50, size=n)
                total = np.maximum(
                    1, qty * self.units_per_pack[product] * self.base_price[product] // 10
                )
                gtins = [gtin(int(p))[1:] for p in product]
                for i in range(n):
                    writer.writerow(
                        (
                            f"{prefix}{(start + i) // 10}",
                            (start + i) % 10 + 1,
                            (TODAY - timedelta(days=int(day[i]))).isoformat(),
                            "Benchmark Supplies Ltd",
                            "",
                            gtins[i],
                            "benchmark import line",
                            int(qty[i]),
                            "",
                            int(total[i]),
                        )
                    )
        return path

    def _import(self, path: Path, trust_ods: str) -> tuple[float, object, float]:
        timings = {"refresh": 0.0}
        real_refresh = service.refresh

        def timed_refresh(session, changes):
            t = time.perf_counter()
            real_refresh(session, changes)
            timings["refresh"] += time.perf_counter() - t

        service.refresh = timed_refresh
        try:
            started = time.perf_counter()
            with unit_of_work(self.state.session_factory) as session, path.open("rb") as fh:
                trust = service.find_trust(session, trust_ods)
                result = service.import_purchases(
                    session, ACTOR, trust, fh, "csv", filename=path.name
                )
            return time.perf_counter() - started, result, timings["refresh"]
        finally:
            service.refresh = real_refresh

    def incremental(self, workdir: Path) -> None:
        """Two imports of 10,000 new lines, for two trusts: the first comes right after the
        full refresh replaced the caches' tables (their pages not yet read back into the
        server's buffers), the second as any later import would."""
        runs = []
        for i, trust in enumerate(("B0001", "B0002")):
            log(f"incremental: import 10,000 new lines for {trust}")
            path = self._csv_file(
                10_000, workdir / "incremental.csv", f"INC{RUN}-{i}-", trust_offset=1 + i
            )
            seconds, result, refresh = self._import(path, trust)
            runs.append(
                {
                    "trust": trust,
                    "import_seconds_total": round(seconds, 2),
                    "refresh_seconds": round(refresh, 2),
                    "imported": result.imported,
                    "matched": result.matched,
                }
            )
            log(f"  import {seconds:.2f}s of which refresh {refresh:.2f}s")
        self.results["incremental_10k"] = {
            "after_full_refresh": runs[0],
            "next": runs[1],
        }

    def throughput(self, workdir: Path) -> None:
        rows = self.args.import_rows
        log(f"import throughput: {rows:,} rows")
        path = self._csv_file(rows, workdir / "throughput.csv", f"THR{RUN}-", trust_offset=2)
        size = path.stat().st_size
        seconds, result, refresh = self._import(path, "B0002")
        entry = {
            "rows": rows,
            "file_bytes": size,
            "seconds": round(seconds, 1),
            "rows_per_second": round(rows / seconds),
            "of_which_refresh_seconds": round(refresh, 1),
            "imported": result.imported,
        }
        if self.is_pg:
            connection = self.raw()
            try:
                cursor = connection.cursor()
                cursor.execute(
                    "CREATE TEMP TABLE copy_target (po_number text, line int, order_date date, "
                    "supplier_name text, supplier_sku text, gtin text, description text, quantity int, "
                    "units_per_pack int, total_price_pence bigint)"
                )
                started = time.perf_counter()
                with (
                    path.open("rb") as fh,
                    cursor.copy(
                        "COPY copy_target FROM STDIN WITH (FORMAT csv, HEADER true)"
                    ) as copy,
                ):
                    while data := fh.read(1 << 20):
                        copy.write(data)
                copy_seconds = time.perf_counter() - started
                connection.rollback()
            finally:
                connection.close()
            entry["copy_seconds"] = round(copy_seconds, 2)
            entry["copy_rows_per_second"] = round(rows / copy_seconds)
            entry["ratio_to_copy"] = round(seconds / copy_seconds, 1)
        self.results["import_throughput"] = entry
        log(f"  {entry}")

    def peak_rss(self, workdir: Path) -> None:
        sizes = [r for r in self.args.rss_rows if r]
        out = []
        for rows in sizes:
            path = self._csv_file(
                rows, workdir / f"rss-{rows}.csv", f"RSS{RUN}-{rows}-", trust_offset=3
            )
            log(f"peak RSS: CLI import of {rows:,} rows ({path.stat().st_size / 1e6:.0f} MB)")
            env = dict(os.environ, DATABASE_URL=self.url, LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
            started = time.perf_counter()
            process = subprocess.run(
                [
                    "/usr/bin/time",
                    "-v",
                    sys.executable,
                    "-m",
                    "marketplace",
                    "pricing",
                    "import",
                    str(path),
                    "--trust",
                    "B0003",
                    "--quiet",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.perf_counter() - started
            rss_kb = next(
                int(line.split(":")[1])
                for line in process.stderr.splitlines()
                if "Maximum resident set size" in line
            )
            out.append(
                {
                    "rows": rows,
                    "file_mb": round(path.stat().st_size / 1e6, 1),
                    "peak_rss_mb": round(rss_kb / 1024, 1),
                    "seconds": round(seconds, 1),
                    "exit_status": process.returncode,
                    "summary": process.stdout.strip().splitlines()[:1],
                }
            )
            log(f"  {out[-1]}")
            path.unlink()
        self.results["peak_rss"] = out

    def latency(self) -> None:
        client = self.app.test_client()
        client.get("/api/v1/price-variance")  # warm
        paths = [
            "/api/v1/price-variance",
            "/api/v1/price-variance?sort=spread",
            "/api/v1/price-variance?benchmark=p25",
            "/api/v1/price-variance?limit=100",
            "/api/v1/price-variance?category=BENCH",
        ]
        first = client.get("/api/v1/price-variance").get_json()
        if first.get("next_cursor"):
            paths.append(f"/api/v1/price-variance?cursor={first['next_cursor']}")
        samples = []
        for i in range(self.args.requests):
            path = paths[i % len(paths)]
            t = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)
        product = first["items"][0]["product_id"] if first["items"] else None
        detail = []
        savings = []
        for _ in range(50):
            if product:
                t = time.perf_counter()
                client.get(f"/api/v1/products/{product}/price-variance")
                detail.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            client.get("/api/v1/trusts/B0005/savings")
            savings.append((time.perf_counter() - t) * 1000)

        # another window: computed from the rollups, not read from the caches
        other = f"from={TODAY - timedelta(days=300)}&to={TODAY - timedelta(days=30)}"
        computed = {"ranking": [], "trust_savings": [], "product_variance": []}
        for i in range(20):
            if i < 3:
                t = time.perf_counter()
                client.get(f"/api/v1/price-variance?{other}")
                computed["ranking"].append((time.perf_counter() - t) * 1000)
            if i < 5:
                t = time.perf_counter()
                client.get(f"/api/v1/trusts/B0005/savings?{other}")
                computed["trust_savings"].append((time.perf_counter() - t) * 1000)
            if product:
                t = time.perf_counter()
                client.get(f"/api/v1/products/{product}/price-variance?{other}")
                computed["product_variance"].append((time.perf_counter() - t) * 1000)

        def p95(values):
            return round(float(np.percentile(values, 95)), 1) if values else None

        self.results["latency_ms"] = {
            "price_variance_p50": round(statistics.median(samples), 1),
            "price_variance_p95": p95(samples),
            "requests": len(samples),
            "product_variance_p95": p95(detail),
            "trust_savings_p95": p95(savings),
            "total_products_listed": first["totals"]["products"],
            "other_window": other,
            "other_window_ranking_median": round(statistics.median(computed["ranking"]), 1),
            "other_window_trust_savings_median": round(
                statistics.median(computed["trust_savings"]), 1
            ),
            "other_window_product_variance_p95": p95(computed["product_variance"]),
        }
        log(f"  {self.results['latency_ms']}")

    def open_existing(self) -> None:
        """Use the data an earlier run generated (the same ``--products``), migrated to the
        current schema."""
        self.app = create_app(self.app_settings())
        self.state = self.app.extensions["marketplace"]
        migrate.upgrade(self.state.settings)
        self.catalogue_arrays()

    def latency_only(self) -> dict[str, object]:
        """Re-measure the read latencies on a database an earlier run filled."""
        self.open_existing()
        with unit_of_work(self.state.session_factory) as session:
            rollups.rebuild_totals(session)
        self.latency()
        return self.results

    def rss_only(self) -> dict[str, object]:
        """Measure the import's peak RSS on a database an earlier run filled (the same
        ``--products``): memory does not depend on what else the machine is doing, so this part
        can run apart from the timed ones."""
        self.open_existing()
        with tempfile.TemporaryDirectory(dir=self.args.workdir) as tmp:
            self.peak_rss(Path(tmp))
        return self.results

    def run(self) -> dict[str, object]:
        a = self.args
        self.results.update(
            {
                "database": "postgresql" if self.is_pg else "sqlite",
                "lines_generated": 0 if a.reuse else a.lines,
                "trusts": a.trusts,
                "products": a.products,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "memory_gb": round(
                        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1
                    ),
                },
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        if a.reuse:
            self.open_existing()
        else:
            self.reset()
            self.setup_catalogue()
            self.generate_lines()
        if a.generate_only:
            return self.results
        with unit_of_work(self.state.session_factory) as session:
            self.results["purchase_records"] = session.query(PurchaseRecord).count()
        self.full_refresh()
        self.latency()
        with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
            workdir = Path(tmp)
            self.incremental(workdir)
            if a.import_rows:
                self.throughput(workdir)
            if a.rss_rows:
                self.peak_rss(workdir)
        self.results["peak_rss_of_this_process_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        return self.results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--trusts", type=int, default=200)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument(
        "--import-rows", type=int, default=200_000, help="rows for the throughput test (0: skip)"
    )
    parser.add_argument(
        "--rss-rows", type=int, nargs="*", default=[], help="CSV sizes (rows) for the peak-RSS test"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workdir", default=None, help="where to write the generated CSV files")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="reuse the data of an earlier run; measure reads",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure on the lines an earlier run generated instead of generating them again",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="generate the lines, measure nothing"
    )
    parser.add_argument(
        "--rss-only",
        action="store_true",
        help="reuse the data of an earlier run; measure the import's peak RSS (--rss-rows)",
    )
    args = parser.parse_args()
    bench = Bench(args)
    if args.latency_only:
        results = bench.latency_only()
    elif args.rss_only:
        results = bench.rss_only()
    else:
        results = bench.run()
    database = "postgresql" if bench.is_pg else "sqlite"
    part = "-rss" if args.rss_only else "-latency" if args.latency_only else ""
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"pricing-{database}{part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
