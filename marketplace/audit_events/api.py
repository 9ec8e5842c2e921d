"""``GET /api/v1/audit-events``: the audit log, for operators."""

from __future__ import annotations

from ..accounts.models import Role
from ..auth import authenticated, current_principal
from ..schemas import page_of
from ..web import Blueprint, get_session
from . import service
from .schemas import AuditEventListArgs, AuditEventSchema

blp = Blueprint("audit", __name__, description="The audit log: who did what to which object.")


@blp.route("/audit-events", methods=["GET"])
@authenticated(Role.OPERATOR)
@blp.arguments(AuditEventListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(AuditEventSchema))
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def list_audit_events(limit: int, cursor: str | None, **filters):
    """Audit events, newest first (operators only). Filters combine; `since` is inclusive,
    `until` exclusive, and both need a timezone (`Z` or an offset, with `+` sent as `%2B`)."""
    return service.list_audit_events(
        get_session(),
        current_principal(),
        service.AuditFilters(**filters),
        cursor=cursor,
        limit=limit,
    )
