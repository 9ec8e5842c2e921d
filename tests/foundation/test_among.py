"""``db.among``: ``column IN (values)`` for long lists, as one array parameter on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from marketplace.accounts.models import Organisation, OrgType
from marketplace.db import among
from tests.support import statements


def test_among_finds_exactly_the_listed_rows(factory, db):
    orgs = [factory.org(OrgType.TRUST) for _ in range(5)]
    wanted = [orgs[0].id, orgs[3].id, "org_missing"]
    found = db.scalars(select(Organisation.id).where(among(db, Organisation.id, wanted))).all()
    assert sorted(found) == sorted([orgs[0].id, orgs[3].id])
    assert db.scalars(select(Organisation.id).where(among(db, Organisation.id, []))).all() == []


def test_the_statement_is_the_same_whatever_the_number_of_values(factory, db, is_postgres):
    org = factory.org(OrgType.TRUST)
    engine = db.get_bind()
    with statements(engine) as seen:
        for n in (1, 10, 2000):
            ids = [org.id, *(f"org_{i}" for i in range(n - 1))]
            query = select(Organisation.id).where(among(db, Organisation.id, ids))
            assert db.scalars(query).all() == [org.id]
    texts = {statement for statement in seen if "FROM organisations" in statement}
    if is_postgres:  # one array parameter: the driver parses one statement, once
        assert len(texts) == 1
    else:
        assert len(texts) == 3
