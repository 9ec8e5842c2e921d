"""Re-run every benchmark, one after the other, and keep each one's figures as JSON.

    python benchmarks/run_all.py                       # the issues' sizes (takes hours on 2 cores)
    python benchmarks/run_all.py --quick               # small sizes: checks every script still runs
    python benchmarks/run_all.py --only search budgets # some of them

Each benchmark runs as its own process, in the order below, so no two measure at the same time.
PostgreSQL benchmarks use one scratch database each on the server of ``--postgres`` (created
when missing, and emptied by the benchmark: never point this at a database you need); SQLite
files go to ``--scratch``. Figures go to ``benchmarks/results/NAME.json``; the pages under
``docs/benchmarks/`` say how to read them. The exit status is non-zero if any benchmark failed
(a benchmark fails when a correctness check in it fails, e.g. an oversold offer or an overspent
budget, or when it could not run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    database: str  # "postgresql", "sqlite", or "none" (the script makes its own)
    full: tuple[str, ...]
    quick: tuple[str, ...]


BENCHMARKS = (
    Benchmark("search-sqlite", "search.py", "sqlite", (), ("--products", "3000", "--offers", "9000", "--requests", "20")),
    Benchmark("search-postgresql", "search.py", "postgresql", (), ("--products", "3000", "--offers", "9000", "--requests", "20")),
    Benchmark(
        "pricing-sqlite",
        "pricing.py",
        "sqlite",
        ("--lines", "1000000"),
        ("--lines", "20000", "--products", "500", "--trusts", "20", "--import-rows", "5000", "--requests", "20"),
    ),
    Benchmark(
        "pricing-postgresql",
        "pricing.py",
        "postgresql",
        ("--lines", "10000000", "--import-rows", "1000000"),
        ("--lines", "20000", "--products", "500", "--trusts", "20", "--import-rows", "5000", "--requests", "20"),
    ),
    Benchmark(
        "pricing-rss-postgresql",
        "pricing.py",
        "postgresql",
        ("--rss-only", "--rss-rows", "10500000"),
        ("--rss-only", "--products", "500", "--rss-rows", "20000"),
    ),
    Benchmark("budgets-postgresql", "budgets.py", "postgresql", (), ("--clients", "4", "--holds", "10")),
    Benchmark(
        "orders-postgresql",
        "orders.py",
        "postgresql",
        ("--products", "100000", "--offers", "300000", "--workers", "4", "--clients", "50", "--duration", "30", "--stock", "25"),
        ("--products", "2000", "--offers", "6000", "--workers", "2", "--clients", "4", "--duration", "5", "--stock", "5"),
    ),
    Benchmark(
        "load-postgresql",
        "load.py",
        "postgresql",
        ("--products", "100000", "--offers", "300000", "--workers", "4", "--clients", "32", "--rate", "7", "--duration", "180"),
        ("--products", "300", "--offers", "900", "--workers", "1", "--clients", "2", "--rate", "0", "--duration", "3", "--warmup", "1"),
    ),
    Benchmark("request-overhead", "request_overhead.py", "none", ("-n", "2000"), ("-n", "50")),
)  # fmt: skip

# Benchmarks that rebuild their data each run take --reset; pricing always starts afresh, and
# its memory run reuses the data the pricing run left (so it must come after it).
RESETS = {"search.py", "orders.py"}
# load.py keeps its generated catalogue between runs of the same size (it takes minutes to
# build); a quick run builds its own small one.
QUICK_RESETS = RESETS | {"load.py"}
SHARED_DATABASE = {"pricing-rss-postgresql": "pricing-postgresql"}
OUTPUT_FLAG = {"pricing.py": "--out"}


def database_url(bench: Benchmark, postgres: str, scratch: Path) -> str | None:
    if bench.database == "none":
        return None
    owner = SHARED_DATABASE.get(bench.name, bench.name)
    name = "bench_" + owner.removesuffix("-postgresql").removesuffix("-sqlite").replace("-", "_")
    if bench.database == "sqlite":
        return f"sqlite:///{scratch / (name + '.sqlite3')}"
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{postgres}/{name}"


def command(bench: Benchmark, url: str | None, quick: bool) -> list[str]:
    args = [sys.executable, str(ROOT / "benchmarks" / bench.script)]
    if url is None:  # it prints its figures; keep them from the log
        return [*args, *(bench.quick if quick else bench.full)]
    args += ["--database-url", url, *(bench.quick if quick else bench.full)]
    if bench.script in (QUICK_RESETS if quick else RESETS):
        args.append("--reset")
    args += [OUTPUT_FLAG.get(bench.script, "--json"), str(RESULTS / f"{bench.name}.json")]
    return args


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the scripts")
    parser.add_argument("--only", nargs="*", default=None, help="names or prefixes to run")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--scratch", type=Path, default=Path(tempfile.gettempdir()), help="for SQLite files"
    )
    args = parser.parse_args()

    chosen = [
        b for b in BENCHMARKS if not args.only or any(b.name.startswith(o) for o in args.only)
    ]
    if not chosen:
        parser.error(f"no benchmark matches {args.only}; names: {[b.name for b in BENCHMARKS]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    outcomes: list[tuple[str, int, float]] = []
    for bench in chosen:
        cmd = command(bench, database_url(bench, args.postgres, args.scratch), args.quick)
        print(f"\n== {bench.name}: {' '.join(cmd)}", flush=True)
        print(f"   load average before: {os.getloadavg()[0]:.2f}", flush=True)
        started = time.monotonic()
        status = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        outcomes.append((bench.name, status, time.monotonic() - started))
    print("\n== summary")
    for name, status, seconds in outcomes:
        verdict = "ok" if status == 0 else f"FAILED (exit {status})"
        print(f"   {name:<24} {verdict:<18} {seconds:7.0f} s  {RESULTS / (name + '.json')}")
    return 0 if all(status == 0 for _, status, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
