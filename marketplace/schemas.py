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


class CompiledDump:
    """A schema mixin whose ``dump`` runs a function built once from the schema's fields, for
    responses with hundreds of values (a search page and its facets), where marshmallow's
    generic per-value path costs more than the search. Each value still goes through its
    field's own ``_serialize``, so the output is ``Schema.dump``'s; nested schemas (alone or in
    lists) are built the same way, on first use. What the builder does not reproduce is left
    to marshmallow: a schema with dump hooks or its own ``get_attribute`` is dumped by it, and
    so is a field with its own ``get_value``, a dotted ``attribute``, no attribute at all
    (``Method``, ``Function``), or its own way of dumping a nested schema (``Pluck``)."""

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        many = self.many if many is None else bool(many)  # type: ignore[attr-defined]
        if "_compiled_dump" not in self.__dict__:
            self.__dict__["_compiled_dump"] = _compiled(self)  # type: ignore[arg-type]
        dumper = self.__dict__["_compiled_dump"]
        if dumper is None:
            return ma.Schema.dump(self, obj, many=many)  # type: ignore[arg-type]
        if many and obj is not None:
            return [dumper(each) for each in obj]
        return dumper(obj)


_Dumper = Any  # a function: object -> dict


def _compiled(schema: ma.Schema) -> _Dumper | None:
    """The schema's dump of one object, or None when marshmallow must dump it."""
    if schema._hooks[ma.decorators.PRE_DUMP] or schema._hooks[ma.decorators.POST_DUMP]:
        return None
    if type(schema).get_attribute is not ma.Schema.get_attribute:
        return None
    plan = [_field_plan(schema, name, field) for name, field in schema.dump_fields.items()]
    dict_class = schema.dict_class
    missing = ma.missing

    def dump(obj: Any) -> dict:
        result = dict_class()
        for key, value_of in plan:
            value = value_of(obj)
            if value is not missing:
                result[key] = value
        return result

    return dump


def _field_plan(schema: ma.Schema, name: str, field: fields.Field) -> tuple[str, _Dumper]:
    key = field.data_key if field.data_key is not None else name
    attr = field.attribute or name
    plain = type(field).get_value is fields.Field.get_value
    if not (plain and field._CHECK_ATTRIBUTE) or "." in attr:
        return key, lambda obj: field.serialize(name, obj, accessor=schema.get_attribute)
    convert = _converter(field)
    default, missing = field.dump_default, ma.missing

    def value_of(obj: Any) -> Any:
        value = _value(obj, attr)
        if value is missing:
            value = default() if callable(default) else default
            if value is missing:
                return missing
        return convert(value, name, obj)  # marshmallow passes the field's name, not its attribute

    return key, value_of


def _value(obj: Any, attr: str) -> Any:
    """``obj``'s ``attr`` as marshmallow reads it: by key when it has items, else by name."""
    if not hasattr(obj, "__getitem__"):
        return getattr(obj, attr, ma.missing)
    try:
        return obj[attr]
    except (KeyError, IndexError, TypeError, AttributeError):
        return getattr(obj, attr, ma.missing)


def _converter(field: fields.Field) -> _Dumper:
    """``field``'s ``_serialize``, with a nested schema (alone or in a list) built on first use
    (so a schema may nest itself) when marshmallow would dump it plainly."""
    if type(field)._serialize is fields.Nested._serialize:
        built: list[_Dumper | None] = []

        def nested_value(value: Any, attr: str, obj: Any) -> Any:
            if not built:
                built.append(_compiled(field.schema))
            schema = field.schema
            many = schema.many or field.many
            if value is None or built[0] is None:
                return field._serialize(value, attr, obj)
            return [built[0](each) for each in value] if many else built[0](value)

        return nested_value
    if type(field)._serialize is fields.List._serialize:
        inner = _converter(field.inner)

        def list_value(value: Any, attr: str, obj: Any) -> Any:
            return None if value is None else [inner(each, attr, obj) for each in value]

        return list_value
    return field._serialize


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
