"""Operational endpoints: liveness, readiness and Prometheus metrics. None is rate limited."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import text

from . import metrics, migrate
from .auth import bearer_token, current_principal
from .errors import Forbidden, ServiceUnavailable

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
        except Exception:
            # The probe's own error (hosts, ports, a server's message) goes to the log, not to
            # this public answer.
            current_app.logger.warning("readiness probe %s failed", name, exc_info=True)
            raise ServiceUnavailable(
                f"The {name} is unreachable.", code=f"{name}-unreachable"
            ) from None
        checks[name] = "ok"
    return jsonify(status="ready", checks=checks)


@blp.get("/metrics")
def prometheus_metrics():
    """Prometheus text exposition. Send ``Authorization: Bearer <METRICS_TOKEN>`` (the scraper's
    secret) or an operator's API token; any other token is refused (403), no token is 401."""
    state = current_app.extensions["marketplace"]
    expected = state.settings.metrics_token
    token = bearer_token()
    scraper = bool(expected and token and hmac.compare_digest(token.encode(), expected.encode()))
    if not scraper and not current_principal().is_operator:
        raise Forbidden(
            "Metrics are for operators and the metrics scraper.", code="not-an-operator"
        )
    body = metrics.exposition(state.metrics_registry)
    # The classic text format (0.0.4): every Prometheus server reads it; the names need no
    # escaping.
    return Response(body, mimetype=None, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
