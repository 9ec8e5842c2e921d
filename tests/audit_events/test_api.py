"""GET /api/v1/audit-events: operators only, every filter, newest first, pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import delete

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.audit_events import service
from marketplace.errors import Forbidden, ValidationFailed
from tests.support import assert_problem

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
URL = "/api/v1/audit-events"


@pytest.fixture
def operator(factory):
    return factory.actor(Role.OPERATOR)


@pytest.fixture
def log(session_factory, operator, factory):
    """A known audit log: the factory's own events are cleared, then these are written."""
    buyer = factory.actor(Role.BUYER)
    rows = [
        # (minutes after T0, actor user, actor label, action, object type, object id)
        (0, operator.user.id, operator.user.email, "organisation.create", "organisation", "org_a"),
        (10, operator.user.id, operator.user.email, "user.create", "user", "usr_x"),
        (20, buyer.user.id, buyer.user.email, "quote.create", "quote", "quo_1"),
        (30, buyer.user.id, buyer.user.email, "order.place", "order", "ord_1"),
        (40, None, "stripe", "order.paid", "order", "ord_1"),
        (50, None, "cli", "organisation.create", "organisation", "org_b"),
        (60, None, "former@nhs.example", "offer.update", "offer", "off_9"),
    ]
    with session_factory.begin() as session:
        session.execute(delete(AuditEvent))
        for minutes, user_id, label, action, object_type, object_id in rows:
            session.add(
                AuditEvent(
                    occurred_at=T0 + timedelta(minutes=minutes),
                    actor_user_id=user_id,
                    actor_label=label,
                    action=action,
                    object_type=object_type,
                    object_id=object_id,
                    after={"n": minutes},
                    request_id=f"req-{minutes}",
                )
            )
    return {"operator": operator, "buyer": buyer}


def query(client, operator, **params):
    response = client.get(f"{URL}?{urlencode(params)}", headers=operator.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def minutes(page) -> list[int]:
    return [item["after"]["n"] for item in page["items"]]


def test_only_operators_read_the_audit_log(client, factory, log):
    assert_problem(client.get(URL), 401, code="missing-token")
    for role in (Role.BUYER, Role.SUPPLIER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER):
        response = client.get(URL, headers=factory.actor(role).headers)
        assert_problem(response, 403)
    # (making those actors wrote events of their own, today: leave them out)
    page = query(client, log["operator"], until="2026-03-02T00:00:00Z")
    assert minutes(page) == [60, 50, 40, 30, 20, 10, 0]  # newest first
    first = page["items"][0]
    assert first == {
        "id": first["id"],
        "occurred_at": "2026-03-01T10:00:00+00:00",
        "action": "offer.update",
        "object_type": "offer",
        "object_id": "off_9",
        "actor_user_id": None,
        "actor": "former@nhs.example",
        "before": None,
        "after": {"n": 60},
        "request_id": "req-60",
    }
    assert page["next_cursor"] is None


def test_the_service_refuses_anyone_but_an_operator(db, log):
    with pytest.raises(Forbidden):
        service.list_audit_events(db, log["buyer"].principal, service.AuditFilters())


def test_filter_by_object_and_object_type(client, log):
    operator = log["operator"]
    assert minutes(query(client, operator, object="ord_1")) == [40, 30]
    assert minutes(query(client, operator, object_type="organisation")) == [50, 0]
    assert minutes(query(client, operator, object="ord_1", object_type="quote")) == []
    assert minutes(query(client, operator, object="nothing_here")) == []


def test_filter_by_actor_id_email_or_system_actor(client, log):
    operator, buyer = log["operator"], log["buyer"]
    assert minutes(query(client, operator, actor=buyer.user.id)) == [30, 20]
    assert minutes(query(client, operator, actor=buyer.user.email.upper())) == [30, 20]
    # An e-mail no user has any more still finds what was recorded under it.
    assert minutes(query(client, operator, actor="former@nhs.example")) == [60]
    assert minutes(query(client, operator, actor="stripe")) == [40]
    assert minutes(query(client, operator, actor="cli")) == [50]
    assert minutes(query(client, operator, actor="usr_nobody")) == []


def test_filter_by_action(client, log):
    operator = log["operator"]
    assert minutes(query(client, operator, action="organisation.create")) == [50, 0]
    assert minutes(query(client, operator, action="order.place")) == [30]


def test_since_is_inclusive_and_until_exclusive(client, log):
    operator = log["operator"]
    at_20 = (T0 + timedelta(minutes=20)).isoformat()
    at_40 = (T0 + timedelta(minutes=40)).isoformat()
    assert minutes(query(client, operator, since=at_20)) == [60, 50, 40, 30, 20]
    assert minutes(query(client, operator, until=at_40)) == [30, 20, 10, 0]
    assert minutes(query(client, operator, since=at_20, until=at_40)) == [30, 20]
    # The same instant in another timezone, and with "Z".
    plus_one = (T0 + timedelta(minutes=20)).astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+01:00").tzinfo
    )
    assert minutes(query(client, operator, since=plus_one.isoformat(), until=at_40)) == [30, 20]
    assert minutes(query(client, operator, since="2026-03-01T09:20:00Z", until=at_40)) == [30, 20]
    # "+01:00" sent without encoding the "+" arrives as a space: still understood.
    response = client.get(
        f"{URL}?since=2026-03-01T10:20:00+01:00&until={at_40.replace('+', '%2B')}",
        headers=operator.headers,
    )
    assert minutes(response.get_json()) == [30, 20]


