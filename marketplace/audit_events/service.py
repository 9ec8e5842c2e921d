"""Querying the audit log: filters, newest first, one keyset page at a time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..accounts import service as accounts
from ..accounts.service import Principal
from ..audit import AuditEvent
from ..errors import Forbidden, NotFound, ValidationFailed
from ..pagination import DEFAULT_LIMIT, Page, paginate

USER_ID_PREFIX = "usr_"
SYSTEM_ACTOR = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # "cli", "demo", "stripe", ...
ORDER = (AuditEvent.occurred_at, AuditEvent.id)


@dataclass(frozen=True)
class AuditFilters:
    """Every filter is optional; given together they all apply. ``since`` is inclusive and
    ``until`` exclusive; both must be timezone-aware."""

    object_id: str | None = None
    object_type: str | None = None
    actor: str | None = None  # a user id (usr_…), an e-mail, or a system actor such as "cli"
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_audit_events(
    session: Session,
    actor: Principal,
    filters: AuditFilters,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[AuditEvent]:
    """The events matching ``filters``, newest first (operators only)."""
    if not actor.is_operator:
        raise Forbidden("The audit log is for operators.", code="not-an-operator")
    stmt = audit_events_query(session, filters)
    return paginate(session, stmt, order_by=ORDER, cursor=cursor, limit=limit, descending=True)


def audit_events_query(session: Session, filters: AuditFilters) -> Select[tuple[AuditEvent]]:
    _check_window(filters)
    stmt = select(AuditEvent)
    if filters.object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == filters.object_id)
    if filters.object_type is not None:
        stmt = stmt.where(AuditEvent.object_type == filters.object_type)
    if filters.action is not None:
        stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.actor is not None:
        stmt = stmt.where(_actor_condition(session, filters.actor))
    if filters.since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < filters.until)
    return stmt


def _check_window(filters: AuditFilters) -> None:
    errors: dict[str, list[str]] = {}
    for name in ("since", "until"):
        value = getattr(filters, name)
        if value is not None and value.utcoffset() is None:
            errors[name] = ["Give a timezone, e.g. 2026-01-31T09:00:00Z."]
    if not errors and filters.since and filters.until and filters.until <= filters.since:
        errors["until"] = ["Must be later than since."]
    if errors:
        raise ValidationFailed("The time window is not valid.", errors=errors)


def _actor_condition(session: Session, reference: str) -> ColumnElement[bool]:
    """A user by id or e-mail (the e-mail recorded at the time counts too), or a system actor."""
    ref = reference.strip()
    if ref.startswith(USER_ID_PREFIX):
        return AuditEvent.actor_user_id == ref
    if "@" in ref:
        email = ref.lower()
        try:
            user = accounts.find_user_by_email(session, email)
        except NotFound:
            return AuditEvent.actor_label == email
        return or_(AuditEvent.actor_user_id == user.id, AuditEvent.actor_label == email)
    if SYSTEM_ACTOR.match(ref):
        return (AuditEvent.actor_user_id.is_(None)) & (AuditEvent.actor_label == ref)
    raise ValidationFailed(
        "The actor filter is not valid.",
        errors={"actor": ["A user id (usr_…), an e-mail address, or a system actor such as cli."]},
    )
