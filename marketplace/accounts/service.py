"""Organisations, users and API tokens: the business rules."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..db import utcnow
from ..errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from .models import ROLE_ORG_TYPES, ApiToken, Organisation, OrgType, Role, User

TOKEN_PREFIX = "mkt_"  # noqa: S105 (a public prefix, not a secret)
ODS_CODE = re.compile(r"^[A-Z0-9]{3,10}$")
COMPANIES_HOUSE_NUMBER = re.compile(r"^(?:[0-9]{8}|[A-Z]{2}[0-9]{6})$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NHS_ORG_TYPES = (OrgType.TRUST, OrgType.COMMISSIONER)


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user (through a token) or the system (CLI, demo, background work)."""

    user_id: str | None
    organisation_id: str | None
    role: Role | None
    label: str
    request_id: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Principal:
        return cls(user_id=None, organisation_id=None, role=Role.OPERATOR, label=label)

    @classmethod
    def for_user(cls, user: User, request_id: str | None = None) -> Principal:
        return cls(
            user_id=user.id,
            organisation_id=user.organisation_id,
            role=user.role,
            label=user.email,
            request_id=request_id,
        )

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles


ORG_FIELDS = ("type", "name", "ods_code", "companies_house_number", "is_sme")
USER_FIELDS = ("organisation_id", "role", "email", "name", "is_active")


def create_organisation(
    session: Session,
    actor: Principal,
    *,
    type: OrgType | str,
    name: str,
    ods_code: str | None = None,
    companies_house_number: str | None = None,
    is_sme: bool = False,
) -> Organisation:
    org_type = OrgType(type)
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["A name is required."]
    ods = ods_code.strip().upper() if ods_code else None
    if ods and not ODS_CODE.match(ods):
        errors["ods_code"] = ["An ODS code is 3 to 10 letters and digits, e.g. RTD."]
    if ods and org_type not in (*NHS_ORG_TYPES, OrgType.OPERATOR):
        errors["ods_code"] = ["Only NHS bodies (trusts, commissioners) carry an ODS code."]
    if org_type == OrgType.TRUST and not ods:
        errors["ods_code"] = ["A trust needs its ODS code."]
    number = companies_house_number.strip().upper() if companies_house_number else None
    if number and not COMPANIES_HOUSE_NUMBER.match(number):
        errors["companies_house_number"] = [
            "A Companies House number is 8 characters, e.g. 01234567 or SC123456."
        ]
    if (number or is_sme) and org_type != OrgType.SUPPLIER:
        errors["companies_house_number" if number else "is_sme"] = [
            "Only suppliers carry a Companies House number and an SME flag."
        ]
    if errors:
        raise ValidationFailed("The organisation is not valid.", errors=errors)
    if ods and session.scalar(select(Organisation.id).where(Organisation.ods_code == ods)):
        raise Conflict(
            f"An organisation with ODS code {ods} already exists.", code="duplicate-ods-code"
        )
    if number and session.scalar(
        select(Organisation.id).where(Organisation.companies_house_number == number)
    ):
        raise Conflict(
            f"An organisation with Companies House number {number} already exists.",
            code="duplicate-companies-house-number",
        )
    org = Organisation(
        type=org_type, name=name, ods_code=ods, companies_house_number=number, is_sme=bool(is_sme)
    )
    session.add(org)
    session.flush()
    audit.record(
        session,
        actor,
        "organisation.create",
        "organisation",
        org.id,
        after=audit.snapshot(org, ORG_FIELDS),
    )
    return org


def get_organisation(session: Session, org_id: str) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"No organisation with id {org_id!r}.", code="organisation-not-found")
    return org


def find_organisation(session: Session, reference: str) -> Organisation:
    """By id, ODS code or exact name (the CLI accepts any of them)."""
    ref = reference.strip()
    org = session.get(Organisation, ref)
    if org is None:
        org = session.scalar(select(Organisation).where(Organisation.ods_code == ref.upper()))
    if org is None:
        matches = session.scalars(select(Organisation).where(Organisation.name == ref)).all()
        if len(matches) > 1:
            raise Conflict(
                f"More than one organisation is named {ref!r}; use its id.",
                code="ambiguous-organisation",
            )
        org = matches[0] if matches else None
    if org is None:
        raise NotFound(
            f"No organisation with id, ODS code or name {ref!r}.", code="organisation-not-found"
        )
    return org


