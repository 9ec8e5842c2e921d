"""The search contract: one query dataclass in, one result dataclass out, whichever backend
answers (``SearchBackend``). Cursors, price buckets and the tie-break hash live here too, so the
backends agree on them."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from sqlalchemy.orm import Session

from ...errors import ValidationFailed

SORTS = ("relevance", "unit_price", "-unit_price", "newest")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
FACET_LIMIT = 50
NANO = 10**9  # unit prices are stored as integer billionths of a penny

# Unit-price facet buckets in pence per base unit, [lower, upper) on the price as shown (see
# ``price_bucket_bounds``), with None for open ends.
PRICE_BUCKETS: tuple[tuple[str, Decimal | None, Decimal | None], ...] = (
    ("under-10p", None, Decimal(10)),
    ("10p-1", Decimal(10), Decimal(100)),
    ("1-10", Decimal(100), Decimal(1000)),
    ("10-100", Decimal(1000), Decimal(10000)),
    ("100-plus", Decimal(10000), None),
)


def unit_price_nanopence(pack_price_pence: int, units_per_pack: int) -> int:
    """Pence per base unit times 10⁹ as an exact integer (rounded half to even at the 10⁻⁹ penny)."""
    exact = Decimal(pack_price_pence) * NANO / Decimal(units_per_pack)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def pence_to_nanopence(value: Decimal) -> int:
    return int((value * NANO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


SHOWN_STEP_NANOPENCE = NANO // 10**4  # a unit price is shown to 4 places: 0.0001p


def shown_price_bounds(low: Decimal | None, high: Decimal | None) -> tuple[int | None, int | None]:
    """The ``min_unit_price``/``max_unit_price`` filter (pence, up to 4 places) as inclusive
    bounds on the stored price (nanopence), so that it compares with the unit price as shown:
    a product shown at 33.3333p (100p for 3) is within ``max_unit_price=33.3333``, and one
    shown at 2.5600p (2.55996p) within ``min_unit_price=2.56``. A bound takes in the half-step
    either side of its own figure, the tie included when that figure is even (half to even).
    Exact for every price but one within half a nanopenny of a half-step, which needs over
    20,000 units a pack."""
    half = SHOWN_STEP_NANOPENCE // 2

    def reach(bound: Decimal) -> int:
        shown = pence_to_nanopence(bound)
        return half if (shown // SHOWN_STEP_NANOPENCE) % 2 == 0 else half - 1

    return (
        None if low is None else pence_to_nanopence(low) - reach(low),
        None if high is None else pence_to_nanopence(high) + reach(high),
    )


@functools.lru_cache(maxsize=65536)
def tie_break(product_id: str) -> int:
    """A stable hash of the product id (63 bits): the last sort key before the id itself, so
    equal scores or prices never favour a supplier by name or id."""
    return int.from_bytes(hashlib.sha256(product_id.encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class SearchQuery:
    q: str | None = None
    category: str | None = None  # category code; includes its descendants
    supplier: str | None = None  # supplier organisation id
    kind: str | None = None
    phb_eligible: bool | None = None
    in_stock: bool | None = None
    min_unit_price: Decimal | None = None  # pence per base unit
    max_unit_price: Decimal | None = None
    sort: str = "relevance"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    @property
    def text(self) -> str:
        return (self.q or "").strip()

    def fingerprint(self) -> str:
        """What a cursor is bound to: everything but the cursor and the limit."""
        parts = [
            self.text.lower(),
            self.category,
            self.supplier,
            self.kind,
            self.phb_eligible,
            self.in_stock,
            str(self.min_unit_price) if self.min_unit_price is not None else None,
            str(self.max_unit_price) if self.max_unit_price is not None else None,
            self.sort,
        ]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]

    @property
    def price_bounds(self) -> tuple[int | None, int | None]:
        """The unit-price filter as inclusive bounds in nanopence (see ``shown_price_bounds``)."""
        return shown_price_bounds(self.min_unit_price, self.max_unit_price)


@dataclass(frozen=True)
class SupplierRef:
    id: str
    name: str
    is_sme: bool


@dataclass(frozen=True)
class BestOffer:
    id: str
    supplier: SupplierRef
    pack_price_pence: int
    unit_price_pence: Decimal
    in_stock: bool


@dataclass(frozen=True)
class CategoryRef:
    code: str
    name: str


@dataclass(frozen=True)
class PriceRange:
    min_pence: Decimal  # pence per base unit
    max_pence: Decimal


@dataclass(frozen=True)
class SearchItem:
    id: str
    name: str
    gtin: str | None
    manufacturer_part_number: str | None
    category: CategoryRef
    kind: str
    phb_eligible: bool
    unit_of_measure: str
    units_per_pack: int
    in_stock: bool
    offer_count: int
    best_offer: BestOffer
    unit_price_range: PriceRange


@dataclass(frozen=True)
class CategoryFacet:
    code: str
    name: str
    parent_code: str | None
    count: int


@dataclass(frozen=True)
class SupplierFacet:
    id: str
    name: str
    is_sme: bool
    count: int


@dataclass(frozen=True)
class ValueFacet:
    value: str
    count: int


@dataclass(frozen=True)
class PriceFacet:
    key: str
    min_pence: Decimal | None  # pence per base unit, inclusive
    max_pence: Decimal | None  # exclusive
    count: int


@dataclass
class Facets:
    category: list[CategoryFacet] = field(default_factory=list)
    supplier: list[SupplierFacet] = field(default_factory=list)
    kind: list[ValueFacet] = field(default_factory=list)
    unit_price: list[PriceFacet] = field(default_factory=list)


@dataclass
class SearchResult:
    items: list[SearchItem]
    facets: Facets
    total: int
    next_cursor: str | None


class SearchBackend(Protocol):
    """Answers a ``SearchQuery``. ``session`` is the caller's database session (the SQL backend
    searches with it; the Elasticsearch backend reads names of categories and suppliers)."""

    name: str

    def search(self, session: Session, query: SearchQuery) -> SearchResult: ...


# --- cursors ------------------------------------------------------------------------------------


def encode_cursor(query: SearchQuery, key: list[Any]) -> str:
    """An opaque cursor: the sort key of the last item, bound to the query that issued it."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps({"f": query.fingerprint(), "k": plain}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: SearchQuery, arity: int) -> list[Any] | None:
    if not query.cursor:
        return None
    try:
        padded = query.cursor + "=" * (-len(query.cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("k"), list)
        or len(data["k"]) != arity
        or any(isinstance(v, dict | list) for v in data["k"])
    ):
        raise ValidationFailed(
            "The cursor is not valid; start again without one.",
            errors={"cursor": ["Not a cursor this search issued."]},
        )
    if data.get("f") != query.fingerprint():
        raise ValidationFailed(
            "The cursor belongs to a different search; start again without one.",
            errors={"cursor": ["Use a cursor with the same q, filters and sort that issued it."]},
        )
    return data["k"]


def cursor_value(value: Any, kind: type) -> Any:
    """Check one decoded cursor value's type (a forged cursor must give 422, never 500)."""
    ok = (
        isinstance(value, kind) and not isinstance(value, bool)
        if kind in (int, float)
        else isinstance(value, kind)
    )
    if kind is int and ok and not -(2**63) <= value < 2**63:
        ok = False  # every integer key is a 64-bit column: a larger one was never issued
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is datetime and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
        ok = False
    if not ok:
        raise ValidationFailed(
            "The cursor is not valid; start again without one.",
            errors={"cursor": ["Corrupt cursor."]},
        )
    return value


def price_bucket_bounds() -> list[tuple[str, int | None, int | None]]:
    """The unit-price buckets as [lower, upper) bounds on the stored price (nanopence), on the
    price as shown, like the filters (``shown_price_bounds``): 9.99996p, shown as 10.0000p,
    counts in "10p-1", where ``min_unit_price=10`` finds it too."""
    return [(key, _first_shown_at(low), _first_shown_at(high)) for key, low, high in PRICE_BUCKETS]


def _first_shown_at(bound: Decimal | None) -> int | None:
    """The lowest stored price shown at ``bound`` or above."""
    return None if bound is None else shown_price_bounds(bound, None)[0]
