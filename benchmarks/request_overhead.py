"""What rate limiting and metrics add to one request.

Serves ``GET /api/v1/me`` (one token lookup) through Flask's test client, in-process, on a
temporary SQLite database: with rate limits off, on memory storage, and on Redis (``--redis``).
Also times ``metrics.observe_request`` alone (set PROMETHEUS_MULTIPROC_DIR to an empty
directory to time multiprocess mode). Prints one line per case: median and p95 per request.

    .venv/bin/python benchmarks/request_overhead.py [--redis URL] [-n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
import uuid
from pathlib import Path

from marketplace import create_app, metrics, migrate
from marketplace.accounts import service as accounts
from marketplace.accounts.models import OrgType, Role
from marketplace.accounts.service import Principal
from marketplace.config import Settings


def _token(app) -> str:
    actor = Principal.system("benchmark")
    with app.extensions["marketplace"].session_factory.begin() as session:
        org = accounts.create_organisation(
            session, actor, type=OrgType.TRUST, name="Bench Trust", ods_code="BEN01"
        )
        user = accounts.create_user(
            session, actor, organisation_id=org.id, role=Role.BUYER, email="bench@trust.example"
        )
        return accounts.issue_token(session, actor, user).secret


def _time_requests(app, headers, n: int) -> list[float]:
    client = app.test_client()
    for _ in range(50):  # warm up
        client.get("/api/v1/me", headers=headers)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get("/api/v1/me", headers=headers)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return samples


def _line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{name:<28} median {statistics.median(ordered) * 1e6:8.1f} µs   p95 {p95 * 1e6:8.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per case")
    parser.add_argument("--redis", help="a Redis URL, to time Redis storage too")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp())
    base = Settings(
        database_url=f"sqlite:///{root / 'bench.sqlite3'}",
        instance_dir=root,
        log_level="WARNING",
        rate_limit_enabled=False,
    )
    migrate.upgrade(base)
    unlimited = create_app(base)
    headers = {"Authorization": f"Bearer {_token(unlimited)}"}
    limits = {"rate_limit_authenticated": "100000000 per minute"}
    cases = [("rate limits off", unlimited)]
    cases.append(
        ("rate limits, memory", create_app(base.with_overrides(rate_limit_enabled=True, **limits)))
    )
    if args.redis:
        redis_settings = base.with_overrides(
            rate_limit_enabled=True,
            redis_url=args.redis,
            rate_limit_key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
            **limits,
        )
        cases.append(("rate limits, Redis", create_app(redis_settings)))
    for name, app in cases:
        print(_line(name, _time_requests(app, headers, args.n)), flush=True)
    per_call = min(
        timeit.repeat(
            lambda: metrics.observe_request("accounts.me", "GET", 200, 0.001),
            number=10_000,
            repeat=5,
        )
    )
    mode = "multiprocess" if metrics.multiprocess_mode() else "one process"
    print(f"observe_request ({mode}): {per_call / 10_000 * 1e6:.2f} µs per request")


if __name__ == "__main__":
    main()
