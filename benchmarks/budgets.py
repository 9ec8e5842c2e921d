"""Benchmark: holds per second on ONE contended budget, and the cost over a bare guarded UPDATE.

    python benchmarks/budgets.py --database-url postgresql://postgres@127.0.0.1:5432/test_budgets

Three runs, each with ``--clients`` threads (default 32), each thread with its own database
connection, all released at the same instant:

1. ``ledger``: every client places ``--holds`` holds of ``--amount`` pence through
   ``budgets.ledger.hold`` (audit event, guarded UPDATE of the balance row, ledger insert,
   commit), one transaction per hold, on a budget that can afford them all.
2. ``bare``: the same number of guarded single-statement UPDATEs
   (``UPDATE ... SET available = available - :x WHERE id = 1 AND available >= :x``), one
   transaction each, with psycopg on the same database: the floor any design pays for a
   serialised balance.
3. ``overspend``: the ledger run again on a budget that can afford only half of the attempts.
   Exactly that half must succeed, and ``verify_ledger`` must find the ledger and the cached
   balances in agreement (zero overspend).

The script migrates the database (Alembic) and adds its own commissioner, users and budgets
each run; the bare run uses a scratch table it drops afterwards. Use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import event, text

from marketplace import migrate
from marketplace.accounts import service as accounts
from marketplace.accounts.models import OrgType, Role
from marketplace.accounts.service import Principal
from marketplace.budgets import ledger
from marketplace.budgets import service as budgets
from marketplace.budgets.models import Budget, ManagementType
from marketplace.config import Settings, normalise_database_url
from marketplace.db import begin_write, make_engine, make_session_factory, utcnow
from marketplace.errors import Conflict

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test_budgets"
SYSTEM = Principal.system("benchmark")


@dataclass
class Tally:
    """What one client did: holds that succeeded and were refused, seconds it held the budget's
    row lock after its guarded statement returned (until its commit ended), CPU seconds."""

    ok: int = 0
    refused: int = 0
    locked: float = 0.0
    cpu: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class Run:
    name: str
    clients: int
    attempts: int
    succeeded: int
    refused: int
    seconds: float
    lock_held_ms: float  # mean per attempt: guarded statement returned -> commit done
    client_cpu_ms: float  # mean per attempt, the client's own CPU

    @classmethod
    def of(cls, name: str, clients: int, tally: Tally, seconds: float) -> Run:
        attempts = tally.ok + tally.refused
        return cls(
            name,
            clients,
            attempts,
            tally.ok,
            tally.refused,
            seconds,
            tally.locked / attempts * 1000,
            tally.cpu / attempts * 1000,
        )

    @property
    def per_second(self) -> float:
        return self.attempts / self.seconds


def _at_once(
    clients: int, prepare: Callable[[int], Callable[[], Tally]], processes: bool
) -> tuple[Tally, float]:
    """Start ``clients`` clients (threads or processes); each calls ``prepare(i)`` (connect),
    waits until all are ready, then runs the work it returned. (their tallies, seconds)."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(clients + 1) if processes else threading.Barrier(clients + 1)
    results: Any = context.Queue() if processes else queue.Queue()

    def run(i: int) -> None:
        try:
            work = prepare(i)
            barrier.wait()
            results.put(("ok", work()))
        except BaseException as error:  # surfaced below
            results.put(("error", repr(error)))

    kind = context.Process if processes else threading.Thread
    workers = [kind(target=run, args=(i,)) for i in range(clients)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    outcomes = [results.get() for _ in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    errors = [detail for status, detail in outcomes if status == "error"]
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return sum((detail for _status, detail in outcomes), Tally()), seconds


def _setup(factory, allocation: int) -> tuple[str, Principal]:
    """A fresh commissioner, manager, holder and notional budget (the manager spends it)."""
    tag = uuid.uuid4().hex[:8]
    with factory.begin() as session:
        org = accounts.create_organisation(
            session, SYSTEM, type=OrgType.COMMISSIONER, name=f"Benchmark ICB {tag}"
        )
        manager = accounts.create_user(
            session,
            SYSTEM,
            organisation_id=org.id,
            role=Role.BUDGET_MANAGER,
            email=f"manager-{tag}@bench.example",
        )
        holder = accounts.create_user(
            session,
            SYSTEM,
            organisation_id=org.id,
            role=Role.BUDGET_HOLDER,
            email=f"holder-{tag}@bench.example",
        )
        actor = Principal.for_user(manager)
        today = utcnow().date()
        budget = budgets.create_budget(
            session,
            actor,
            holder_id=holder.id,
            management_type=ManagementType.NOTIONAL,
            period_start=today - timedelta(days=1),
            period_end=today + timedelta(days=364),
            approval_threshold_pence=0,
            allocation_pence=allocation,
            reference=f"bench-{tag}",
        )
        return budget.id, actor


def ledger_run(settings: Settings, name: str, args: argparse.Namespace, affordable: int) -> Run:
    engine = make_engine(settings, pool_size=2, max_overflow=0)
    factory = make_session_factory(engine)
    budget_id, actor = _setup(factory, allocation=affordable * args.amount)
    engine.dispose()

    def prepare(i: int) -> Callable[[], Tally]:
        client_engine = make_engine(settings, pool_size=1, max_overflow=0)
        client = make_session_factory(client_engine)
        with client_engine.connect():  # connected before the start
            pass
        tally = Tally()
        locked_at: list[float] = []

        @event.listens_for(client_engine, "after_cursor_execute")
        def _locked(_conn, _cursor, statement, *_args) -> None:
            if statement.lstrip().startswith(("WITH moved", "UPDATE budgets")):
                locked_at.append(time.perf_counter())

        @event.listens_for(client, "after_commit")
        def _released(_session) -> None:
            if locked_at:
                tally.locked += time.perf_counter() - locked_at.pop()

        def work() -> Tally:
            cpu = time.thread_time()
            for n in range(args.holds):
                with client() as session:
                    begin_write(session)
                    try:
                        budget = session.get(Budget, budget_id)
                        ledger.hold(session, actor, budget, args.amount, order_ref=f"b-{i}-{n}")
                        session.commit()
                        tally.ok += 1
                    except Conflict:
                        session.rollback()
                        tally.refused += 1
                    locked_at.clear()
            tally.cpu = time.thread_time() - cpu
            client_engine.dispose()
            return tally

        return work

    tally, seconds = _at_once(args.clients, prepare, args.processes)
    succeeded = tally.ok
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    with make_session_factory(engine)() as session:
        check = ledger.verify_ledger(session, budget_id)
        budget = session.get(Budget, budget_id)
        if not check.ok:
            raise SystemExit(f"{name}: verify_ledger found problems: {check.problems}")
        attempts = args.clients * args.holds
        if succeeded != min(affordable, attempts) or budget.available_pence < 0:
            raise SystemExit(f"{name}: {succeeded} holds succeeded, {affordable} were affordable")
        if budget.held_pence != succeeded * args.amount:
            raise SystemExit(
                f"{name}: held {budget.held_pence}, expected {succeeded * args.amount}"
            )
    engine.dispose()
    return Run.of(name, args.clients, tally, seconds)


def bare_run(url: str, args: argparse.Namespace) -> Run:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    attempts = args.clients * args.holds
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_bare_balance")
        conn.execute(
            "CREATE TABLE bench_bare_balance (id int PRIMARY KEY, available bigint NOT NULL)"
        )
        conn.execute("INSERT INTO bench_bare_balance VALUES (1, %s)", (attempts * args.amount,))

    def prepare(_i: int) -> Callable[[], Tally]:
        conn = psycopg.connect(dsn)

        def work() -> Tally:
            tally = Tally()
            cpu = time.thread_time()
            for _ in range(args.holds):
                cursor = conn.execute(
                    "UPDATE bench_bare_balance SET available = available - %s "
                    "WHERE id = 1 AND available >= %s",
                    (args.amount, args.amount),
                )
                locked = time.perf_counter()
                conn.commit()
                tally.locked += time.perf_counter() - locked
                if cursor.rowcount == 1:
                    tally.ok += 1
                else:
                    tally.refused += 1
            tally.cpu = time.thread_time() - cpu
            conn.close()
            return tally

        return work

    try:
        tally, seconds = _at_once(args.clients, prepare, args.processes)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE bench_bare_balance")
    return Run.of("bare", args.clients, tally, seconds)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--holds", type=int, default=50, help="holds per client")
    parser.add_argument("--amount", type=int, default=100, help="pence per hold")
    parser.add_argument(
        "--threads",
        dest="processes",
        action="store_false",
        help="clients are threads of one process (default: one process per client, like "
        "gunicorn's single-threaded workers)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    url = normalise_database_url(args.database_url)
    if not url.startswith("postgresql"):
        parser.error("the benchmark measures PostgreSQL: give a postgresql:// URL")
    settings = Settings(database_url=url, log_level="WARNING")
    migrate.upgrade(settings)
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        server = connection.execute(text("SHOW server_version")).scalar()
    engine.dispose()

    total = args.clients * args.holds
    load_before = os.getloadavg()[0]
    ledger_result = ledger_run(settings, "ledger", args, total)
    bare_result = bare_run(url, args)
    overspend = ledger_run(settings, "overspend", args, total // 2)
    load_after = os.getloadavg()[0]

    ratio = bare_result.per_second / ledger_result.per_second
    lock_ratio = ledger_result.lock_held_ms / bare_result.lock_held_ms
    report = {
        "machine": {
            **machine(),
            "postgresql": server,
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        },
        "clients": args.clients,
        "client_mode": "processes" if args.processes else "threads",
        "holds_per_client": args.holds,
        "runs": [
            {**asdict(r), "per_second": round(r.per_second, 1)}
            for r in (ledger_result, bare_result, overspend)
        ],
        "ratio_bare_to_ledger": round(ratio, 2),
        "lock_held_ratio": round(lock_ratio, 2),
        "overspend": {
            "affordable": total // 2,
            "succeeded": overspend.succeeded,
            "refused": overspend.refused,
            "verify_ledger": "ok",
        },
    }
    mode = "processes" if args.processes else "threads"
    print(
        f"PostgreSQL {server}; {args.clients} clients ({mode}) x {args.holds} holds of "
        f"{args.amount}p; load average {load_before:.2f} before, {load_after:.2f} after"
    )
    for r in (ledger_result, bare_result, overspend):
        print(
            f"  {r.name:<10} {r.attempts:>6} attempts  {r.succeeded:>6} ok  {r.refused:>6} refused"
            f"  {r.seconds:7.2f} s  {r.per_second:8.1f} /s  lock held {r.lock_held_ms:6.2f} ms"
            f"  client CPU {r.client_cpu_ms:6.2f} ms"
        )
    print(f"  ledger is {ratio:.2f}x the bare guarded UPDATE's time per hold (target <= 3x)")
    print(
        f"  row lock held per hold: ledger {ledger_result.lock_held_ms:.2f} ms, bare "
        f"{bare_result.lock_held_ms:.2f} ms ({lock_ratio:.2f}x)"
    )
    print(
        f"  overspend run: {overspend.succeeded} of {overspend.attempts} succeeded, exactly the "
        f"{total // 2} affordable; verify_ledger ok"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
