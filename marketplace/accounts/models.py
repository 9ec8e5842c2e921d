from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, PublicIdMixin, TimestampMixin


class OrgType(enum.StrEnum):
    TRUST = "trust"
    SUPPLIER = "supplier"
    COMMISSIONER = "commissioner"
    OPERATOR = "operator"


class Role(enum.StrEnum):
    BUYER = "buyer"
    SUPPLIER = "supplier"
    BUDGET_HOLDER = "budget_holder"
    BUDGET_MANAGER = "budget_manager"
    OPERATOR = "operator"


# Which organisation types a user of each role may belong to.
ROLE_ORG_TYPES: dict[Role, tuple[OrgType, ...]] = {
    Role.BUYER: (OrgType.TRUST,),
    Role.SUPPLIER: (OrgType.SUPPLIER,),
    Role.BUDGET_HOLDER: (OrgType.COMMISSIONER,),
    Role.BUDGET_MANAGER: (OrgType.COMMISSIONER,),
    Role.OPERATOR: (OrgType.OPERATOR,),
}


def enum_column(enum_cls: type[enum.Enum], name: str) -> Enum:
    """Enums stored as their values, as a VARCHAR with a CHECK constraint on both databases."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Organisation(PublicIdMixin, TimestampMixin, Base):
    __tablename__ = "organisations"
    id_prefix = "org"

    type: Mapped[OrgType] = mapped_column(enum_column(OrgType, "org_type"))
    name: Mapped[str] = mapped_column(String(200))
    ods_code: Mapped[str | None] = mapped_column(String(12), unique=True)
    companies_house_number: Mapped[str | None] = mapped_column(String(8), unique=True)
    is_sme: Mapped[bool] = mapped_column(Boolean, default=False)

    users: Mapped[list[User]] = relationship(back_populates="organisation")


class User(PublicIdMixin, TimestampMixin, Base):
    __tablename__ = "users"
    id_prefix = "usr"

    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role, "user_role"))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)

    organisation: Mapped[Organisation] = relationship(back_populates="users", lazy="joined")


class ApiToken(PublicIdMixin, Base):
    """A bearer token. Only its SHA-256 hash is stored; the token is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user_id", "user_id"),)
    id_prefix = "tok"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")
