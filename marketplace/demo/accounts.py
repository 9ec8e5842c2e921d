"""Demo organisations and users: real NHS trusts (ODS codes from the NHS trusts list), an ICB,
suppliers large and small, and a user for every role."""

from __future__ import annotations

import csv
from importlib import resources

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..accounts import service as accounts
from ..accounts.models import ApiToken, Organisation, OrgType, Role, User
from ..db import utcnow
from . import DEMO_ACTOR, DemoContext

# Twenty acute trusts across England: the buyers whose purchase history the demo compares.
DEMO_TRUST_CODES = (
    "RTD",
    "RR8",
    "RCB",
    "R0A",
    "RXW",
    "RJE",
    "RBK",
    "RWE",
    "RWH",
    "RGT",
    "RM1",
    "RDE",
    "RRV",
    "RYJ",
    "RJ1",
    "RJZ",
    "RHM",
    "RTH",
    "RA7",
    "RK9",
)

# (key, name, Companies House number, is SME)
DEMO_SUPPLIERS = (
    ("northgate", "Northgate Medical Supplies Ltd", "04511230", False),
    ("pennine", "Pennine Healthcare Products Ltd", "07322145", True),
    ("solent", "Solent Wound Care Ltd", "09876512", True),
    ("mobility", "Mobility Works Direct Ltd", "06231877", True),
    ("brightcare", "BrightCare Digital Ltd", "11654320", True),
    ("meridian", "Meridian Clinical Ltd", "03340981", False),
)

COMMISSIONER = ("QR1", "NHS Gloucestershire Integrated Care Board")
OPERATOR_ORG = "NHS Open Marketplace Operations"

# (role, email, name, organisation key)
DEMO_USERS = (
    (Role.OPERATOR, "operator@marketplace.demo", "Olu Operator", "operator"),
    (Role.BUYER, "buyer@rtd.demo", "Bea Buyer (Newcastle)", "trust:RTD"),
    (Role.BUYER, "buyer@rr8.demo", "Ben Buyer (Leeds)", "trust:RR8"),
    (Role.SUPPLIER, "sales@northgate.demo", "Sam Supplier (Northgate)", "supplier:northgate"),
    (Role.SUPPLIER, "sales@pennine.demo", "Priya Supplier (Pennine)", "supplier:pennine"),
    (Role.SUPPLIER, "sales@solent.demo", "Sol Supplier (Solent)", "supplier:solent"),
    (Role.SUPPLIER, "sales@mobility.demo", "Mo Supplier (Mobility Works)", "supplier:mobility"),
    (Role.SUPPLIER, "sales@brightcare.demo", "Bri Supplier (BrightCare)", "supplier:brightcare"),
    (Role.SUPPLIER, "sales@meridian.demo", "Meri Supplier (Meridian)", "supplier:meridian"),
    (Role.BUDGET_MANAGER, "manager@icb.demo", "Mia Manager (care coordinator)", "commissioner"),
    (Role.BUDGET_HOLDER, "holder.one@phb.demo", "Harriet Holder", "commissioner"),
    (Role.BUDGET_HOLDER, "holder.two@phb.demo", "Hamid Holder", "commissioner"),
    (Role.BUDGET_HOLDER, "holder.three@phb.demo", "Hope Holder", "commissioner"),
)

# The user whose token is printed for each role.
TOKEN_USERS = {
    "operator": "operator@marketplace.demo",
    "buyer": "buyer@rtd.demo",
    "supplier": "sales@northgate.demo",
    "budget_manager": "manager@icb.demo",
    "budget_holder": "holder.one@phb.demo",
}
DEMO_TOKEN_LABEL = "demo"  # noqa: S105 (a label, not a secret)


def trust_names() -> dict[str, str]:
    with (
        resources.files("marketplace.data").joinpath("nhs_trusts.csv").open(encoding="utf-8") as fh
    ):
        return {row["ods_code"]: row["ods_name"] for row in csv.DictReader(fh)}


def _org(session: Session, **kwargs) -> Organisation:
    if kwargs.get("ods_code"):
        existing = session.scalar(
            select(Organisation).where(Organisation.ods_code == kwargs["ods_code"])
        )
    elif kwargs.get("companies_house_number"):
        existing = session.scalar(
            select(Organisation).where(
                Organisation.companies_house_number == kwargs["companies_house_number"]
            )
        )
    else:
        existing = session.scalar(
            select(Organisation).where(
                Organisation.name == kwargs["name"], Organisation.type == kwargs["type"]
            )
        )
    return existing or accounts.create_organisation(session, DEMO_ACTOR, **kwargs)


def seed(session: Session, context: DemoContext) -> None:
    context.progress("Loading organisations and users…")
    orgs: dict[str, Organisation] = {}
    orgs["operator"] = _org(session, type=OrgType.OPERATOR, name=OPERATOR_ORG)
    names = trust_names()
    for code in DEMO_TRUST_CODES:
        orgs[f"trust:{code}"] = _org(session, type=OrgType.TRUST, name=names[code], ods_code=code)
    for key, name, number, sme in DEMO_SUPPLIERS:
        orgs[f"supplier:{key}"] = _org(
            session, type=OrgType.SUPPLIER, name=name, companies_house_number=number, is_sme=sme
        )
    ods, name = COMMISSIONER
    orgs["commissioner"] = _org(session, type=OrgType.COMMISSIONER, name=name, ods_code=ods)

    users: dict[str, User] = {}
    for role, email, name, org_key in DEMO_USERS:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = accounts.create_user(
                session,
                DEMO_ACTOR,
                organisation_id=orgs[org_key].id,
                role=role,
                email=email,
                name=name,
            )
        users[email] = user
    context.objects["orgs"] = {key: org.id for key, org in orgs.items()}
    context.objects["users"] = {email: user.id for email, user in users.items()}


def issue_tokens(session: Session, context: DemoContext) -> None:
    """A fresh token per role; the previous run's demo tokens are revoked, not piled up."""
    now = utcnow()
    for role, email in TOKEN_USERS.items():
        user = accounts.find_user_by_email(session, email)
        session.execute(
            update(ApiToken)
            .where(
                ApiToken.user_id == user.id,
                ApiToken.label == DEMO_TOKEN_LABEL,
                ApiToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        issued = accounts.issue_token(
            session, DEMO_ACTOR, user, expires_in_days=30, label=DEMO_TOKEN_LABEL
        )
        context.tokens[role] = (email, issued.secret)
