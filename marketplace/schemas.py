"""Schemas and fields shared by every domain's API contract."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from .money import unit_price_json
from .pagination import DEFAULT_LIMIT, MAX_LIMIT

_DIGITS = re.compile(r"-?[0-9]{1,15}")


class StrictInteger(fields.Integer):
    """An integer that refuses ``2.5``, ``1e-9`` and numeric strings in JSON bodies."""

    def __init__(self, **kwargs: Any):
        kwargs["strict"] = True
        super().__init__(**kwargs)


class QueryInteger(fields.Integer):
    """An integer from a query string: plain digits only (``10``), never ``2.5`` or ``1e3``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not _DIGITS.fullmatch(value.strip()):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Pence(StrictInteger):
    """An amount of money in integer pence (never negative unless ``signed=True``)."""

    def __init__(self, *, signed: bool = False, **kwargs: Any):
        if not signed:
            kwargs.setdefault("validate", validate.Range(min=0, max=10**12))
        metadata = kwargs.setdefault("metadata", {})
        metadata.setdefault("description", "Integer pence (GBP minor units).")
        super().__init__(**kwargs)


class UnitPrice(fields.Field):
    """A derived per-unit price in pence: a JSON number with up to 4 decimal places."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metadata", {}).setdefault("minimum", 0)
        super().__init__(**kwargs)

    def _serialize(
        self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any
    ) -> float | None:
        return unit_price_json(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ma.ValidationError("Not a number.")
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            raise ma.ValidationError("Not a number.") from None
        if not number.is_finite() or number < 0:
            raise ma.ValidationError("Must be a finite, non-negative number of pence.")
        return number


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details. Problems may carry extension members of their own (RFC 9457
    §3.2: e.g. ``existing_offer_id``, ``reasons``, ``missing_columns``), so others are allowed."""

    class Meta:
        unknown = ma.INCLUDE

    type = fields.String(metadata={"description": "URI identifying the problem type."})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Raw(
        metadata={"description": "Field-level validation errors, field → messages."}
    )
    request_id = fields.String()


class RowErrorSchema(ma.Schema):
    """A row an import refused: where, which column, and why."""

    row = fields.Integer(metadata={"description": "Row in the file; the header is row 1."})
    column = fields.String()
    reason = fields.String()


class PageArgs(ma.Schema):
    limit = QueryInteger(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))


_page_schemas: dict[str, type[ma.Schema]] = {}


def page_of(item_schema: type[ma.Schema]) -> type[ma.Schema]:
    """A ``{items: [...], next_cursor}`` schema for a list endpoint."""
    name = item_schema.__name__.removesuffix("Schema") + "PageSchema"
    if name not in _page_schemas:
        _page_schemas[name] = type(
            name,
            (ma.Schema,),
            {
                "items": fields.List(fields.Nested(item_schema), required=True),
                "next_cursor": fields.String(
                    allow_none=True,
                    metadata={
                        "description": "Pass as `cursor` for the next page; null on the last page."
                    },
                ),
            },
        )
    return _page_schemas[name]
