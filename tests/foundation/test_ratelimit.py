"""Rate limits per token and per client address, on memory storage and on Redis.

The suite runs with rate limiting off (tests/conftest.py); these tests build applications of
their own with small limits. Each application gets its own key prefix, so counters never leak
between tests, runs, or the SQLite and PostgreSQL runs sharing one Redis.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator
from itertools import count

import pytest
from flask import Flask

from marketplace import create_app
from marketplace.accounts.models import Role
from marketplace.accounts.service import hash_token
from marketplace.config import Settings
from tests.support import assert_problem

REDIS_URL_ENV = "MARKETPLACE_TEST_REDIS_URL"
LIMITS = {
    "rate_limit_authenticated": "5 per minute",
    "rate_limit_anonymous": "3 per minute",
    "rate_limit_write": "3 per minute",
    "rate_limit_import": "1 per minute",
    "rate_limit_auth_failures": "2 per minute",
}
_addresses = count(1)


def fresh_address() -> dict[str, dict[str, str]]:
    """A client address no other test in the run has used (WSGI environ; no traffic)."""
    n = next(_addresses)
    assert n < 255
    return {"environ_base": {"REMOTE_ADDR": f"192.0.2.{n}"}}


def _redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        pytest.skip(f"{REDIS_URL_ENV} is not set: the Redis storage test needs a Redis server")
    return url


def _limited_app(migrated: Settings, storage: str, **overrides) -> Flask:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    settings = migrated.with_overrides(
        rate_limit_enabled=True,
        rate_limit_key_prefix=prefix,
        redis_url=_redis_url() if storage == "redis" else None,
        **(LIMITS | overrides),
    )
    return create_app(settings)


@pytest.fixture(scope="module", params=["memory", "redis"])
def limited(request, migrated: Settings) -> Iterator[Flask]:
    app = _limited_app(migrated, request.param)
    yield app
    settings = app.extensions["marketplace"].settings
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"*{settings.rate_limit_key_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    app.extensions["marketplace"].engine.dispose()


@pytest.fixture
def limited_client(limited: Flask, app: Flask):
    """A client of the limited application (``app`` empties the shared database first)."""
    return limited.test_client()


def _get_until_refused(client, path: str, limit: int, **kwargs):
    for n in range(limit):
        response = client.get(path, **kwargs)
        assert response.status_code == 200, (n, response.get_data(as_text=True))
    return client.get(path, **kwargs)


def test_a_token_gets_its_budget_then_a_429_problem_with_retry_after(limited_client, factory):
    buyer = factory.actor(Role.BUYER)
    started = time.time()
    first = limited_client.get("/api/v1/me", headers=buyer.headers)
    assert first.headers["X-RateLimit-Limit"] == "5"
    assert first.headers["X-RateLimit-Remaining"] == "4"
    refused = _get_until_refused(limited_client, "/api/v1/me", 4, headers=buyer.headers)

    body = assert_problem(refused, 429, code="rate-limited")
    assert body["limit"] == "5 per 1 minute"
    assert "requests with this token" in body["detail"]
    retry_after = int(refused.headers["Retry-After"])
    elapsed = time.time() - started
    # The window opened with the first request and lasts a minute.
    assert 60 - elapsed - 1 <= retry_after <= 60
    assert body["retry_after"] == retry_after
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    reset = int(refused.headers["X-RateLimit-Reset"])
    assert abs(reset - (time.time() + retry_after)) <= 2
    assert body["request_id"] == refused.headers["X-Request-ID"]


def test_two_tokens_do_not_share_a_budget(limited_client, factory):
    address = fresh_address()
    first, second = factory.actor(Role.BUYER), factory.actor(Role.SUPPLIER)
    refused = _get_until_refused(limited_client, "/api/v1/me", 5, headers=first.headers, **address)
    assert_problem(refused, 429, code="rate-limited")
    # Same address, another token: a whole budget of its own.
    for _ in range(5):
        assert (
            limited_client.get("/api/v1/me", headers=second.headers, **address).status_code == 200
        )
    assert limited_client.get("/api/v1/me", headers=second.headers, **address).status_code == 429


def test_anonymous_requests_count_per_address(limited_client, factory):
    here, elsewhere = fresh_address(), fresh_address()
    refused = _get_until_refused(limited_client, "/api/v1/categories", 3, **here)
    body = assert_problem(refused, 429, code="rate-limited")
    assert "without a token" in body["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert limited_client.get("/api/v1/categories", **elsewhere).status_code == 200
    # A token from the exhausted address has its own budget.
    buyer = factory.actor(Role.BUYER)
    assert (
        limited_client.get("/api/v1/categories", headers=buyer.headers, **here).status_code == 200
    )


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(limited_client, migrated, app):
    address = fresh_address()
    for n in range(3):
        forwarded = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        response = limited_client.get("/api/v1/categories", headers=forwarded, **address)
        assert response.status_code == 200
    spoofed = {"X-Forwarded-For": "203.0.113.99"}
    assert limited_client.get("/api/v1/categories", headers=spoofed, **address).status_code == 429

    behind_proxy = _limited_app(migrated, "memory", trusted_proxy_count=1).test_client()
    proxy = {"environ_base": {"REMOTE_ADDR": "10.0.0.1"}}
    for n in range(4):  # four clients behind one proxy: four budgets
        forwarded = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        assert behind_proxy.get("/api/v1/categories", headers=forwarded, **proxy).status_code == 200
    same = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}  # only the last hop is believed
    assert behind_proxy.get("/api/v1/categories", headers=same, **proxy).status_code == 200
    assert behind_proxy.get("/api/v1/categories", headers=same, **proxy).status_code == 200
    assert_problem(behind_proxy.get("/api/v1/categories", headers=same, **proxy), 429)


def test_writes_have_a_stricter_budget_than_reads(limited_client, factory):
    operator = factory.actor(Role.OPERATOR)
    for n in range(3):
        response = limited_client.post(
            "/api/v1/organisations",
            json={"type": "supplier", "name": f"Limited Supplies {n}"},
            headers=operator.headers,
        )
        assert response.status_code == 201, response.get_data(as_text=True)
    refused = limited_client.post(
        "/api/v1/organisations",
        json={"type": "supplier", "name": "One too many"},
        headers=operator.headers,
    )
    body = assert_problem(refused, 429, code="rate-limited")
    assert "changes" in body["detail"]
    # Nothing was written by the refused request, and reads still go through.
    listed = limited_client.get("/api/v1/organisations?limit=100", headers=operator.headers)
    assert listed.status_code == 200
    names = {o["name"] for o in listed.get_json()["items"]}
    assert "One too many" not in names
    assert {f"Limited Supplies {n}" for n in range(3)} <= names


def test_imports_have_their_own_budget(limited_client, factory):
    supplier = factory.actor(Role.SUPPLIER)
    header = "gtin,name,manufacturer,brand,mpn,category_code,unit_of_measure,units_per_pack,pack_price_pence,vat_rate_percent,stock,lead_time_days,min_order_qty,supplier_sku\n"

    def upload():
        return limited_client.post(
            "/api/v1/offers/import?dry_run=true",
            data=io.BytesIO(header.encode()),
            content_type="text/csv",
            headers=supplier.headers,
        )

    assert upload().status_code != 429
    body = assert_problem(upload(), 429, code="rate-limited")
    assert "imports" in body["detail"]
    assert body["limit"] == "1 per 1 minute"
    # Other writes by the same token are still within their budget.
    created = limited_client.post(
        "/api/v1/organisations", json={"type": "supplier", "name": "x"}, headers=supplier.headers
    )
    assert created.status_code == 403


def test_refused_tokens_count_against_the_address(limited_client, factory):
    here, elsewhere = fresh_address(), fresh_address()
    for n in range(2):
        guess = {"Authorization": f"Bearer mkt_guess{n}"}
        assert_problem(limited_client.get("/api/v1/me", headers=guess, **here), 401)
    refused = limited_client.get("/api/v1/me", headers={"Authorization": "Bearer mkt_3"}, **here)
    body = assert_problem(refused, 429, code="rate-limited")
    assert "refused tokens" in body["detail"]
    guess = {"Authorization": "Bearer mkt_guess"}
    assert_problem(limited_client.get("/api/v1/me", headers=guess, **elsewhere), 401)


def test_probes_and_metrics_are_never_limited(limited_client):
    address = fresh_address()
    for _ in range(10):
        assert limited_client.get("/healthz", **address).status_code == 200
        assert limited_client.get("/readyz", **address).status_code == 200
        assert limited_client.get("/metrics", **address).status_code in (401, 200)
    assert limited_client.get("/api/v1/categories", **address).status_code == 200


def test_the_raw_token_is_never_a_key(limited, limited_client, factory):
    buyer = factory.actor(Role.BUYER)
    assert limited_client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    settings = limited.extensions["marketplace"].settings
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        keys = [k.decode() for k in client.scan_iter(match=f"*{settings.rate_limit_key_prefix}*")]
        client.close()
    else:
        keys = list(limited.extensions["marketplace.limiter"].storage.storage)
    assert any(hash_token(buyer.token) in key for key in keys), keys
    assert not any(buyer.token in key for key in keys)


def test_limits_carry_on_in_memory_when_redis_is_down(migrated, app):
    # Nothing listens on port 1: every Redis call fails at once.
    settings = migrated.with_overrides(
        rate_limit_enabled=True, redis_url="redis://127.0.0.1:1/0", **LIMITS
    )
    client = create_app(settings).test_client()
    address = fresh_address()
    refused = _get_until_refused(client, "/api/v1/categories", 3, **address)
    assert_problem(refused, 429, code="rate-limited")


def test_disabled_limits_leave_no_trace(client):
    response = client.get("/api/v1/categories")
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers
