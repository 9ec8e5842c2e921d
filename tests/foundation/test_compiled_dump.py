"""``CompiledDump``: a schema's ``dump`` through a function built once from its fields gives
exactly what marshmallow's own ``Schema.dump`` gives, for the search response on random
results and for the marshmallow features the builder handles itself or leaves to marshmallow."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import marshmallow as ma
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import fields

from marketplace.catalog.search.base import (
    BestOffer,
    CategoryFacet,
    CategoryRef,
    Facets,
    PriceFacet,
    PriceRange,
    SearchItem,
    SearchResult,
    SupplierFacet,
    SupplierRef,
    ValueFacet,
)
from marketplace.catalog.search.schemas import SearchResultSchema
from marketplace.money import unit_price
from marketplace.schemas import CompiledDump, UnitPrice


def marshmallow_dump(schema: ma.Schema, obj, many: bool | None = None):
    return ma.Schema.dump(schema, obj, many=many)


texts = st.text(max_size=12)
maybe_texts = st.none() | texts
counts = st.integers(min_value=0, max_value=10**6)
# Exact unit prices as the search makes them (pack price / units), extremes included.
prices = st.builds(
    unit_price,
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=1, max_value=10**6),
)
suppliers = st.builds(SupplierRef, id=texts, name=texts, is_sme=st.booleans())
items = st.builds(
    SearchItem,
    id=texts,
    name=texts,
    gtin=maybe_texts,
    manufacturer_part_number=maybe_texts,
    category=st.builds(CategoryRef, code=texts, name=texts),
    kind=texts,
    phb_eligible=st.booleans(),
    unit_of_measure=texts,
    units_per_pack=counts,
    in_stock=st.booleans(),
    offer_count=counts,
    best_offer=st.builds(
        BestOffer,
        id=texts,
        supplier=suppliers,
        pack_price_pence=counts,
        unit_price_pence=prices,
        in_stock=st.booleans(),
    ),
    unit_price_range=st.builds(PriceRange, min_pence=prices, max_pence=prices),
)
facets = st.builds(
    Facets,
    category=st.lists(
        st.builds(CategoryFacet, code=texts, name=texts, parent_code=maybe_texts, count=counts),
        max_size=4,
    ),
    supplier=st.lists(
        st.builds(SupplierFacet, id=texts, name=texts, is_sme=st.booleans(), count=counts),
        max_size=4,
    ),
    kind=st.lists(st.builds(ValueFacet, value=texts, count=counts), max_size=3),
    unit_price=st.lists(
        st.builds(
            PriceFacet,
            key=texts,
            min_pence=st.none() | prices,
            max_pence=st.none() | prices,
            count=counts,
        ),
        max_size=5,
    ),
)
results = st.builds(
    SearchResult,
    items=st.lists(items, max_size=4),
    facets=facets,
    total=counts,
    next_cursor=maybe_texts,
)


@settings(max_examples=200, deadline=None)
@given(results)
def test_the_search_response_dumps_as_marshmallow_dumps_it(result):
    schema = SearchResultSchema()
    assert schema.dump(result) == marshmallow_dump(schema, result)


@dataclass
class Thing:
    name: str | None
    price: Decimal | None
    tags: list[str] | None
    parts: list[dict] | None


class PartSchema(ma.Schema):
    label = fields.String(data_key="title")
    weight = fields.Integer(dump_default=7)


class ThingSchema(CompiledDump, ma.Schema):
    name = fields.String(allow_none=True)
    renamed = fields.String(attribute="name", data_key="display_name", dump_only=True)
    price = UnitPrice(allow_none=True)
    tags = fields.List(fields.String(), allow_none=True)
    parts = fields.List(fields.Nested(PartSchema), allow_none=True)
    labels = fields.Nested(
        PartSchema, attribute="parts", many=True, only=("label",), dump_only=True
    )
    every_part = fields.Nested(PartSchema(many=True), attribute="parts", dump_only=True)
    shouted = fields.Method("shout")
    secret = fields.String(load_only=True)
    absent = fields.String()  # no such attribute: left out, as marshmallow leaves it out

    def shout(self, obj: Thing | dict) -> str | None:
        name = obj["name"] if isinstance(obj, dict) else obj.name
        return name.upper() if name else None


def test_renames_defaults_lists_nested_subsets_methods_and_absent_values_dump_alike():
    things = [
        Thing(
            "gauze", Decimal("2.56245"), ["a", "b"], [{"label": "x"}, {"label": "y", "weight": 3}]
        ),
        Thing(None, None, None, None),
        Thing("", Decimal(10) ** 27 / 3, [], []),
    ]
    schema = ThingSchema()
    for thing in things:
        assert schema.dump(thing) == marshmallow_dump(schema, thing)
    assert schema.dump(things, many=True) == marshmallow_dump(schema, things, many=True)
    dumped = schema.dump(things[0])
    assert dumped["display_name"] == "gauze"
    assert "absent" not in dumped
    assert "secret" not in dumped
    assert dumped["labels"] == [{"title": "x"}, {"title": "y"}]
    assert dumped["every_part"] == dumped["parts"]
    assert dumped["parts"] == [{"title": "x", "weight": 7}, {"title": "y", "weight": 3}]
    assert dumped["price"] == 2.5624  # half to even at 4 places
    # Plain dicts dump alike too.
    as_dict = {"name": "gauze", "price": Decimal(1), "tags": None, "parts": None}
    assert schema.dump(as_dict) == marshmallow_dump(schema, as_dict)


class Leaf(ma.Schema):
    id = fields.String()
    v = fields.Integer()


class Collected(ma.Schema):
    """Dump hooks that see the whole list when dumped with ``many``."""

    v = fields.Integer()

    @ma.post_dump(pass_collection=True)
    def counted(self, data, many, **kwargs):
        return {"n": len(data), "many": many} if many else {**data, "many": many}


class OwnAccessor(ma.Schema):
    v = fields.Integer()

    def get_attribute(self, obj, attr, default):
        return 42


class Shouting(fields.String):
    def get_value(self, obj, attr, accessor=None, default=ma.missing):
        return "override"


class NamedBy(fields.Field):
    """Dumps the ``attr`` marshmallow hands ``_serialize``: the field's name."""

    def _serialize(self, value, attr, obj, **kwargs):
        return attr


