"""Every error is application/problem+json with the right status and headers."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace import create_app
from marketplace.accounts.models import Organisation, Role
from tests.support import assert_problem


def test_unknown_route_is_404_problem(client):
    body = assert_problem(client.get("/api/v1/no-such-thing"), 404)
    assert body["request_id"]


def test_wrong_method_is_405_and_keeps_allow(client):
    response = client.delete("/api/v1/me")
    assert_problem(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


def test_malformed_json_is_400(client, factory, db):
    operator = factory.actor(Role.OPERATOR)
    before = db.scalar(select(func.count(Organisation.id)))
    response = client.post(
        "/api/v1/organisations",
        data=b'{"type": "trust", "name": ',
        headers=operator.headers | {"Content-Type": "application/json"},
    )
    assert_problem(response, 400, code="malformed-json")
    assert db.scalar(select(func.count(Organisation.id))) == before


def test_validation_is_422_with_field_errors(client, factory):
    operator = factory.actor(Role.OPERATOR)
    response = client.post(
        "/api/v1/organisations", json={"name": 5, "extra": 1}, headers=operator.headers
    )
    body = assert_problem(response, 422, code="validation-failed")
    assert set(body["errors"]) >= {"type", "name", "extra"}


@pytest.mark.parametrize("limit", ["2.5", "1e1", "ten", "0", "101", "-1"])
def test_integers_in_queries_are_strict(client, factory, limit):
    operator = factory.actor(Role.OPERATOR)
    response = client.get(
        "/api/v1/organisations", query_string={"limit": limit}, headers=operator.headers
    )
    assert "limit" in assert_problem(response, 422)["errors"]


def test_bad_cursor_is_422(client, factory):
    operator = factory.actor(Role.OPERATOR)
    response = client.get(
        "/api/v1/organisations", query_string={"cursor": "!!!"}, headers=operator.headers
    )
    assert "cursor" in assert_problem(response, 422)["errors"]


def test_oversized_body_is_413(migrated):
    app = create_app(migrated.with_overrides(max_content_length=1024))
    response = app.test_client().post(
        "/api/v1/organisations", data=b"x" * 4096, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413)


def test_unexpected_failure_is_500_without_internals(migrated, caplog):
    app = create_app(migrated)  # its own app: the route below is added for this test only

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    response = app.test_client().get("/boom")
    body = assert_problem(response, 500, code="internal-error")
    text = response.get_data(as_text=True)
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert any(
        body["request_id"] in record.getMessage() or record.exc_info for record in caplog.records
    )


def test_request_id_is_echoed_or_generated(client):
    given = client.get("/healthz", headers={"X-Request-ID": "abc123-request"})
    assert given.headers["X-Request-ID"] == "abc123-request"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces"
    assert len(generated.headers["X-Request-ID"]) == 32


def test_nul_characters_are_bad_input_on_every_database(client, factory, db):
    """PostgreSQL text cannot hold U+0000; no field has a use for it. Refused wherever it comes
    (JSON body, query, path) as a problem, and nothing is written."""
    operator = factory.actor(Role.OPERATOR)
    before = db.scalar(select(func.count(Organisation.id)))
    response = client.post(
        "/api/v1/organisations",
        json={"type": "supplier", "name": "Acme\x00", "tags": [{"k\x00": "v"}]},
        headers=operator.headers,
    )
    body = assert_problem(response, 422, code="validation-failed")
    assert set(body["errors"]) == {"name", "tags.0.k\\u0000"}
    assert db.scalar(select(func.count(Organisation.id))) == before
    query = client.get("/api/v1/price-check?product=prd_%00&unit_price=1")
    assert set(assert_problem(query, 422)["errors"]) == {"product"}
    assert_problem(client.get("/api/v1/offers/off_%00"), 404)
