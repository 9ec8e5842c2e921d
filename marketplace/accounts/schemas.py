from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from ..schemas import PageArgs
from .models import OrgType, Role


class OrganisationSchema(ma.Schema):
    id = fields.String(dump_only=True)
    type = fields.Enum(OrgType, by_value=True, required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    ods_code = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=12))
    companies_house_number = fields.String(
        allow_none=True, load_default=None, validate=validate.Length(max=8)
    )
    is_sme = fields.Boolean(load_default=False)
    created_at = fields.AwareDateTime(dump_only=True)


class OrganisationListArgs(PageArgs):
    type = fields.Enum(OrgType, by_value=True, load_default=None)


class UserSchema(ma.Schema):
    id = fields.String(dump_only=True)
    organisation_id = fields.String(required=True, validate=validate.Length(max=40))
    role = fields.Enum(Role, by_value=True, required=True)
    email = fields.String(required=True, validate=validate.Length(max=254))
    name = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=200))
    is_active = fields.Boolean(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class UserListArgs(PageArgs):
    organisation_id = fields.String(load_default=None, validate=validate.Length(max=40))
    role = fields.Enum(Role, by_value=True, load_default=None)


class MeSchema(ma.Schema):
    user = fields.Nested(UserSchema)
    organisation = fields.Nested(OrganisationSchema)
