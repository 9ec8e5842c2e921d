"""UN/CEFACT Recommendation 20 unit-of-measure codes (``EA`` each, ``PR`` pair, ``H87`` piece...).

The bundled list ``data/units_of_measure.csv`` keeps the code, name and status of every Rec 20
code that is current or only marked for deletion (the packaging codes such as ``BX`` box and
``PK`` pack, which UNECE moved to Recommendation 21 but which trade still uses). Deprecated codes
are left out, so they are refused.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources


@cache
def units() -> dict[str, str]:
    """Code → unit name."""
    with (
        resources.files("marketplace.data")
        .joinpath("units_of_measure.csv")
        .open(encoding="utf-8") as fh
    ):
        return {row["code"]: row["name"] for row in csv.DictReader(fh)}


def unit_problem(code: str) -> str | None:
    """Why ``code`` is not an accepted unit of measure, or None when it is."""
    if code not in units():
        return f"{code!r} is not a UN/CEFACT Recommendation 20 unit code (e.g. EA, PR, H87, BX)."
    return None


def unit_name(code: str) -> str | None:
    return units().get(code)