def test_filters_combine(client, log):
    operator, buyer = log["operator"], log["buyer"]
    page = query(
        client,
        operator,
        actor=buyer.user.email,
        object_type="order",
        since=T0.isoformat(),
        until=(T0 + timedelta(hours=1)).isoformat(),
    )
    assert minutes(page) == [30]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-03-01T09:00:00"}, "since"),  # no timezone
        ({"until": "2026-03-01"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-03-01T10:00:00Z", "until": "2026-03-01T09:00:00Z"}, "until"),
        ({"since": "2026-03-01T10:00:00Z", "until": "2026-03-01T10:00:00Z"}, "until"),
        ({"actor": "not a user!"}, "actor"),
        ({"actor": "x" * 255}, "actor"),
        ({"action": "Order Place"}, "action"),
        ({"object": "o" * 65}, "object"),
        ({"object": "ord 1"}, "object"),
        ({"object_type": "Order"}, "object_type"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_filters_are_422_problems(client, log, params, field):
    response = client.get(f"{URL}?{urlencode(params)}", headers=log["operator"].headers)
    body = assert_problem(response, 422)
    assert field in body["errors"], body


def test_the_service_refuses_a_naive_time(db, log):
    with pytest.raises(ValidationFailed) as raised:
        service.list_audit_events(
            db,
            log["operator"].principal,
            service.AuditFilters(since=datetime(2026, 3, 1)),  # noqa: DTZ001 (naive on purpose)
        )
    assert "since" in raised.value.errors


def test_walking_the_pages_returns_every_event_once_newest_first(client, session_factory, log):
    with session_factory.begin() as session:
        for n in range(23):  # pairs share a time: the id breaks the tie
            session.add(
                AuditEvent(
                    occurred_at=T0 + timedelta(days=1, seconds=n // 2),
                    actor_label="cli",
                    action="product.update",
                    object_type="product",
                    object_id=f"prd_{n}",
                )
            )
    seen, pages = walk(client, log["operator"], limit=4)
    assert [len(page) for page in pages] == [4] * 7 + [2]  # 30 events, 4 a page
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)) == 30
    keys = [(item["occurred_at"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)
    # Filters hold on every page.
    products, _ = walk(client, log["operator"], limit=5, object_type="product")
    assert sorted(p["object_id"] for p in products) == sorted(f"prd_{n}" for n in range(23))


def walk(client, operator, **params) -> tuple[list[dict], list[list[dict]]]:
    """Follow next_cursor to the end: every item, and the pages they came in."""
    items, pages, cursor = [], [], None
    while True:
        page = query(client, operator, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(page["items"])
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


def test_a_write_through_the_api_is_found_by_its_object(client, operator):
    created = client.post(
        "/api/v1/organisations",
        json={"type": "supplier", "name": "Audited Supplies Ltd"},
        headers=operator.headers,
    )
    assert created.status_code == 201
    org_id = created.get_json()["id"]
    page = query(client, operator, object=org_id)
    assert [e["action"] for e in page["items"]] == ["organisation.create"]
    event = page["items"][0]
    assert event["actor"] == operator.user.email
    assert event["actor_user_id"] == operator.user.id
    assert event["request_id"] == created.headers["X-Request-ID"]
    assert event["after"]["name"] == "Audited Supplies Ltd"


def test_the_endpoint_is_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/audit-events"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {
        "object",
        "object_type",
        "actor",
        "action",
        "since",
        "until",
        "cursor",
        "limit",
    } <= names
    assert {"401", "403", "422"} <= set(operation["responses"])
    assert "AuditEvent" in spec["components"]["schemas"]
