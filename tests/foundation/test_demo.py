"""`marketplace demo --no-serve`: loads realistic data twice without duplicates, and the printed
tokens work."""

from __future__ import annotations

import re

from click.testing import CliRunner
from sqlalchemy import func, select

from marketplace import cli
from marketplace.accounts.models import ApiToken, Organisation, Role, User
from marketplace.models import metadata

TOKEN_LINE = re.compile(r"^\s+(\w+)\s+(\S+@\S+)\s+(mkt_\S+)$", re.MULTILINE)


def _row_counts(db) -> dict[str, int]:
    skip = {"api_tokens", "audit_events"}  # tokens are re-issued each run; the audit log grows
    return {
        table.name: db.scalar(select(func.count()).select_from(table))
        for table in metadata.sorted_tables
        if table.name not in skip
    }


def test_demo_loads_twice_without_duplicates_and_tokens_work(
    app, migrated, monkeypatch, client, db
):
    monkeypatch.setenv("DATABASE_URL", migrated.database_url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setattr(cli, "_state", None)
    runner = CliRunner()

    first = runner.invoke(cli.main, ["demo", "--no-serve"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    counts = _row_counts(db)
    db.rollback()
    second = runner.invoke(cli.main, ["demo", "--no-serve"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert _row_counts(db) == counts

    assert db.scalar(select(func.count(Organisation.id)).where(Organisation.type == "trust")) >= 20
    roles = set(db.scalars(select(User.role)))
    assert roles == set(Role)

    tokens = {role: token for role, _email, token in TOKEN_LINE.findall(second.stdout)}
    assert set(tokens) == {"operator", "buyer", "supplier", "budget_manager", "budget_holder"}
    for role, token in tokens.items():
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, role
        assert me.get_json()["user"]["role"] == role
    old = {role: token for role, _email, token in TOKEN_LINE.findall(first.stdout)}
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {old['buyer']}"}).status_code
        == 401
    )
    live = db.scalar(select(func.count(ApiToken.id)).where(ApiToken.revoked_at.is_(None)))
    assert live == len(tokens)
    assert "curl" in second.stdout
    cli._state.engine.dispose()
