"""Secrets and headers: bearer tokens are stored only as hashes and compared in constant time,
never written to the audit log; the API's HTML page (Swagger UI at /docs) carries security
headers like the public pages, with its one inline script allowed by its hash only; the settings
never show a password or a Stripe secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

from sqlalchemy import select

from marketplace.accounts import service as accounts
from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.config import Settings


def test_tokens_are_compared_in_constant_time(client, factory, monkeypatch):
    buyer = factory.actor(Role.BUYER)
    compared: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(accounts.hmac, "compare_digest", spy)
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    digest = accounts.hash_token(buyer.token)
    assert compared == [(digest, digest)]  # hashes, compared with hmac.compare_digest
    forged = buyer.token[:-4] + "AAAA"
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )


def test_token_secrets_are_never_stored_nor_audited(factory, db):
    buyer = factory.actor(Role.BUYER)
    stored = db.scalars(select(accounts.ApiToken.token_hash)).all()
    assert accounts.hash_token(buyer.token) in stored
    assert buyer.token not in stored
    events = db.scalars(select(AuditEvent)).all()
    assert any(e.action == "token.create" for e in events)
    for event in events:
        dumped = json.dumps([event.before, event.after], default=str)
        assert buyer.token not in dumped
        assert buyer.token.removeprefix(accounts.TOKEN_PREFIX) not in dumped


def test_api_docs_page_has_security_headers(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    csp = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp["script-src"]
    assert "unsafe-eval" not in csp["script-src"]
    html = response.get_data(as_text=True)
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert inline  # the start-up snippet...
    for script in inline:  # ...runs because its hash is allowed, and nothing else inline would
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    assert "http" not in response.headers["Content-Security-Policy"]  # no CDN, no other origin


def test_settings_repr_masks_passwords_in_urls():
    settings = Settings(
        database_url="postgresql+psycopg://app:s3cret-db@db.internal:5432/marketplace",
        search_backend="elasticsearch",
        elasticsearch_url="https://elastic:s3cret-es@[fd00::9]:9200",
    )
    shown = repr(settings)
    assert "s3cret" not in shown
    assert "s3cret" not in str(settings)
    assert "postgresql+psycopg://app:***@db.internal:5432/marketplace" in shown
    assert "https://elastic:***@[fd00::9]:9200" in shown
    assert settings.database_url.endswith("s3cret-db@db.internal:5432/marketplace")  # still usable
    plain = Settings(database_url="sqlite:////tmp/x.db")
    assert "sqlite:////tmp/x.db" in repr(plain)
