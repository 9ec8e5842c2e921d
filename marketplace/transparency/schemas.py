"""The open-data API contract. OCDS packages are documented loosely here (their authority is
the OCDS 1.1 schema, against which the tests validate every package)."""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from ..schemas import QueryInteger

FEED_MAX_LIMIT = 1000


class FeedArgs(ma.Schema):
    since = fields.AwareDateTime(
        load_default=None,
        default_timezone=UTC,
        metadata={
            "description": "Start at the first entry recorded at or after this time (ISO 8601; "
            "UTC when no offset is given). Ignored when `cursor` is given."
        },
    )
    cursor = fields.String(
        load_default=None,
        validate=validate.Length(max=512),
        metadata={"description": "The `next_cursor` of the previous page."},
    )
    limit = QueryInteger(load_default=100, validate=validate.Range(min=1, max=FEED_MAX_LIMIT))


class PublisherSchema(ma.Schema):
    name = fields.String()
    uri = fields.String()


class PackageLinksSchema(ma.Schema):
    next = fields.String(metadata={"description": "The next page, when there is one."})


class _PackageSchema(ma.Schema):
    uri = fields.String()
    version = fields.String()
    publishedDate = fields.String()
    publisher = fields.Nested(PublisherSchema)
    license = fields.String()
    publicationPolicy = fields.String()


class ReleasePackageSchema(_PackageSchema):
    releases = fields.List(
        fields.Dict(), metadata={"description": "OCDS 1.1 releases, in feed order."}
    )
    links = fields.Nested(PackageLinksSchema)
    next_cursor = fields.String(
        metadata={
            "description": "Where to continue: pass as `cursor` (now if `links.next` is set, "
            "later otherwise). Never null."
        }
    )


class RecordSchema(ma.Schema):
    ocid = fields.String()
    releases = fields.List(
        fields.Dict(), metadata={"description": "Embedded releases, oldest first."}
    )
    compiledRelease = fields.Dict()


class RecordPackageSchema(_PackageSchema):
    records = fields.List(fields.Nested(RecordSchema))


class ChangeSchema(ma.Schema):
    kind = fields.String(
        metadata={
            "description": "product.created, product.updated, offer.created, offer.updated, "
            "offer.price_changed, order.awarded, order.updated."
        }
    )
    object_type = fields.String()
    object_id = fields.String()
    recorded_at = fields.AwareDateTime()
    data = fields.Dict(metadata={"description": "The public facts after the change."})
    href = fields.String(metadata={"description": "Where the object's current state is."})
    cursor = fields.String(metadata={"description": "Resume right after this entry."})


class ChangePageSchema(ma.Schema):
    items = fields.List(fields.Nested(ChangeSchema))
    next_cursor = fields.String(
        metadata={"description": "Pass as `cursor` to continue; never null (poll it later)."}
    )
    has_more = fields.Boolean(metadata={"description": "More entries are ready now."})


class FormatArgs(ma.Schema):
    format = fields.String(
        load_default=None,
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "json (default) or csv; `Accept: text/csv` works too."},
    )


class PhbSpendingRowSchema(ma.Schema):
    month = fields.String(metadata={"description": "YYYY-MM (UTC)."})
    commissioner_ods_code = fields.String()
    commissioner_name = fields.String()
    category_code = fields.String()
    category_name = fields.String()
    people = fields.Integer(metadata={"description": "Distinct budget holders."})
    orders = fields.Integer()
    total_pence = fields.Integer(metadata={"description": "Order lines, VAT included."})


class PhbSpendingSchema(ma.Schema):
    min_group_size = fields.Integer(
        metadata={"description": "Groups with fewer distinct people are not published."}
    )
    items = fields.List(fields.Nested(PhbSpendingRowSchema))


class DatasetSchema(ma.Schema):
    name = fields.String()
    title = fields.String()
    columns = fields.List(fields.String())
    csv = fields.String()
    jsonl = fields.String()


class OpenDataIndexSchema(ma.Schema):
    license = fields.String()
    documentation = fields.String()
    datasets = fields.List(fields.Nested(DatasetSchema))
    ocds_releases = fields.String()
    changes = fields.String()
