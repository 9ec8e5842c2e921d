"""OCDS 1.1: releases built from trust orders, release/record packages, and the compiled release.

Mapping (docs/open-data.md has the full table):

- one contracting process (``ocid`` = ``OCDS_PREFIX`` + ``-`` + order id) per trust order;
- ``parties``: the trust (``GB-NHS`` + ODS code; buyer, payer) and each supplier (``GB-COH`` +
  Companies House number; supplier, payee; ``details.scale`` ``sme``/``large``);
- one award and one contract per supplier order (both with the supplier order's id), with one
  item per order line: classification from the product's category (CPV where it maps to CPV,
  else its own scheme), the GTIN as an additional classification (scheme ``GTIN``), quantity
  in base units with the UN/CEFACT unit and the price per base unit;
- values are net of VAT (as offers and unit prices are); transactions are money that moved
  (card payments captured at dispatch, refunds), VAT included.

Amounts are pounds as JSON numbers, converted from integer pence with ``Decimal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from importlib import resources
from typing import Any

from ..catalog.units import unit_name

VERSION = "1.1"
LICENSE = "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/"
PUBLISHER_NAME = "NHS Open Procurement Marketplace"
CURRENCY = "GBP"
TRUST_SCHEME = "GB-NHS"
COMPANY_SCHEME = "GB-COH"
GTIN_SCHEME = "GTIN"
UNIT_SCHEME = "UNCEFACT"
# A price per base unit in pounds: pence to 4 places (DESIGN §4) is pounds to 6.
UNIT_PRICE_POUNDS = Decimal("0.000001")

EVENT_TAGS: dict[str, list[str]] = {
    "placed": ["award", "contract"],
    "dispatched": ["implementation"],
    "delivered": ["implementation"],
    "cancelled": ["awardCancellation", "contractTermination"],
    "rejected": ["awardCancellation", "contractTermination"],
    "refunded": ["contractAmendment", "implementation"],
}
SUPPLIER_ORDER_EVENTS = ("dispatched", "delivered", "cancelled", "rejected", "refunded")


# --- values ---------------------------------------------------------------------------------


def pounds(pence: int) -> float:
    """Integer pence as pounds, a JSON number with at most 2 decimal places (exact: a decimal
    with at most 15 significant digits round-trips through a float unchanged)."""
    return float(Decimal(pence) / 100)


def unit_pounds(pack_price_pence: int, units_per_pack: int) -> float:
    """The price of one base unit in pounds, rounded once, half to even, to 6 places."""
    exact = Decimal(pack_price_pence) / Decimal(100 * units_per_pack)
    return float(exact.quantize(UNIT_PRICE_POUNDS, rounding=ROUND_HALF_EVEN))


def value(pence: int) -> dict[str, Any]:
    return {"amount": pounds(pence), "currency": CURRENCY}


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, always with microseconds and a ``Z`` (``2026-11-03T10:15:00.000000Z``),
    so that timestamps also sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- parties --------------------------------------------------------------------------------


def trust_party_id(trust: Any) -> str:
    return f"{TRUST_SCHEME}-{trust.ods_code}" if trust.ods_code else trust.id


def supplier_party_id(supplier: Any) -> str:
    number = supplier.companies_house_number
    return f"{COMPANY_SCHEME}-{number}" if number else supplier.id


def trust_party(trust: Any, roles: Sequence[str]) -> dict[str, Any]:
    party: dict[str, Any] = {"id": trust_party_id(trust), "name": trust.name}
    if trust.ods_code:
        party["identifier"] = {
            "scheme": TRUST_SCHEME,
            "id": trust.ods_code,
            "legalName": trust.name,
        }
    party["roles"] = list(roles)
    return party


def supplier_party(supplier: Any, roles: Sequence[str]) -> dict[str, Any]:
    party: dict[str, Any] = {"id": supplier_party_id(supplier), "name": supplier.name}
    if supplier.companies_house_number:
        party["identifier"] = {
            "scheme": COMPANY_SCHEME,
            "id": supplier.companies_house_number,
            "legalName": supplier.name,
        }
    party["roles"] = list(roles)
    party["details"] = {"scale": "sme" if supplier.is_sme else "large"}
    return party


def reference(party: dict[str, Any]) -> dict[str, Any]:
    return {"id": party["id"], "name": party["name"]}


# --- items ----------------------------------------------------------------------------------


def classification(category: Any) -> dict[str, Any]:
    """The category's own classification: CPV (with check digit) where it maps to CPV, else
    the scheme it carries (EMDN, or MKT for the marketplace's own codes)."""
    return {
        "scheme": category.scheme,
        "id": category.scheme_code or category.code,
        "description": category.name,
    }


def item(line: Any, product: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": line.id,
        "description": product.name,
        "classification": classification(product.category),
    }
    if product.gtin:
        entry["additionalClassifications"] = [
            {
                "scheme": GTIN_SCHEME,
                "id": product.gtin,
                "description": "GS1 Global Trade Item Number",
            }
        ]
    unit: dict[str, Any] = {"scheme": UNIT_SCHEME, "id": product.unit_of_measure}
    name = unit_name(product.unit_of_measure)
    if name:
        unit["name"] = name
    unit["value"] = {
        "amount": unit_pounds(line.pack_price_pence, line.units_per_pack),
        "currency": CURRENCY,
    }
    entry["quantity"] = line.quantity * line.units_per_pack
    entry["unit"] = unit
    return entry


# --- the compiled release (OCDS merge rules) ------------------------------------------------


@cache
def release_schema() -> dict[str, Any]:
    with (
        resources.files("marketplace.data")
        .joinpath("ocds/release-schema.json")
        .open(encoding="utf-8") as fh
    ):
        return json.load(fh)


@cache
def _merge_rules() -> tuple[frozenset[str], frozenset[str]]:
    """Field names the schema marks ``wholeListMerge`` (arrays replaced whole) and the
    top-level fields it marks ``omitWhenMerged`` (``id``, ``date``, ``tag``)."""
    whole: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and sub.get("wholeListMerge"):
                    whole.add(name)
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    schema = release_schema()
    walk(schema)
    omit = {k for k, v in schema["properties"].items() if v.get("omitWhenMerged")}
    return frozenset(whole), frozenset(omit)


def _merge_value(name: str, current: Any, new: Any, whole: frozenset[str]) -> Any:
    if isinstance(new, dict) and isinstance(current, dict):
        return _merge_object(current, new, whole)
    if (
        isinstance(new, list)
        and isinstance(current, list)
        and name not in whole
        and new
        and all(isinstance(x, dict) and "id" in x for x in new)
        and all(isinstance(x, dict) and "id" in x for x in current)
    ):
        merged = {str(x["id"]): x for x in current}
        order = [str(x["id"]) for x in current]
        for entry in new:
            key = str(entry["id"])
            if key in merged:
                merged[key] = _merge_object(merged[key], entry, whole)
            else:
                merged[key] = entry
                order.append(key)
        return [merged[k] for k in order]
    return new


def _merge_object(current: dict[str, Any], new: dict[str, Any], whole: frozenset[str]) -> dict:
    result = dict(current)
    for name, incoming in new.items():
        if incoming is None:  # null in a later release removes the field
            result.pop(name, None)
        elif name in result:
            result[name] = _merge_value(name, result[name], incoming, whole)
        else:
            result[name] = incoming
    return result


def compile_releases(releases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge releases (oldest first) into a compiled release: later values override earlier
    ones, arrays of objects with ``id`` merge item by item, ``wholeListMerge`` arrays and
    arrays of anything else are replaced whole; ``id``, ``date`` and ``tag`` are not merged."""
    whole, omit = _merge_rules()
    compiled: dict[str, Any] = {}
    for release in releases:
        compiled = _merge_object(
            compiled, {k: v for k, v in release.items() if k not in omit}, whole
        )
    last = releases[-1]
    return {
        "ocid": last["ocid"],
        "id": f"{last['ocid']}-compiled-{last['date']}",
        "date": last["date"],
        "tag": ["compiled"],
        **{k: v for k, v in compiled.items() if k != "ocid"},
    }


# --- packages ---------------------------------------------------------------------------------


def publisher(base_url: str) -> dict[str, Any]:
    return {"name": PUBLISHER_NAME, "uri": base_url + "/"}


def package_metadata(uri: str, base_url: str, published: str) -> dict[str, Any]:
    return {
        "uri": uri,
        "version": VERSION,
        "publishedDate": published,
        "publisher": publisher(base_url),
        "license": LICENSE,
        "publicationPolicy": f"{base_url}/open-data#publication-policy",
    }


def latest_date(releases: Iterable[dict[str, Any]]) -> str:
    return max(r["date"] for r in releases)
