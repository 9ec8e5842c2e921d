"""The OpenAPI document is valid OpenAPI 3 and describes errors and auth; /docs is offline."""

from __future__ import annotations

import re

import jsonschema
from openapi_spec_validator import validate

from marketplace.accounts.models import Role
from tests.support import assert_problem

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def test_openapi_document_is_valid(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_every_operation_documents_its_errors_and_auth(client, app):
    spec = client.get("/api/v1/openapi.json").get_json()
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert operations
    for path, method, op in operations:
        responses = op["responses"]
        assert "default" in responses, (method, path)
        if op.get("security"):
            assert "401" in responses, (method, path)
        assert responses["429"] == {"$ref": "#/components/responses/TOO_MANY_REQUESTS"}
    error = spec["components"]["responses"]["DEFAULT_ERROR"]
    assert "application/problem+json" in error["content"]
    too_many = spec["components"]["responses"]["TOO_MANY_REQUESTS"]
    assert "Retry-After" in too_many["headers"]
    assert "application/problem+json" in too_many["content"]


def test_every_api_route_is_documented(client, app):
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = {
        (re.sub(r"\{[^}]+\}", "{}", path), method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == "/api/v1/openapi.json":
            continue
        path = re.sub(r"<[^>]+>", "{}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (method, rule.rule)


def test_swagger_ui_is_served_from_local_files(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "swagger-ui" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), (
        "the docs page loads nothing from outside"
    )
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", html)
    for asset in re.findall(r"""(?:src|href)=["']([^"']+)["']""", html):
        assert asset.startswith("/docs/assets/")
        assert client.get(asset).status_code == 200, asset


def test_problems_with_extension_members_match_the_documented_schema(client, factory):
    """RFC 9457 problems may carry members of their own (here the columns a price list
    lacks): the documented problem schema must accept them."""
    spec = client.get("/api/v1/openapi.json").get_json()
    supplier = factory.actor(Role.SUPPLIER)
    response = client.post(
        "/api/v1/offers/import",
        data=b"null\n",
        headers=supplier.headers | {"Content-Type": "text/csv"},
    )
    body = assert_problem(response, 400)
    assert body["missing_columns"]
    jsonschema.validate(body, spec["components"]["schemas"]["Problem"])


def test_rules_a_schema_can_state_are_documented(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    price_check = spec["paths"]["/api/v1/price-check"]["get"]["parameters"]
    unit_price = next(p for p in price_check if p["name"] == "unit_price")
    assert unit_price["schema"]["minimum"] == 0  # the API refuses negative prices (422)
    assert spec["components"]["schemas"]["QuoteLine"]["properties"]["unit_price_pence"] == {
        "type": "number",
        "minimum": 0,
    }
    place_order = spec["paths"]["/api/v1/orders"]["post"]["parameters"]
    key = next(p for p in place_order if p["name"] == "Idempotency-Key")["schema"]
    assert re.fullmatch(key["pattern"].strip("^$"), "po-4711")
    assert not re.fullmatch(key["pattern"].strip("^$"), "two words")  # the API says 422
