"""Operator endpoints for organisations and users, and ``/me`` for any token holder."""

from __future__ import annotations

from ..auth import authenticated, current_principal
from ..pagination import paginate
from ..schemas import page_of
from ..web import Blueprint, get_session
from . import service
from .models import Organisation, Role, User
from .schemas import MeSchema, OrganisationListArgs, OrganisationSchema, UserListArgs, UserSchema

blp = Blueprint("accounts", __name__, description="Organisations, users and the caller's identity.")


@blp.route("/organisations", methods=["GET"])
@authenticated(Role.OPERATOR)
@blp.arguments(OrganisationListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(OrganisationSchema))
def list_organisations(limit: int, cursor: str | None, type=None):
    """List organisations (operators only)."""
    session = get_session()
    stmt = service.list_organisations(session, type=type)
    return paginate(
        session,
        stmt,
        order_by=[Organisation.created_at, Organisation.id],
        cursor=cursor,
        limit=limit,
    )


@blp.route("/organisations", methods=["POST"])
@authenticated(Role.OPERATOR)
@blp.arguments(OrganisationSchema)
@blp.response(201, OrganisationSchema)
@blp.alt_response(409, response="CONFLICT")
def create_organisation(body: dict):
    """Onboard an organisation (operators only)."""
    return service.create_organisation(get_session(), current_principal(), **body)


@blp.route("/organisations/<string:org_id>", methods=["GET"])
@authenticated(Role.OPERATOR)
@blp.response(200, OrganisationSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_organisation(org_id: str):
    """One organisation (operators only)."""
    return service.get_organisation(get_session(), org_id)


@blp.route("/users", methods=["GET"])
@authenticated(Role.OPERATOR)
@blp.arguments(UserListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(UserSchema))
def list_users(limit: int, cursor: str | None, organisation_id=None, role=None):
    """List users (operators only)."""
    session = get_session()
    stmt = service.list_users(session, organisation_id=organisation_id, role=role)
    return paginate(session, stmt, order_by=[User.created_at, User.id], cursor=cursor, limit=limit)


@blp.route("/users", methods=["POST"])
@authenticated(Role.OPERATOR)
@blp.arguments(UserSchema)
@blp.response(201, UserSchema)
@blp.alt_response(409, response="CONFLICT")
def create_user(body: dict):
    """Create a user in an organisation (operators only)."""
    return service.create_user(get_session(), current_principal(), **body)


@blp.route("/me", methods=["GET"])
@authenticated()
@blp.response(200, MeSchema)
def me():
    """Who the token belongs to."""
    principal = current_principal()
    user = service.get_user(get_session(), principal.user_id)
    return {"user": user, "organisation": user.organisation}
