"""Test fixtures shared by the whole suite.

The database under test is SQLite (a temporary file) unless ``MARKETPLACE_TEST_DATABASE_URL``
names a PostgreSQL database, in which case the same tests run there. Either way the schema is
built by the Alembic migrations (once per run) and emptied between tests.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from marketplace import create_app, migrate
from marketplace.config import Settings, normalise_database_url
from marketplace.models import metadata
from tests.support import Factory

TEST_DATABASE_URL_ENV = "MARKETPLACE_TEST_DATABASE_URL"


def _database_url(tmp_root: Path) -> str:
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        return normalise_database_url(url)
    return f"sqlite:///{tmp_root / 'test.sqlite3'}"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("marketplace")
    # Rate limiting is off for the suite, explicitly, so that no test trips a limit by accident;
    # tests/foundation/test_ratelimit.py builds its own applications with small limits.
    return Settings(
        database_url=_database_url(root),
        instance_dir=root,
        testing=True,
        log_level="WARNING",
        rate_limit_enabled=False,
    )


@pytest.fixture(scope="session")
def is_postgres(settings: Settings) -> bool:
    return settings.is_postgresql


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    """A database migrated from empty to head by Alembic, once per test run."""
    from marketplace.db import make_engine

    engine = make_engine(settings)
    if settings.is_postgresql:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def app(shared_app: Flask) -> Flask:
    """The application over an empty (migrated) database: every test starts from nothing."""
    _empty_all_tables(shared_app.extensions["marketplace"].engine)
    return shared_app


@pytest.fixture(scope="session")
def shared_app(migrated: Settings) -> Iterator[Flask]:
    """One application for the run: building one (the OpenAPI document above all) costs more
    than most tests. Tests that need other settings or extra routes build their own."""
    app = create_app(migrated)
    # Everything alive now (the modules, this application, its OpenAPI document) lives as long
    # as the run: set it aside from the collector, so that the collection before each test
    # (``_empty_all_tables``) looks only at what the tests made.
    gc.freeze()
    yield app
    app.extensions["marketplace"].engine.dispose()


def _empty_all_tables(engine: Engine) -> None:
    # A streamed response a test did not read to the end keeps its own session open (it closes
    # when the stream is closed); collect such abandoned streams before taking table locks.
    gc.collect()
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Fail loudly, not hang, if a session some test leaked still holds a lock.
            connection.execute(text("SET LOCAL lock_timeout = '20s'"))
            _empty_postgresql_tables(connection, tables)
        else:
            # Append-only tables (the budget ledger) refuse DELETE through triggers: set them
            # aside while emptying, and put them back. (PostgreSQL turns them off instead.)
            triggers = connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            ).all()
            for name, _sql in triggers:
                connection.execute(text(f'DROP TRIGGER "{name}"'))
            for table in tables:
                connection.execute(text(f'DELETE FROM "{table}"'))
            # With the triggers aside, full-text indexes kept in step by them must be emptied too.
            fts_tables = connection.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND sql LIKE 'CREATE VIRTUAL TABLE%USING fts5(%' "
                )
            ).scalars()
            for fts in list(fts_tables):
                connection.execute(text(f'INSERT INTO "{fts}"("{fts}") VALUES (\'delete-all\')'))
            for _name, sql in triggers:
                connection.execute(text(sql))


# Tables the migrations make that no model maps: the search postings, kept by a trigger (off
# while the tables are emptied).
POSTGRES_UNMAPPED = ("search_fts_postings",)


def _empty_postgresql_tables(connection, tables: list[str]) -> None:
    """Empty every table and restart the sequences. ``TRUNCATE`` gives each table new files,
    about 5 ms a table on every test; the few rows a test leaves are deleted in a fraction of
    that, with row triggers (the append-only tables' guards, foreign keys) off for the
    transaction, which only a superuser may do: other roles get ``TRUNCATE``."""
    info = connection.info  # kept with the pooled database connection
    if "superuser" not in info:
        info["superuser"] = connection.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar()
        info["sequences"] = (
            connection.execute(
                text(
                    "SELECT relname FROM pg_class "
                    "WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"
                )
            )
            .scalars()
            .all()
        )
    if not info["superuser"]:
        names = ", ".join(f'"{t}"' for t in [*tables, *POSTGRES_UNMAPPED])
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        return
    connection.execute(text("SET LOCAL session_replication_role = replica"))
    for table in [*tables, *POSTGRES_UNMAPPED]:
        connection.execute(text(f'DELETE FROM "{table}"'))
    for sequence in info["sequences"]:
        connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def session_factory(app: Flask):
    return app.extensions["marketplace"].session_factory


@pytest.fixture
def db(session_factory) -> Iterator[Session]:
    """A plain session for arranging and checking data; commit what you arrange."""
    session = session_factory()
    yield session
    session.rollback()
    session.close()


@pytest.fixture
def factory(session_factory) -> Factory:
    return Factory(session_factory)
