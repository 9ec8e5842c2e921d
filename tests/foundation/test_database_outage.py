"""The database goes away and comes back, on a private throwaway PostgreSQL cluster (never the
shared server): while it is down every request answers a clear 503 problem
(``database-unavailable``; ``/readyz`` says ``database-unreachable``), never a 500, and nothing is
half-written; once it is back the same application serves again, without a restart (the pool
pings and replaces its dead connections)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from marketplace import create_app, migrate
from marketplace.accounts.models import Role
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Product
from marketplace.config import Settings
from tests.budgets.live import live_server, request
from tests.served import free_port
from tests.support import Factory, assert_problem


def _bindir() -> Path | None:
    """PostgreSQL's server programs (initdb, pg_ctl): Debian keeps them off the PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


class Cluster:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port. initdb
    refuses to run as root, so as root the cluster belongs to the ``postgres`` user."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"
        self.root = root
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [*self.as_user, str(self.bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{program} failed: {result.stderr[-800:]} {log[-800:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=check)


@pytest.fixture
def cluster(settings) -> Iterator[Cluster]:
    if not settings.is_postgresql:
        pytest.skip(
            "runs with the PostgreSQL suite (MARKETPLACE_TEST_DATABASE_URL): it starts and "
            "stops its own private PostgreSQL cluster"
        )
    bindir = _bindir()
    if bindir is None:
        pytest.skip("initdb is not available (the PostgreSQL server package is not installed)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root, and runuser is not available to run initdb as postgres")
    root = Path(tempfile.mkdtemp(prefix="marketplace-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop("immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_requests_answer_503_while_the_database_is_down_and_recover_without_a_restart(
    cluster, tmp_path
):
    settings = Settings(database_url=cluster.url, instance_dir=tmp_path, log_level="CRITICAL")
    migrate.upgrade(settings)
    app = create_app(settings)
    state = app.extensions["marketplace"]
    supplier = Factory(state.session_factory).actor(Role.SUPPLIER)
    with state.session_factory.begin() as session:
        catalog.load_categories(session, catalog.bundled_category_rows())

    with live_server(app) as address:

        def call(method: str, path: str, body=None, headers=None):
            return request(address, method, path, body, headers)

        def create_product(name: str):
            product = {"name": name, "category_code": "18424300", "units_per_pack": 100}
            return call("POST", "/api/v1/products", product, supplier.headers)

        assert create_product("Gloves before")[0] == 201
        assert call("GET", "/api/v1/me", headers=supplier.headers)[0] == 200
        assert call("GET", "/readyz")[0] == 200  # the pool now holds live connections

        cluster.stop()
        started = time.monotonic()
        for status, problem, headers in (
            call("GET", "/api/v1/me", headers=supplier.headers),  # authentication reads it
            call("GET", "/api/v1/products"),  # a public read
            create_product("Gloves during"),  # a write
        ):
            assert status == 503, problem
            assert headers["Content-Type"] == "application/problem+json"
            assert problem["type"].endswith("/database-unavailable")
            assert "database" in problem["detail"]
            assert problem["request_id"]
            assert headers["Retry-After"]
        status, problem, _ = call("GET", "/readyz")
        assert (status, problem["type"].rsplit("/", 1)[1]) == (503, "database-unreachable")
        assert time.monotonic() - started < 10  # refused at once, not left hanging

        cluster.start()
        # The same application, no restart: dead pooled connections are replaced on checkout.
        assert call("GET", "/readyz")[0] == 200
        assert call("GET", "/api/v1/me", headers=supplier.headers)[0] == 200
        assert create_product("Gloves after")[0] == 201
    with psycopg.connect(cluster.url.replace("+psycopg", "")) as connection:
        names = [r[0] for r in connection.execute("SELECT name FROM products ORDER BY name")]
    assert names == ["Gloves after", "Gloves before"]  # nothing written during the outage
    state.engine.dispose()


def test_a_connection_lost_at_commit_is_a_503_and_writes_nothing(
    client, factory, session_factory, monkeypatch
):
    supplier = factory.actor(Role.SUPPLIER)
    with session_factory.begin() as session:
        catalog.load_categories(session, catalog.bundled_category_rows())

    def lost(self):
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Session, "commit", lost)
    response = client.post(
        "/api/v1/products",
        json={"name": "Gloves", "category_code": "18424300", "units_per_pack": 100},
        headers=supplier.headers,
    )
    monkeypatch.undo()
    assert_problem(response, 503, code="database-unavailable")
    with session_factory() as session:
        assert session.scalar(select(func.count(Product.id))) == 0
