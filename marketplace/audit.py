"""The audit log: who did what to which object, when, with the change. One helper, ``record``,
called by every service that writes, inside the same transaction as the write."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, String, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, PublicIdMixin, new_id, utcnow

if TYPE_CHECKING:
    from .accounts.service import Principal

JSONType = JSON().with_variant(JSONB(), "postgresql")


class AuditEvent(PublicIdMixin, Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
        # The operators' audit endpoint filters by object id alone, newest first.
        Index("ix_audit_events_object_id_occurred_at", "object_id", "occurred_at"),
    )
    id_prefix = "aud"

    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor_label: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(64))


def jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def snapshot(obj: Any, fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {name: jsonable(getattr(obj, name)) for name in fields}


def _event_values(
    actor: Principal,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "actor_user_id": actor.user_id,
        "actor_label": actor.label,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": jsonable(before) if before is not None else None,
        "after": jsonable(after) if after is not None else None,
        "request_id": actor.request_id,
    }


def record(
    session: Session,
    actor: Principal,
    action: str,
    object_type: str,
    object_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add the event to the session: it is written with the session's next flush."""
    event = AuditEvent(**_event_values(actor, action, object_type, object_id, before, after))
    session.add(event)
    return event


def record_now(
    session: Session,
    actor: Principal,
    action: str,
    object_type: str,
    object_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> str:
    """Write the event at once with a plain INSERT (no unit-of-work flush), for hot paths such as
    a budget hold. Returns the event's id."""
    values = _event_values(actor, action, object_type, object_id, before, after)
    event_id = new_id(AuditEvent.id_prefix)
    session.execute(
        insert(AuditEvent.__table__), [{"id": event_id, "occurred_at": utcnow(), **values}]
    )
    return event_id
