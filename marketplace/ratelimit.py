"""Abuse limits: request rates per API token and per client address (flask-limiter).

A request that carries a bearer token is counted against that token, keyed by the token's
SHA-256 hash (the same digest the database keeps; the token itself is never a key). A request
without one is counted against its client address. Every limit is shared by all the routes it
covers, so a client cannot multiply its budget by spreading requests over endpoints:

=================  ============================================  ==============================
scope              counts                                        setting
=================  ============================================  ==============================
``authenticated``  every request with a token, per token          ``RATE_LIMIT_AUTHENTICATED``
``anonymous``      every request without one, per client IP       ``RATE_LIMIT_ANONYMOUS``
``writes``         POST/PUT/PATCH/DELETE, per token or IP         ``RATE_LIMIT_WRITE``
``imports``        the import endpoints (``@import_limited``)    ``RATE_LIMIT_IMPORT``
``auth-failures``  401 answers, per client IP                     ``RATE_LIMIT_AUTH_FAILURES``
=================  ============================================  ==============================

The last one stops a client from dodging its address's budget by sending made-up tokens: each
refused token counts against the address it came from. Health probes and ``/metrics`` are never
limited. Counters live in Redis when ``REDIS_URL`` is set (shared by every worker and server),
else in each process's memory; if Redis stops answering, limits carry on in memory and the
service stays up.

The client address is the connection's peer. Behind reverse proxies set
``TRUSTED_PROXY_COUNT`` to their number so that it is read from ``X-Forwarded-For``
(werkzeug's ``ProxyFix``); it never is by default, since anyone can send that header.

A refused request gets a 429 problem with ``Retry-After`` (whole seconds); every limited
response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(epoch seconds) for the tightest limit that applied.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from .accounts.service import hash_token
from .auth import bearer_token
from .config import Settings
from .errors import Problem, problem_response
from .web import WRITE_METHODS

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "marketplace.limiter"
EXEMPT_BLUEPRINTS = frozenset({"ops"})  # /healthz, /readyz, /metrics
IMPORT_MARK = "rate_limit_import"
REDIS_TIMEOUT_SECONDS = 0.5
SCOPE_WORDS = {
    "authenticated": "requests with this token",
    "anonymous": "requests from your address without a token",
    "writes": "changes",
    "imports": "imports",
    "auth-failures": "refused tokens from your address",
}


def import_limited(view: F) -> F:
    """Mark a view as an import: it also counts against ``RATE_LIMIT_IMPORT``."""
    setattr(view, IMPORT_MARK, True)
    return view


def client_address() -> str:
    return request.remote_addr or "unknown"


def address_key() -> str:
    return "ip:" + client_address()


def client_key() -> str:
    """Who a request counts against: its token's hash, else its client address."""
    token = bearer_token()
    return "token:" + hash_token(token) if token else address_key()


def _without_token() -> bool:
    return bearer_token() is None


def _with_token() -> bool:
    return bearer_token() is not None


def _no_authorization_header() -> bool:
    return "Authorization" not in request.headers


def _not_an_import() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return not getattr(view, IMPORT_MARK, False)


def _refused_token(response: Response) -> bool:
    return response.status_code == 401


def _limits(settings: Settings) -> list[ApplicationLimit]:
    return [
        ApplicationLimit(
            settings.rate_limit_authenticated,
            key_function=client_key,
            scope="authenticated",
            exempt_when=_without_token,
        ),
        ApplicationLimit(
            settings.rate_limit_anonymous,
            key_function=address_key,
            scope="anonymous",
            exempt_when=_with_token,
        ),
        ApplicationLimit(
            settings.rate_limit_write,
            key_function=client_key,
            scope="writes",
            methods=WRITE_METHODS,
        ),
        ApplicationLimit(
            settings.rate_limit_import,
            key_function=client_key,
            scope="imports",
            exempt_when=_not_an_import,
        ),
        ApplicationLimit(
            settings.rate_limit_auth_failures,
            key_function=address_key,
            scope="auth-failures",
            exempt_when=_no_authorization_header,
            deduct_when=_refused_token,
        ),
    ]


def init_app(app: Flask, settings: Settings) -> Limiter | None:
    """Trust ``TRUSTED_PROXY_COUNT`` proxies, and install the limits (unless disabled)."""
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n)  # type: ignore[method-assign]
    if not settings.rate_limit_enabled:
        return None
    options: dict[str, Any] = {}
    if settings.redis_url:
        options = {
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
        }
    limiter = Limiter(
        client_key,
        application_limits=_limits(settings),  # type: ignore[arg-type]
        storage_uri=settings.redis_url or "memory://",
        storage_options=options,
        strategy=settings.rate_limit_strategy,
        key_prefix=settings.rate_limit_key_prefix,
        headers_enabled=False,  # written below, with Retry-After in whole seconds, at least 1
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.request_filter(lambda: request.blueprint in EXEMPT_BLUEPRINTS)
    limiter.init_app(app)
    app.extensions[EXTENSION] = limiter

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded) -> Response:
        limit = error.limit
        retry_after = _seconds_until_reset(limiter)
        words = SCOPE_WORDS.get(str(limit.scope), "requests")
        return problem_response(
            Problem(
                f"Too many {words}: the limit is {limit.limit}. Try again in {retry_after} s.",
                status=429,
                code="rate-limited",
                headers={"Retry-After": str(retry_after)},
                limit=str(limit.limit),
                retry_after=retry_after,
            )
        )

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        try:
            reset, remaining = current.window
        except Exception:  # storage trouble must not break the response
            return response
        response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(reset))
        return response

    return limiter


def _seconds_until_reset(limiter: Limiter) -> int:
    current = limiter.current_limit
    if current is None:
        return 1
    try:
        reset = current.window[0]
    except Exception:
        return 1
    return max(1, math.ceil(reset - time.time()))
