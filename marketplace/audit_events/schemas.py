"""The audit log's API contract."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..schemas import PageArgs

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:-]+$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_-]*)*$")
# "+01:00" arrives as " 01:00" when a client forgets to encode "+" in the query string.
_UNENCODED_PLUS = re.compile(r"^(.*T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")


class QueryAwareDateTime(fields.AwareDateTime):
    """An ISO 8601 time with its timezone (``Z`` or an offset); a naive time is refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any):
        if isinstance(value, str) and (match := _UNENCODED_PLUS.match(value.strip())):
            value = f"{match.group(1)}+{match.group(2)}"
        return super()._deserialize(value, attr, data, **kwargs)


class AuditEventListArgs(PageArgs):
    object_id = fields.String(
        data_key="object",
        load_default=None,
        validate=[validate.Length(min=1, max=64), validate.Regexp(_IDENTIFIER)],
        metadata={"description": "The id of the object the events are about, e.g. ord_…"},
    )
    object_type = fields.String(
        load_default=None,
        validate=[validate.Length(min=1, max=64), validate.Regexp(_NAME)],
        metadata={"description": "The kind of object, e.g. order, offer, budget."},
    )
    actor = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=254),
        metadata={
            "description": "Who acted: a user id (usr_…), an e-mail address, or a system actor "
            "(cli, demo, stripe, orders)."
        },
    )
    action = fields.String(
        load_default=None,
        validate=[validate.Length(min=1, max=64), validate.Regexp(_ACTION)],
        metadata={"description": "What was done, e.g. order.place."},
    )
    since = QueryAwareDateTime(
        load_default=None,
        metadata={"description": "Events at or after this time (ISO 8601 with a timezone)."},
    )
    until = QueryAwareDateTime(
        load_default=None,
        metadata={"description": "Events before this time (ISO 8601 with a timezone)."},
    )


class AuditEventSchema(ma.Schema):
    id = fields.String()
    occurred_at = fields.AwareDateTime()
    action = fields.String()
    object_type = fields.String()
    object_id = fields.String()
    actor_user_id = fields.String(allow_none=True)
    actor = fields.String(attribute="actor_label", metadata={"description": "Who, as recorded."})
    before = fields.Dict(allow_none=True)
    after = fields.Dict(allow_none=True)
    request_id = fields.String(allow_none=True)
