"""Query-string parameters an endpoint does not take are refused (422 naming them), never
silently ignored: a mistyped filter must not return unfiltered results as if it applied.

The endpoints come from the OpenAPI document, so a new endpoint with query arguments is
checked without being listed here."""

from __future__ import annotations

import io
import re

import flask_smorest
import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.web import Blueprint, StrictQueryParser
from tests.support import assert_problem

UNKNOWN = "no_such_parameter"


def _operations(client) -> list[tuple[str, str, set[str]]]:
    """(method, path with placeholders filled, the query parameters it documents) of every
    operation in the OpenAPI document."""
    spec = client.get("/api/v1/openapi.json").get_json()
    prefix = "" if all(p.startswith("/api/") for p in spec["paths"]) else "/api/v1"
    found = []
    for template, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            parameters = shared + operation.get("parameters", [])
            query = {p["name"] for p in parameters if p["in"] == "query"}
            path = re.sub(r"\{[^}]+\}", "x", re.sub(r"\{fmt\}", "csv", template))
            found.append((method.upper(), prefix + path, query))
    return found


def _query_operations(client) -> list[tuple[str, str, set[str]]]:
    return [operation for operation in _operations(client) if operation[2]]


def test_every_api_blueprint_parses_its_query_strictly(app):
    smorest = [b for b in app.blueprints.values() if isinstance(b, flask_smorest.Blueprint)]
    assert smorest, "no flask-smorest blueprint registered"
    plain = [b.name for b in smorest if not isinstance(b, Blueprint)]
    assert plain == [], f"use marketplace.web.Blueprint for {plain}"
    assert all(isinstance(b.ARGUMENTS_PARSER, StrictQueryParser) for b in smorest)


def test_the_document_has_query_operations_to_check(client):
    paths = {path for _method, path, _query in _query_operations(client)}
    assert {"/api/v1/search", "/api/v1/price-variance", "/api/v1/purchases"} <= paths


def test_an_unknown_query_parameter_is_a_422_naming_it(client, db, factory):
    callers = [factory.actor(role).headers for role in Role]
    checked = 0
    for method, path, _query in _query_operations(client):
        if method != "GET":
            continue
        for headers in [{}, *callers]:
            response = client.get(path, query_string={UNKNOWN: "1"}, headers=headers)
            if response.status_code not in (401, 403):
                break
        body = assert_problem(response, 422)
        assert UNKNOWN in body["errors"], (path, body)
        checked += 1
    assert checked >= 10


def test_a_query_parameter_on_an_operation_that_takes_none_is_a_422_naming_it(client, db, factory):
    """Reads and writes alike, before authentication or any lookup, and nothing is written."""
    operations = [(method, path) for method, path, query in _operations(client) if not query]
    assert {("GET", "/api/v1/products/x"), ("GET", "/api/v1/me")} <= set(operations)
    assert any(method == "POST" for method, _path in operations)
    before = db.scalar(select(func.count()).select_from(AuditEvent))
    for method, path in operations:
        response = client.open(path, method=method, query_string={UNKNOWN: "1"})
        body = assert_problem(response, 422)
        assert body["errors"] == {UNKNOWN: ["Unknown field."]}, (method, path)
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_an_operation_without_query_parameters_still_answers_without_any(client, factory):
    assert client.get("/api/v1/categories").status_code == 200
    me = client.get("/api/v1/me", headers=factory.actor(Role.BUYER).headers)
    assert me.status_code == 200


def test_known_parameters_still_work_beside_the_refusal(client):
    ok = client.get("/api/v1/search", query_string={"q": "gloves", "max_unit_price": "5"})
    assert ok.status_code == 200
    refused = client.get("/api/v1/search", query_string={"q": "gloves", "max_unit_prize": "5"})
    body = assert_problem(refused, 422)
    assert set(body["errors"]) == {"max_unit_prize"}


@pytest.mark.parametrize("path", ["/api/v1/search", "/api/v1/price-variance"])
def test_a_mistyped_filter_on_public_data_is_refused(client, path):
    body = assert_problem(client.get(path, query_string={"categroy": "18424300"}), 422)
    assert body["errors"] == {"categroy": ["Unknown field."]}


def test_a_refused_write_with_an_unknown_query_parameter_writes_nothing(client, db, factory):
    supplier = factory.actor(Role.SUPPLIER)
    before = db.scalar(select(func.count()).select_from(AuditEvent))
    response = client.post(
        "/api/v1/offers/import",
        query_string={"dry_run": "false", "dryrun": "true"},
        data={"file": (io.BytesIO(b"gtin,name\n"), "offers.csv")},
        headers=supplier.headers,
        content_type="multipart/form-data",
    )
    body = assert_problem(response, 422)
    assert "dryrun" in body["errors"]
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == before


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/purchases/import", {"trust"}),
        ("/api/v1/offers/import", {"dry_run", "supplier_id"}),
    ],
)
def test_imports_document_their_query_parameters_and_the_key_header(client, path, query):
    spec = client.get("/api/v1/openapi.json").get_json()
    parameters = spec["paths"][path]["post"]["parameters"]
    assert {p["name"] for p in parameters if p["in"] == "query"} == query
    assert [p["name"] for p in parameters if p["in"] == "header"] == ["Idempotency-Key"]
