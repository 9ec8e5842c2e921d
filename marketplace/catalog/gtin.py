"""GS1 GTIN validation (GTIN-8, -12, -13, -14) with the mod-10 check digit."""

from __future__ import annotations

VALID_LENGTHS = (8, 12, 13, 14)


def check_digit(body: str) -> int:
    """The GS1 check digit for the digits before it (weights 3,1,3,1... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def gtin_problem(value: str) -> str | None:
    """Why ``value`` is not a valid GTIN, or None when it is."""
    if not (
        value.isascii() and value.isdigit()
    ):  # isdigit() alone accepts superscript and full-width digits
        return "A GTIN has digits only."
    if len(value) not in VALID_LENGTHS:
        return "A GTIN has 8, 12, 13 or 14 digits."
    if check_digit(value[:-1]) != int(value[-1]):
        return f"The GS1 check digit should be {check_digit(value[:-1])}."
    return None


def is_valid_gtin(value: str) -> bool:
    return gtin_problem(value) is None


def normalise_gtin(value: str) -> str:
    """GTINs compare as 14 digits: shorter forms are left-padded with zeros."""
    return value.strip().zfill(14)
