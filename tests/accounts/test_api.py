"""Organisations, users and tokens through the API: the auth matrix and operator endpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from marketplace.accounts import service as accounts
from marketplace.accounts.models import Organisation, OrgType, Role, User
from marketplace.audit import AuditEvent
from marketplace.db import utcnow
from tests.support import SYSTEM, assert_problem


def test_me_answers_with_the_token_owner(client, factory):
    buyer = factory.actor(Role.BUYER)
    response = client.get("/api/v1/me", headers=buyer.headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["email"] == buyer.user.email
    assert body["organisation"]["id"] == buyer.org.id
    assert body["organisation"]["type"] == "trust"


def test_missing_token_is_401_with_www_authenticate(client):
    response = client.get("/api/v1/me")
    assert_problem(response, 401, code="missing-token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer mkt_not-a-real-token", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer ", "mkt_x"],
)
def test_invalid_token_is_401(client, header):
    response = client.get("/api/v1/me", headers={"Authorization": header})
    assert_problem(response, 401)
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_revoked_token_is_401(client, factory, session_factory):
    buyer = factory.actor(Role.BUYER)
    with session_factory.begin() as session:
        token_id = session.scalar(
            select(accounts.ApiToken.id).where(accounts.ApiToken.user_id == buyer.user.id)
        )
        accounts.revoke_token(session, SYSTEM, token_id)
    response = client.get("/api/v1/me", headers=buyer.headers)
    body = assert_problem(response, 401)
    assert "revoked" in body["detail"]


def test_expired_token_is_401(client, factory, session_factory):
    buyer = factory.actor(Role.BUYER)
    with session_factory.begin() as session:
        user = session.get(User, buyer.user.id)
        issued = accounts.issue_token(
            session, SYSTEM, user, expires_in_days=1, now=utcnow() - timedelta(days=2)
        )
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {issued.secret}"})
    body = assert_problem(response, 401)
    assert "expired" in body["detail"]


def test_token_is_stored_only_as_a_hash(factory, db):
    buyer = factory.actor(Role.BUYER)
    stored = db.scalars(select(accounts.ApiToken.token_hash)).all()
    assert buyer.token not in stored
    assert accounts.hash_token(buyer.token) in stored


@pytest.mark.parametrize(
    "role", [Role.BUYER, Role.SUPPLIER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER]
)
def test_operator_endpoints_refuse_other_roles_with_403(client, factory, role):
    actor = factory.actor(role)
    for path in ("/api/v1/organisations", "/api/v1/users"):
        assert_problem(client.get(path, headers=actor.headers), 403, code="wrong-role")
    response = client.post(
        "/api/v1/organisations",
        json={"type": "trust", "name": "X", "ods_code": "RXX"},
        headers=actor.headers,
    )
    assert_problem(response, 403)


def test_operator_creates_and_lists_organisations(client, factory, db):
    operator = factory.actor(Role.OPERATOR)
    response = client.post(
        "/api/v1/organisations",
        json={
            "type": "supplier",
            "name": "Pennine Healthcare Ltd",
            "companies_house_number": "07322145",
            "is_sme": True,
        },
        headers=operator.headers,
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["id"].startswith("org_")
    assert created["is_sme"] is True
    event = db.scalar(select(AuditEvent).where(AuditEvent.object_id == created["id"]))
    assert event.action == "organisation.create"
    assert event.actor_user_id == operator.user.id

    seen = []
    cursor = None
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get(
            "/api/v1/organisations", query_string=params, headers=operator.headers
        ).get_json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(db.scalars(select(Organisation.id)).all())
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "trust", "name": "No ODS"}, "ods_code"),
        ({"type": "trust", "name": "Bad ODS", "ods_code": "!!"}, "ods_code"),
        ({"type": "nonsense", "name": "X"}, "type"),
        (
            {"type": "supplier", "name": "X", "companies_house_number": "12"},
            "companies_house_number",
        ),
        ({"type": "trust", "name": "", "ods_code": "RAB"}, "name"),
        ({"type": "trust", "name": "SME trust", "ods_code": "RAC", "is_sme": True}, "is_sme"),
    ],
)
def test_invalid_organisations_are_422_and_nothing_is_written(client, factory, db, body, field):
    operator = factory.actor(Role.OPERATOR)
    before = db.scalar(select(func.count(Organisation.id)))
    response = client.post("/api/v1/organisations", json=body, headers=operator.headers)
    problem = assert_problem(response, 422)
    assert field in problem["errors"]
    assert db.scalar(select(func.count(Organisation.id))) == before


def test_duplicate_ods_code_is_409(client, factory):
    operator = factory.actor(Role.OPERATOR)
    factory.org(OrgType.TRUST, ods_code="RTD")
    response = client.post(
        "/api/v1/organisations",
        json={"type": "trust", "name": "Again", "ods_code": "rtd"},
        headers=operator.headers,
    )
    assert_problem(response, 409, code="duplicate-ods-code")


def test_operator_creates_users_with_roles_that_fit_the_organisation(client, factory):
    operator = factory.actor(Role.OPERATOR)
    trust = factory.org(OrgType.TRUST)
    ok = client.post(
        "/api/v1/users",
        json={"organisation_id": trust.id, "role": "buyer", "email": "New.Buyer@Trust.example"},
        headers=operator.headers,
    )
    assert ok.status_code == 201
    assert ok.get_json()["email"] == "new.buyer@trust.example"
    wrong = client.post(
        "/api/v1/users",
        json={"organisation_id": trust.id, "role": "supplier", "email": "s@trust.example"},
        headers=operator.headers,
    )
    assert "role" in assert_problem(wrong, 422)["errors"]
    dup = client.post(
        "/api/v1/users",
        json={"organisation_id": trust.id, "role": "buyer", "email": "new.buyer@trust.example"},
        headers=operator.headers,
    )
    assert_problem(dup, 409)
    missing = client.post(
        "/api/v1/users",
        json={"organisation_id": "org_missing", "role": "buyer", "email": "x@trust.example"},
        headers=operator.headers,
    )
    assert_problem(missing, 404)


def test_unknown_organisation_is_404(client, factory):
    operator = factory.actor(Role.OPERATOR)
    assert_problem(client.get("/api/v1/organisations/org_nope", headers=operator.headers), 404)


def test_disabled_user_cannot_use_token(client, factory, session_factory):
    buyer = factory.actor(Role.BUYER)
    with session_factory.begin() as session:
        session.get(User, buyer.user.id).is_active = False
    assert_problem(client.get("/api/v1/me", headers=buyer.headers), 401)
