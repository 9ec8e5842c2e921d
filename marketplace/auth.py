"""Bearer-token authentication and role checks for views.

``authenticated(*roles)`` authenticates the request before anything else is parsed, checks the
role (403 when wrong), stores the ``Principal`` for the view, and documents the security
requirement and the 401/403 answers in the OpenAPI document. Per-object checks (another
organisation's object answers 404) belong to the services.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request
from flask_smorest import Blueprint

from .accounts.models import Role
from .accounts.service import Principal, authenticate, require_role
from .errors import Unauthorized
from .web import get_session, request_id

F = TypeVar("F", bound=Callable[..., Any])
SECURITY_SCHEME = "bearerAuth"


def bearer_token() -> str | None:
    """The bearer token the request sends, if any (never raises; authentication does)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _bearer_token() -> str:
    """The request's bearer token, or 401 saying what is wrong with the header."""
    token = bearer_token()
    if token is not None:
        return token
    if not request.headers.get("Authorization"):
        raise Unauthorized(
            "This endpoint needs an API token: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="marketplace"'},
            code="missing-token",
        )
    raise Unauthorized("The Authorization header must be 'Bearer <token>'.")


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        principal = optional_principal()
        if principal is None:
            raise Unauthorized("This endpoint needs an API token.", code="missing-token")
    return principal


def optional_principal() -> Principal | None:
    """The caller when a token is given (public endpoints that show more to insiders)."""
    if "principal" in g:
        return g.principal
    if "Authorization" not in request.headers:
        return None
    user = authenticate(get_session(), _bearer_token())
    g.principal = Principal.for_user(user, request_id())
    return g.principal


def authenticated(*roles: Role) -> Callable[[F], F]:
    """Require a valid token, and one of ``roles`` when any are given."""

    def decorator(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = authenticate(get_session(), _bearer_token())
            principal = Principal.for_user(user, request_id())
            if roles:
                require_role(principal, *roles)
            g.principal = principal
            return func(*args, **kwargs)

        responses: dict[str, str] = {"401": "UNAUTHORIZED"}
        if roles:
            responses["403"] = "FORBIDDEN"
        documented = Blueprint.doc(security=[{SECURITY_SCHEME: []}], responses=responses)
        return documented(wrapper)  # type: ignore[return-value]

    return decorator
