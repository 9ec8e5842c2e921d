"""Helpers for tests: actors with tokens, object factories, problem assertions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY
from sqlalchemy import event

from marketplace.accounts import service as accounts
from marketplace.accounts.models import Organisation, OrgType, Role, User
from marketplace.accounts.service import Principal

SYSTEM = Principal.system("tests")


@contextlib.contextmanager
def statements(engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block, in order."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@dataclass
class Actor:
    user: User
    org: Organisation
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def principal(self) -> Principal:
        return Principal.for_user(self.user)


ROLE_ORG_TYPE = {
    Role.BUYER: OrgType.TRUST,
    Role.SUPPLIER: OrgType.SUPPLIER,
    Role.BUDGET_HOLDER: OrgType.COMMISSIONER,
    Role.BUDGET_MANAGER: OrgType.COMMISSIONER,
    Role.OPERATOR: OrgType.OPERATOR,
}


class Factory:
    """Makes organisations, users and tokens for tests (committed, so the API sees them)."""

    def __init__(self, session_factory):
        self.session_factory = session_factory
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def org(
        self, type: OrgType, *, name: str | None = None, ods_code: str | None = None, **kwargs
    ) -> Organisation:
        n = self._next()
        if type in (OrgType.TRUST, OrgType.COMMISSIONER) and ods_code is None:
            ods_code = f"T{n:04d}" if type == OrgType.TRUST else f"C{n:04d}"
        if type == OrgType.SUPPLIER:
            kwargs.setdefault("companies_house_number", f"{10_000_000 + n:08d}")
        with self.session_factory.begin() as session:
            return accounts.create_organisation(
                session,
                SYSTEM,
                type=type,
                name=name or f"{type.value.title()} {n}",
                ods_code=ods_code,
                **kwargs,
            )

    def actor(self, role: Role, org: Organisation | None = None, **token_kwargs) -> Actor:
        org = org or self.org(ROLE_ORG_TYPE[role])
        n = self._next()
        with self.session_factory.begin() as session:
            user = accounts.create_user(
                session,
                SYSTEM,
                organisation_id=org.id,
                role=role,
                email=f"{role.value}{n}@test.example",
            )
            issued = accounts.issue_token(session, SYSTEM, user, **token_kwargs)
        return Actor(user=user, org=org, token=issued.secret)


def assert_problem(response, status: int, *, code: str | None = None) -> dict:
    """The response is a problem+json with this status (and problem code, if given)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json", response.mimetype
    body = response.get_json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert "detail" in body
    if code is not None:
        assert body["type"].endswith("/" + code), body["type"]
    return body


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus metrics (0 when it has not been recorded yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
