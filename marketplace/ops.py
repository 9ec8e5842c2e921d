"""Operational endpoints: liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from . import migrate
from .errors import ServiceUnavailable

blp = Blueprint("ops", __name__)


@blp.get("/healthz")
def healthz():
    """The process is alive."""
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz():
    """The database is reachable and migrated to this release's head (or beyond it, by a newer
    release during a rolling deploy); the search backend answers."""
    state = current_app.extensions["marketplace"]
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # any driver error means not ready
        raise ServiceUnavailable(
            f"The database is unreachable: {type(error).__name__}.", code="database-unreachable"
        ) from None
    current = migrate.current_revisions(state.engine)
    heads = migrate.head_revisions(state.settings)
    if current == heads:
        checks["migrations"] = "ok"
    elif current and not current & migrate.known_revisions(state.settings):
        # A newer release migrated the database during a rolling deploy. Migrations are
        # backward compatible (docs/operations.md), so this release keeps serving until it is
        # replaced, rather than every old instance dropping out of the load balancer at once.
        checks["migrations"] = "ahead: migrated by a newer release"
    else:
        raise ServiceUnavailable(
            "The database is not migrated: run 'marketplace db upgrade'.",
            code="database-not-migrated",
            current_revisions=sorted(current),
            head_revisions=sorted(heads),
        )
    probe = state.readiness_probes
    for name, check in probe.items():
        try:
            check()
        except Exception as error:
            raise ServiceUnavailable(
                f"The {name} is unreachable: {error}", code=f"{name}-unreachable"
            ) from None
        checks[name] = "ok"
    return jsonify(status="ready", checks=checks)
