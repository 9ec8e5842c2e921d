"""Build ``marketplace/data/demo_drug_tariff_products.csv``: the demo catalogue's curated subset
of the NHS Drug Tariff Part IX (July 2026), with each pack's monthly tariff prices.

Usage: python scripts/curate_demo_catalogue.py DRUG_TARIFF_DIR

DRUG_TARIFF_DIR holds ``drug_tariff_part_ix_2026-07_marketplace_subset.csv`` and
``drug_tariff_part_ix_price_history_2025-09_to_2026-07.csv.gz`` (see data/PROVENANCE.md).
The selection is deterministic: for each category, the generic products (VMPs) sold by the most
suppliers, and a few packs of each, so that the demo shows real competition.
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections import defaultdict
from pathlib import Path

OUT = (
    Path(__file__).resolve().parent.parent
    / "marketplace"
    / "data"
    / "demo_drug_tariff_products.csv"
)

# Drug Tariff subset category → (marketplace category code, VMPs to take, packs per VMP)
PLAN = {
    "wound_dressing": ("33141110", 10, 6),
    "bandage_tape_or_stockinette": ("33141113", 8, 5),
    "compression_bandage_or_system": ("33141113", 6, 5),
    "lymphoedema_compression_garment": ("MKT-LYMPH", 1, 48),
    "gloves": ("18424300", 6, 5),
    "catheter_or_catheter_accessory": ("33141200", 6, 8),
    "syringe_or_needle": ("33141320", 7, 6),
    "lancet": ("33141320", 8, 4),
    "sharps_disposal": ("33141123", 1, 13),
    "compression_hosiery_accessory": ("MKT-HOSIERY", 1, 10),
    "compression_hosiery": ("MKT-HOSIERY-COMP", 40, 1),
}
EXAMINATION_GLOVES = ("nitrile", "latex", "vinyl", "barrier")
UNITS = {"ml": "MLT", "gram": "GRM", "m": "MTR", "pack": "NMP", "kit": "KT"}  # else H87 piece
MONTHS = (
    "2025_09",
    "2025_10",
    "2025_12",
    "2026_01",
    "2026_02",
    "2026_03",
    "2026_04",
    "2026_05",
    "2026_06",
    "2026_07",
)
FIELDS = (
    "gtin",
    "dmd_pack_code",
    "category_code",
    "name",
    "generic_name",
    "manufacturer",
    "mpn",
    "units_per_pack",
    "unit_of_measure",
    "tariff_unit",
    "price_in_p",
    "colour",
    "size_or_weight",
    "bnf_code",
    "price_history",
)


def category_code(row: dict[str, str], default: str) -> str:
    vmp = row["vmp_name"].lower()
    if row["category"] == "catheter_or_catheter_accessory" and any(
        word in vmp for word in ("bag", "valve", "strap", "holder", "stand")
    ):
        return "33141240"
    return default


def eligible(row: dict[str, str]) -> bool:
    if "pre-filled" in row["vmp_name"]:
        return False  # medicines in pre-filled syringes, not syringes
    if row["category"] == "compression_hosiery":
        return "standard stock size" in row["vmp_name"]  # the generic prices, no GTIN
    if not row["gtin"] or not row["pack_snomed_code"]:
        return False
    if row["category"] == "gloves":
        return any(word in row["vmp_name"].lower() for word in EXAMINATION_GLOVES)
    return True


def main(source: Path) -> None:
    rows = list(
        csv.DictReader(
            (source / "drug_tariff_part_ix_2026-07_marketplace_subset.csv").open(encoding="utf-8")
        )
    )
    by_category: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for row in sorted(
        rows,
        key=lambda r: (r["vmp_name"], r["supplier_name"], r["amp_name"], r["pack_snomed_code"]),
    ):
        key = row["gtin"] or row["pack_snomed_code"] or row["vmp_name"]
        if row["category"] in PLAN and eligible(row) and key not in seen:
            seen.add(key)
            by_category[row["category"]][row["vmp_name"]].append(row)
    chosen: list[tuple[str, dict[str, str]]] = []
    for category, (code, vmps, per_vmp) in PLAN.items():
        groups = by_category[category]
        popular = sorted(groups, key=lambda v: (-len({r["supplier_name"] for r in groups[v]}), v))[
            :vmps
        ]
        for vmp in popular:
            packs = groups[vmp]
            step = max(1, len(packs) // per_vmp)  # spread over suppliers and sizes
            for row in packs[::step][:per_vmp]:
                chosen.append((category_code(row, code), row))
    history = load_history(source, {row["pack_snomed_code"] for _, row in chosen})
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FIELDS)
        for code, row in chosen:
            writer.writerow(
                [
                    row["gtin"],
                    row["pack_snomed_code"],
                    code,
                    row["amp_name"] or row["vmp_name"],
                    row["vmp_name"],
                    "" if row["supplier_name"] == "Generic Supplier" else row["supplier_name"],
                    row["product_order_number"] or row["pack_order_number"],
                    row["quantity"],
                    UNITS.get(row["quantity_unit_of_measure"], "H87"),
                    row["quantity_unit_of_measure"],
                    row["price_in_p"],
                    row["colour"],
                    row["size_or_weight"],
                    row["bnf_code"],
                    history.get(row["pack_snomed_code"], ""),
                ]
            )
    print(f"{len(chosen)} products → {OUT} ({OUT.stat().st_size} bytes)")


def load_history(source: Path, packs: set[str]) -> dict[str, str]:
    """Pack code → ``2025-09:123;2025-10:130;...`` with only the months whose price changed."""
    path = source / "drug_tariff_part_ix_price_history_2025-09_to_2026-07.csv.gz"
    out: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["pack_snomed_code"] not in packs:
                continue
            changes, last = [], None
            for month in MONTHS:
                price = row[f"price_in_p_{month}"]
                if price and price != last:
                    changes.append(f"{month.replace('_', '-')}:{price}")
                    last = price
            out[row["pack_snomed_code"]] = ";".join(changes)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]))