class Tree(ma.Schema):
    name = fields.String()
    children = fields.List(fields.Nested(lambda: Tree()))


class Everything(CompiledDump, ma.Schema):
    plucked = fields.Pluck(Leaf, "id", attribute="leaf", dump_only=True)
    plucked_many = fields.Pluck(Leaf, "id", many=True, attribute="leaves", dump_only=True)
    collected = fields.Nested(Collected, many=True, attribute="leaves", dump_only=True)
    one_collected = fields.Nested(Collected, attribute="leaf", dump_only=True)
    accessed = fields.Nested(OwnAccessor, attribute="leaf", dump_only=True)
    shouting = Shouting(attribute="name", dump_only=True)
    named = NamedBy(attribute="name", data_key="shown")
    tree = fields.Nested(Tree)


def test_plucks_collection_hooks_own_accessors_field_names_and_recursion_dump_alike():
    thing = {
        "leaf": {"id": "x", "v": 1},
        "leaves": [{"id": "y", "v": 2}, {"id": "z", "v": 3}],
        "name": "real",
        "tree": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]},
    }
    schema = Everything()
    dumped = schema.dump(thing)
    assert dumped == marshmallow_dump(schema, thing)
    assert dumped["plucked"] == "x"
    assert dumped["plucked_many"] == ["y", "z"]
    assert dumped["collected"] == {"n": 2, "many": True}
    assert dumped["one_collected"] == {"v": 1, "many": False}
    assert dumped["accessed"] == {"v": 42}
    assert dumped["shouting"] == "override"
    assert dumped["shown"] == "named"
    assert dumped["tree"]["children"][0]["children"][0] == {"name": "c"}


def test_a_schema_with_dump_hooks_is_left_to_marshmallow():
    class Hooked(CompiledDump, ma.Schema):
        v = fields.Integer()

        @ma.post_dump(pass_collection=True)
        def counted(self, data, many, **kwargs):
            return {"n": len(data)} if many else {**data, "hooked": True}

    assert Hooked().dump({"v": 1}) == {"v": 1, "hooked": True}
    assert Hooked().dump([{"v": 1}, {"v": 2}], many=True) == {"n": 2}
    assert Hooked(many=True).dump([{"v": 1}]) == {"n": 1}