def organisations_by_id(session: Session, org_ids: Iterable[str]) -> dict[str, Organisation]:
    """Many organisations at once, keyed by id (unknown ids are left out)."""
    ids = list(dict.fromkeys(org_ids))
    found: dict[str, Organisation] = {}
    for start in range(0, len(ids), 1000):
        for org in session.scalars(
            select(Organisation).where(Organisation.id.in_(ids[start : start + 1000]))
        ):
            found[org.id] = org
    return found


def find_trust_by_ods(session: Session, ods_code: str) -> Organisation | None:
    return session.scalar(
        select(Organisation).where(
            Organisation.ods_code == ods_code.strip().upper(), Organisation.type == OrgType.TRUST
        )
    )


def create_user(
    session: Session,
    actor: Principal,
    *,
    organisation_id: str,
    role: Role | str,
    email: str,
    name: str | None = None,
) -> User:
    try:
        role = Role(role)
    except ValueError:
        raise ValidationFailed(
            "Unknown role.", errors={"role": [f"{role!r} is not a role."]}
        ) from None
    org = get_organisation(session, organisation_id)
    email = (email or "").strip().lower()
    if not EMAIL.match(email):
        raise ValidationFailed(
            "The user is not valid.", errors={"email": ["Not a valid email address."]}
        )
    if org.type not in ROLE_ORG_TYPES[role]:
        allowed = " or ".join(t.value for t in ROLE_ORG_TYPES[role])
        raise ValidationFailed(
            "The role does not fit the organisation.",
            errors={"role": [f"A {role.value} belongs to a {allowed}, not a {org.type.value}."]},
        )
    if session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"A user with email {email} already exists.", code="duplicate-email")
    user = User(organisation_id=org.id, role=role, email=email, name=(name or "").strip() or None)
    session.add(user)
    session.flush()
    audit.record(
        session, actor, "user.create", "user", user.id, after=audit.snapshot(user, USER_FIELDS)
    )
    return user


def find_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"No user with email {email!r}.", code="user-not-found")
    return user


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id!r}.", code="user-not-found")
    return user


def hash_token(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


def issue_token(
    session: Session,
    actor: Principal,
    user: User,
    *,
    expires_in_days: int | None = None,
    label: str | None = None,
    now: datetime | None = None,
) -> IssuedToken:
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValidationFailed(
            "A token must expire in the future.",
            errors={"expires_in_days": ["Must be at least 1."]},
        )
    now = now or utcnow()
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        token_hash=hash_token(secret),
        label=label,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "token.create",
        "api_token",
        token.id,
        after={"user_id": user.id, "expires_at": token.expires_at, "label": label},
    )
    return IssuedToken(token=token, secret=secret)


def revoke_token(
    session: Session, actor: Principal, token_id: str, *, now: datetime | None = None
) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"No token with id {token_id!r}.", code="token-not-found")
    if actor.role != Role.OPERATOR and token.user_id != actor.user_id:
        raise NotFound(f"No token with id {token_id!r}.", code="token-not-found")
    if token.revoked_at is None:
        token.revoked_at = now or utcnow()
        audit.record(
            session,
            actor,
            "token.revoke",
            "api_token",
            token.id,
            after={"revoked_at": token.revoked_at},
        )
    return token


def authenticate(session: Session, raw_token: str, *, now: datetime | None = None) -> User:
    """The active user a bearer token stands for, or ``Unauthorized``."""
    if not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 200:
        raise Unauthorized("The bearer token is not valid.")
    digest = hash_token(raw_token)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise Unauthorized("The bearer token is not valid.")
    now = now or utcnow()
    if token.revoked_at is not None:
        raise Unauthorized("The bearer token has been revoked.")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("The bearer token has expired.")
    if not token.user.is_active:
        raise Unauthorized("The user behind this token is disabled.")
    return token.user


def list_organisations(session: Session, *, type: OrgType | None = None):
    stmt = select(Organisation)
    if type is not None:
        stmt = stmt.where(Organisation.type == type)
    return stmt


def list_users(session: Session, *, organisation_id: str | None = None, role: Role | None = None):
    stmt = select(User)
    if organisation_id:
        stmt = stmt.where(User.organisation_id == organisation_id)
    if role:
        stmt = stmt.where(User.role == role)
    return stmt


def require_role(actor: Principal, *roles: Role) -> None:
    if actor.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"This action needs one of the roles: {allowed}.", code="wrong-role")
