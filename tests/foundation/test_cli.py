"""The `marketplace` command: DESIGN §9 contracts (ids and tokens on the last line, one-line
errors with a non-zero exit)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from marketplace import cli
from marketplace.accounts.models import ApiToken, Organisation, User
from marketplace.audit import AuditEvent


@pytest.fixture
def run(app, migrated, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", migrated.database_url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setattr(cli, "_state", None)

    def invoke(*args: str):
        return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)

    yield invoke
    if cli._state is not None:
        cli._state.engine.dispose()


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_orgs_users_tokens_round_trip(run, client, db):
    # each lookup ends its read transaction so that it sees what the CLI committed since
    trust = run(
        "orgs",
        "create",
        "--type",
        "trust",
        "--name",
        "Leeds Teaching Hospitals NHS Trust",
        "--ods",
        "RR8",
    )
    assert trust.exit_code == 0, trust.output
    trust_id = last_line(trust.stdout)
    assert db.get(Organisation, trust_id).ods_code == "RR8"
    db.rollback()

    supplier = run(
        "orgs",
        "create",
        "--type",
        "supplier",
        "--name",
        "Pennine Ltd",
        "--companies-house",
        "07322145",
        "--sme",
    )
    supplier_org = db.get(Organisation, last_line(supplier.stdout))
    assert supplier_org.is_sme is True
    db.rollback()

    user = run(
        "users",
        "create",
        "--org",
        "RR8",
        "--role",
        "buyer",
        "--email",
        "ann@rr8.example",
        "--name",
        "Ann",
    )
    assert user.exit_code == 0, user.output
    user_id = last_line(user.stdout)
    assert db.get(User, user_id).organisation_id == trust_id
    db.rollback()

    by_id = run(
        "users", "create", "--org", trust_id, "--role", "buyer", "--email", "bob@rr8.example"
    )
    assert by_id.exit_code == 0

    token = run("tokens", "create", "--user", "ann@rr8.example", "--expires-in-days", "7")
    assert token.exit_code == 0, token.output
    secret = last_line(token.stdout)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.get_json()["user"]["id"] == user_id

    db.rollback()
    token_id = db.scalar(select(ApiToken.id).where(ApiToken.user_id == user_id))
    revoked = run("tokens", "revoke", token_id)
    assert revoked.exit_code == 0
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    )
    db.rollback()
    actions = set(db.scalars(select(AuditEvent.action)))
    assert {"organisation.create", "user.create", "token.create", "token.revoke"} <= actions


@pytest.mark.parametrize(
    "args",
    [
        ("orgs", "create", "--type", "trust", "--name", "No ODS"),
        ("users", "create", "--org", "ZZZ", "--role", "buyer", "--email", "x@y.example"),
        ("tokens", "create", "--user", "nobody@nowhere.example"),
        ("tokens", "revoke", "tok_missing"),
    ],
)
def test_errors_are_one_line_on_stderr_with_non_zero_exit(run, args):
    result = run(*args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("marketplace: ")


def test_wrong_role_for_organisation_is_refused(run):
    run("orgs", "create", "--type", "supplier", "--name", "Acme Ltd")
    result = run(
        "users", "create", "--org", "Acme Ltd", "--role", "buyer", "--email", "a@acme.example"
    )
    assert result.exit_code == 1
    assert "role" in result.stderr


def test_db_current_and_check(run):
    current = run("db", "current")
    assert current.exit_code == 0
    assert current.stdout.strip()
    check = run("db", "check")
    assert check.exit_code == 0, check.output
    assert "agree" in check.stdout


def test_db_upgrade_gives_a_new_database_the_category_tree_once(tmp_path, monkeypatch):
    from sqlalchemy import create_engine

    from marketplace.catalog.models import Category

    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")

    def invoke(*args: str):
        monkeypatch.setattr(cli, "_state", None)
        try:
            return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
        finally:
            if cli._state is not None:
                cli._state.engine.dispose()

    def categories() -> dict[str, str]:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(Category.code, Category.name))
                return {code: name for code, name in rows}
        finally:
            engine.dispose()

    first = invoke("db", "upgrade")
    assert first.exit_code == 0, first.output
    tree = categories()
    assert len(tree) > 20
    assert f"loaded {len(tree)} categories" in first.stdout
    assert "33140000" in tree  # CPV medical consumables
    # an operator's own change survives a later upgrade; load-categories restores the file's
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            Category.__table__.update().where(Category.code == "33140000").values(name="Ours")
        )
    engine.dispose()
    again = invoke("db", "upgrade")
    assert again.exit_code == 0, again.output
    assert "categories" not in again.stdout
    assert categories()["33140000"] == "Ours"
    reload = invoke("catalog", "load-categories")
    assert reload.exit_code == 0, reload.output
    assert reload.stdout.strip().splitlines()[-1].startswith("categories: 0 created")
    assert categories() == tree
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            restored = connection.execute(
                select(AuditEvent.actor_label, AuditEvent.before, AuditEvent.after).where(
                    AuditEvent.action == "category.update"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in restored] == [("cli", {"name": "Ours"}, {"name": tree["33140000"]})]
