"""Pricing business rules: purchase records (import, match, exclusion, marketplace deliveries)
and the variance read models (DESIGN §6). Plain functions taking a ``Session``; they flush and
never commit.

Other domains call:
- ``record_marketplace_purchases`` when a supplier order's lines are delivered;
- ``price_verdicts`` when a quote prices its lines (``price_verdict`` for one price);
- ``product_changed`` when a product's name, category or benchmark exclusion changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import IO, Any, NamedTuple

from sqlalchemy import Select, desc, func, select
from sqlalchemy.orm import Session

from .. import audit, metrics
from ..accounts import service as accounts
from ..accounts.models import Organisation, OrgType, Role
from ..accounts.service import Principal
from ..catalog import service as catalog
from ..catalog.models import Offer
from ..db import utcnow
from ..errors import Forbidden, NotFound, Problem, ValidationFailed
from ..money import round_pence
from ..pagination import decode_cursor, encode_cursor
from . import bulk
from . import method as m
from .importer import (
    CountingReader,
    ParsedLine,
    RowError,
    parse_row,
    read_rows,
)
from .models import (
    ProductStats,
    PurchaseImport,
    PurchaseRecord,
    PurchaseSource,
    PurchaseStatus,
    StatsTotal,
    TrustWindowTotal,
)
from .rollups import (
    STATS_BATCH,
    Changes,
    ProductColumns,
    Window,
    cached_window,
    chunks,
    ensure_current,
    pair_totals,
    recompute_products,
    refresh,
    trust_totals,
    window_columns,
)
from .rollups import today_utc as today_utc

IMPORT_BATCH = 2000
FLUSH_ROLLUPS_ABOVE = 20_000  # rollup deltas an import collects before it adds them (memory)
MAX_REPORTED_ERRORS = 1000
PURCHASE_FIELDS = (
    "trust_id",
    "order_date",
    "product_id",
    "supplier_id",
    "quantity",
    "units_per_pack",
    "given_units_per_pack",
    "total_price_pence",
    "status",
    "benchmark_excluded",
    "benchmark_excluded_reason",
)


# --- who may see which trust's purchases --------------------------------------------------------


def _trust_not_found(ods: str) -> NotFound:
    return NotFound(f"No trust with ODS code {ods!r} is visible to you.", code="trust-not-found")


def find_trust(session: Session, ods_code: str) -> Organisation:
    trust = accounts.find_trust_by_ods(session, ods_code)
    if trust is None:
        raise _trust_not_found(ods_code)
    return trust


def trust_for_actor(
    session: Session, actor: Principal, ods_code: str | None
) -> Organisation | None:
    """The trust whose purchases ``actor`` works on: a buyer's own trust (another trust's ODS
    code answers 404), or for an operator the trust named (None: every trust)."""
    if actor.role == Role.BUYER:
        own = accounts.get_organisation(session, actor.organisation_id or "")
        if own.type != OrgType.TRUST:
            raise Forbidden(
                "Only a trust's buyers import and see its purchases.", code="wrong-role"
            )
        if ods_code and ods_code.strip().upper() != own.ods_code:
            raise _trust_not_found(ods_code)
        return own
    if actor.role == Role.OPERATOR:
        return find_trust(session, ods_code) if ods_code else None
    raise Forbidden("Purchase records are for trust buyers and operators.", code="wrong-role")


def get_purchase(
    session: Session, actor: Principal, purchase_id: str, *, for_update: bool = False
) -> PurchaseRecord:
    """A line the actor may see; ``for_update`` reads it locked (PostgreSQL) for a change
    computed from its current values, so two changes at once cannot both start from the same
    state."""
    record = session.get(
        PurchaseRecord,
        purchase_id,
        with_for_update=for_update or None,
        populate_existing=for_update,
    )
    if record is None or (actor.role != Role.OPERATOR and record.trust_id != actor.organisation_id):
        raise NotFound(
            f"No purchase record with id {purchase_id!r} is visible to you.",
            code="purchase-not-found",
        )
    return record


def list_purchases(
    session: Session,
    actor: Principal,
    *,
    trust_ods: str | None = None,
    status: PurchaseStatus | None = None,
    product_id: str | None = None,
    excluded: bool | None = None,
) -> Select[Any]:
    trust = trust_for_actor(session, actor, trust_ods)
    stmt = select(PurchaseRecord)
    if trust is not None:
        stmt = stmt.where(PurchaseRecord.trust_id == trust.id)
    if status is not None:
        stmt = stmt.where(PurchaseRecord.status == status)
    if product_id is not None:
        stmt = stmt.where(PurchaseRecord.product_id == product_id)
    if excluded is not None:
        stmt = stmt.where(PurchaseRecord.benchmark_excluded.is_(excluded))
    return stmt


# --- matching lines to products ----------------------------------------------------------------


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


@dataclass(frozen=True)
class Match:
    product_id: str | None
    units_per_pack: int | None
    supplier_id: str | None


class Matcher:
    """Matches a line to a catalogue product by GTIN, then by the supplier's product code
    (the supplier found by name). Bounded caches keep a long import from asking twice."""

    def __init__(self, session: Session, cache_size: int = 50_000):
        self.session = session
        self._gtins = _Lru(cache_size)
        self._suppliers = _Lru(cache_size)
        self._skus = _Lru(cache_size)

    def supplier_id(self, name: str | None) -> str | None:
        if not name:
            return None
        if name in self._suppliers:
            return self._suppliers[name]
        try:
            org = accounts.find_organisation(self.session, name)
        except Problem:
            org = None
        found = org.id if org is not None and org.type == OrgType.SUPPLIER else None
        return self._suppliers.put(name, found)

    def prefetch(self, lines: Iterable[ParsedLine]) -> None:
        """Look up a batch's new GTINs in one query."""
        wanted = {line.gtin for line in lines if line.gtin and line.gtin not in self._gtins}
        if wanted:
            found = catalog.products_by_gtin(self.session, wanted)
            for gtin in wanted:
                product = found.get(gtin)
                self._gtins.put(gtin, (product.id, product.units_per_pack) if product else None)

    def _by_gtin(self, gtin: str) -> tuple[str, int] | None:
        if gtin in self._gtins:
            return self._gtins[gtin]
        product = catalog.find_product_by_gtin(self.session, gtin)
        return self._gtins.put(gtin, (product.id, product.units_per_pack) if product else None)

    def _by_sku(self, supplier_id: str, sku: str) -> tuple[str, int] | None:
        key = (supplier_id, sku)
        if key in self._skus:
            return self._skus[key]
        offer = catalog.find_offer_by_supplier_sku(self.session, supplier_id, sku)
        found = (offer.product_id, offer.product.units_per_pack) if offer else None
        return self._skus.put(key, found)

    def match(self, line: ParsedLine) -> Match:
        supplier_id = self.supplier_id(line.supplier_name)
        found = self._by_gtin(line.gtin) if line.gtin else None
        if found is None and supplier_id and line.supplier_sku:
            found = self._by_sku(supplier_id, line.supplier_sku)
        if found is None:
            return Match(None, None, supplier_id)
        return Match(found[0], found[1], supplier_id)


def pack_size(given: int | None, product_units_per_pack: int | None) -> int | None:
    """A line's pack size: the one it gave, kept whatever it is matched to; otherwise its
    matched product's (so a re-match to another product takes that product's)."""
    return given or product_units_per_pack


# --- import -----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    import_id: str
    trust_ods: str
    rows: int = 0
    imported: int = 0
    matched: int = 0
    unmatched: int = 0
    already_imported: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "trust_ods": self.trust_ods,
            "rows": self.rows,
            "imported": self.imported,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "already_imported": self.already_imported,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.errors_truncated,
        }


def find_import(session: Session, trust_id: str, idempotency_key: str) -> PurchaseImport | None:
    return session.scalar(
        select(PurchaseImport).where(
            PurchaseImport.trust_id == trust_id,
            PurchaseImport.idempotency_key == idempotency_key,
        )
    )


def import_purchases(
    session: Session,
    actor: Principal,
    trust: Organisation,
    stream: IO[bytes],
    file_format: str,
    *,
    filename: str | None = None,
    idempotency_key: str | None = None,
    on_error: Callable[[RowError], None] | None = None,
    today: date | None = None,
    batch_size: int = IMPORT_BATCH,
) -> ImportResult:
    """Import a file of purchase lines for ``trust``, row by row, in constant memory.

    Each good row becomes a purchase record (matched or unmatched); a line already imported
    (same trust, PO number and line) is left as it is; each bad row is reported through
    ``on_error`` and in the result. A malformed file raises ``MalformedFile``: the caller's
    transaction then rolls back and nothing is written. Statistics are refreshed incrementally
    before returning.
    """
    if trust.type != OrgType.TRUST:
        raise ValidationFailed("Purchases are imported for a trust.", code="not-a-trust")
    today = today or today_utc()
    reader = stream if isinstance(stream, CountingReader) else CountingReader(stream)
    batch_record = PurchaseImport(
        trust_id=trust.id,
        idempotency_key=idempotency_key,
        filename=filename,
        file_format=file_format,
        actor_label=actor.label,
    )
    session.add(batch_record)
    session.flush()
    result = ImportResult(import_id=batch_record.id, trust_ods=trust.ods_code or "")
    matcher = Matcher(session)
    changes = Changes(today)
    pending: list[ParsedLine] = []

    def reject(error: RowError) -> None:
        if on_error:
            on_error(error)
        if len(result.errors) < MAX_REPORTED_ERRORS:
            result.errors.append(error.as_dict())
        else:
            result.errors_truncated = True

    with metrics.import_running("purchases"):
        for row, values in read_rows(reader, file_format):
            result.rows += 1
            line, errors = parse_row(row, values, today)
            if line is None:
                metrics.import_row("purchases", rejected=True)
                result.rejected += 1
                for error in errors:
                    reject(error)
                continue
            pending.append(line)
            if len(pending) >= batch_size:
                _write_lines(
                    session, trust.id, batch_record.id, pending, matcher, changes, result, reject
                )
                pending.clear()
        if pending:
            _write_lines(
                session, trust.id, batch_record.id, pending, matcher, changes, result, reject
            )
    refresh(session, changes)
    summary = result.as_dict()
    batch_record.request_hash = reader.sha256.hexdigest()
    batch_record.summary = summary
    audit.record(
        session,
        actor,
        "purchases.import",
        "purchase_import",
        batch_record.id,
        after={k: v for k, v in summary.items() if k != "errors"} | {"file": filename},
    )
    session.flush()
    return result


def _write_lines(
    session: Session,
    trust_id: str,
    import_id: str,
    lines: Sequence[ParsedLine],
    matcher: Matcher,
    changes: Changes,
    result: ImportResult,
    reject: Callable[[RowError], None],
) -> None:
    """Write a batch of checked lines. A line whose key (PO number and line) was already
    imported, earlier in this file or before, is left as it is: counted as already imported
    when its values are the same as the record's, reported as a rejected row when they differ
    (the conflicts are found in SQL, from the staged batch, so memory stays constant)."""
    to_db = bulk.db_value(session)
    now = to_db(utcnow())
    source, matched_status, unmatched_status = (
        to_db(v) for v in (PurchaseSource.IMPORT, PurchaseStatus.MATCHED, PurchaseStatus.UNMATCHED)
    )
    days: dict[date, Any] = {}
    matcher.prefetch(lines)
    rows = []
    for line in lines:
        match = matcher.match(line)
        units_per_pack = pack_size(line.units_per_pack, match.units_per_pack)
        matched = match.product_id is not None and units_per_pack is not None
        day = days.get(line.order_date)
        if day is None:
            day = days[line.order_date] = to_db(line.order_date)
        # in bulk.PURCHASE_STAGING_COLUMNS order, converted for the driver
        rows.append(
            (
                PurchaseRecord.make_id(),
                trust_id,
                day,
                match.product_id if matched else None,
                match.supplier_id,
                line.supplier_name,
                line.supplier_sku,
                line.gtin,
                line.description,
                line.quantity,
                units_per_pack,
                line.units_per_pack,
                line.total_price_pence,
                source,
                line.po_number,
                line.line,
                matched_status if matched else unmatched_status,
                False,
                None,
                import_id,
                now,
                now,
                line.row,
            )
        )
    inserted = bulk.insert_purchases(session, rows, converted=True)
    conflicts = bulk.conflicting_purchases(session, import_id) if len(inserted) < len(rows) else []
    for row, po_number, line_number, earlier_row, this_import, earlier_source in conflicts:
        if this_import:
            where = (
                f"row {earlier_row} of this file"
                if earlier_row is not None
                else "an earlier row of this file"
            )
        elif earlier_source == PurchaseSource.MARKETPLACE:
            where = "a marketplace order delivered earlier"
        else:
            where = "an earlier import"
        reject(
            RowError(
                row,
                "line",
                f"{po_number} line {line_number} was already imported with different values "
                f"({where}); correct or renumber it",
            )
        )
    rejected_rows = {row for row, *_ in conflicts}
    for line in lines:
        metrics.import_row("purchases", rejected=line.row in rejected_rows)
    result.imported += len(inserted)
    result.rejected += len(conflicts)
    result.already_imported += len(rows) - len(inserted) - len(conflicts)
    for product_id, order_date, quantity, units_per_pack, total in inserted:
        if product_id is None:
            result.unmatched += 1
            continue
        result.matched += 1
        changes.add(product_id, trust_id, order_date, quantity * units_per_pack, total)
    if changes.pending > FLUSH_ROLLUPS_ABOVE:
        changes.flush(session)


# --- changes to one line ------------------------------------------------------------------------


def _snapshot(record: PurchaseRecord) -> dict[str, Any]:
    return audit.snapshot(record, PURCHASE_FIELDS)


def match_purchase(
    session: Session,
    actor: Principal,
    purchase_id: str,
    product_id: str,
    *,
    today: date | None = None,
) -> PurchaseRecord:
    """Match a line (unmatched, or matched to the wrong product) to a catalogue product. A pack
    size the line gave is kept; one taken from the catalogue becomes the new product's. The
    statistics lose the line as it was (old product and pack size) and count it as it is."""
    record = get_purchase(session, actor, purchase_id, for_update=True)
    try:
        product = catalog.get_product(session, product_id)
    except NotFound:
        raise ValidationFailed(
            "The product does not exist.",
            errors={"product_id": [f"No product with id {product_id!r}."]},
        ) from None
    before = _snapshot(record)
    changes = Changes(today)
    changes.add_record(record, -1)
    record.product_id = product.id
    record.units_per_pack = pack_size(record.given_units_per_pack, product.units_per_pack)
    record.status = PurchaseStatus.MATCHED
    changes.add_record(record, +1)
    session.flush()
    refresh(session, changes)
    audit.record(
        session,
        actor,
        "purchase.match",
        "purchase_record",
        record.id,
        before=before,
        after=_snapshot(record),
    )
    return record


def set_benchmark_exclusion(
    session: Session,
    actor: Principal,
    purchase_id: str,
    *,
    excluded: bool,
    reason: str | None = None,
    today: date | None = None,
) -> PurchaseRecord:
    """Exclude a line from benchmarking (a special, a one-off), with a reason; or include it
    again. Operators only."""
    if not actor.is_operator:
        raise Forbidden("Only operators exclude lines from benchmarking.", code="wrong-role")
    record = get_purchase(session, actor, purchase_id, for_update=True)
    reason = (reason or "").strip() or None
    if excluded and not reason:
        raise ValidationFailed(
            "Say why the line is excluded.", errors={"reason": ["A reason is required."]}
        )
    if reason and len(reason) > 500:
        raise ValidationFailed(
            "The reason is too long.", errors={"reason": ["At most 500 characters."]}
        )
    before = _snapshot(record)
    changes = Changes(today)
    changes.add_record(record, -1)
    record.benchmark_excluded = excluded
    record.benchmark_excluded_reason = reason if excluded else None
    changes.add_record(record, +1)
    session.flush()
    refresh(session, changes)
    audit.record(
        session,
        actor,
        "purchase.exclude" if excluded else "purchase.include",
        "purchase_record",
        record.id,
        before=before,
        after=_snapshot(record),
    )
    return record


class DeliveredLine(NamedTuple):
    """One delivered marketplace order line, as the ordering domain reports it: ``quantity``
    packs of ``units_per_pack`` (the order's; None: the product's as it is now)."""

    line: int
    product_id: str
    quantity: int
    total_price_pence: int
    units_per_pack: int | None = None


def record_marketplace_purchases(
    session: Session,
    *,
    trust_id: str,
    order_reference: str,
    order_date: date,
    supplier_id: str | None,
    lines: Sequence[DeliveredLine],
    actor: Principal | None = None,
    today: date | None = None,
) -> list[PurchaseRecord]:
    """Record a delivered supplier order's lines as ``marketplace`` purchases and refresh the
    statistics incrementally, once for all of them. Called by the ordering domain; idempotent
    on (trust, order reference, line): a line recorded before comes back unchanged. Each line's
    pack size is the order's, so it counts as given: a re-match keeps it."""
    actor = actor or Principal.system("orders")
    trust = accounts.get_organisation(session, trust_id)
    if trust.type != OrgType.TRUST:
        raise ValidationFailed("Purchase records belong to trusts.", code="not-a-trust")
    if any(line.quantity <= 0 or line.total_price_pence <= 0 for line in lines):
        raise ValidationFailed(
            "Quantity and total price must be positive.",
            errors={"quantity": ["Must be positive."], "total_price_pence": ["Must be positive."]},
        )
    if any(line.units_per_pack is not None and line.units_per_pack <= 0 for line in lines):
        raise ValidationFailed(
            "Units per pack must be positive.", errors={"units_per_pack": ["Must be positive."]}
        )
    supplier = accounts.get_organisation(session, supplier_id) if supplier_id else None
    recorded = {
        record.line: record
        for record in session.scalars(
            select(PurchaseRecord).where(
                PurchaseRecord.trust_id == trust.id,
                PurchaseRecord.po_number == order_reference,
                PurchaseRecord.line.in_([line.line for line in lines]),
            )
        )
    }
    records: list[PurchaseRecord] = []
    new: list[PurchaseRecord] = []
    for line in lines:
        if line.line in recorded:
            records.append(recorded[line.line])
            continue
        product = catalog.get_product(session, line.product_id)
        units_per_pack = line.units_per_pack or product.units_per_pack
        record = PurchaseRecord(
            trust_id=trust.id,
            order_date=order_date,
            product_id=product.id,
            supplier_id=supplier.id if supplier else None,
            supplier_name=supplier.name if supplier else None,
            gtin=product.gtin,
            description=product.name[:500],
            quantity=line.quantity,
            units_per_pack=units_per_pack,
            given_units_per_pack=units_per_pack,
            total_price_pence=line.total_price_pence,
            source=PurchaseSource.MARKETPLACE,
            po_number=order_reference,
            line=line.line,
            status=PurchaseStatus.MATCHED,
            benchmark_excluded=False,
        )
        session.add(record)
        records.append(record)
        new.append(record)
    if not new:
        return records
    session.flush()
    changes = Changes(today)
    for record in new:
        changes.add_record(record)
    refresh(session, changes)
    for record in new:
        audit.record(
            session,
            actor,
            "purchase.record",
            "purchase_record",
            record.id,
            after=_snapshot(record),
        )
    return records


def record_marketplace_purchase(
    session: Session,
    *,
    trust_id: str,
    order_reference: str,
    line: int,
    order_date: date,
    product_id: str,
    supplier_id: str | None,
    quantity: int,
    total_price_pence: int,
    units_per_pack: int | None = None,
    actor: Principal | None = None,
    today: date | None = None,
) -> PurchaseRecord:
    """``record_marketplace_purchases`` for one line."""
    (record,) = record_marketplace_purchases(
        session,
        trust_id=trust_id,
        order_reference=order_reference,
        order_date=order_date,
        supplier_id=supplier_id,
        lines=[DeliveredLine(line, product_id, quantity, total_price_pence, units_per_pack)],
        actor=actor,
        today=today,
    )
    return record


def product_changed(session: Session, product_id: str, *, today: date | None = None) -> None:
    """Refresh a product's cached statistics after its name, category or benchmark exclusion
    changed in the catalogue (call in the same transaction as the change)."""
    ensure_current(session, today)
    recompute_products(session, [product_id])


# --- reading the statistics --------------------------------------------------------------------


def _totals(
    session: Session, window: Window, product_ids: Sequence[str]
) -> dict[str, list[m.TrustTotal]]:
    """Per-trust totals of these products over ``window`` (``pair_totals``)."""
    grouped: dict[str, list[m.TrustTotal]] = {}
    stmt = pair_totals(session, window, product_ids=product_ids)
    for product_id, trust_id, units, spend in session.execute(stmt):
        grouped.setdefault(product_id, []).append(m.TrustTotal(trust_id, int(units), int(spend)))
    return grouped


@dataclass
class ProductVarianceView:
    product: catalog.ProductSummary
    window: Window
    method: m.Method
    n_trusts: int
    variance: m.ProductVariance | None  # None when not reported (too few trusts, excluded)
    trusts: list[dict[str, Any]]
    reason: str | None


def _summary(session: Session, product_id: str) -> catalog.ProductSummary:
    catalog.get_product(session, product_id)  # 404 for an unknown product
    return catalog.product_summaries(session, [product_id])[product_id]


def _not_reported_reason(
    product: catalog.ProductSummary, n_trusts: int, method: m.Method
) -> str | None:
    if product.benchmark_excluded:
        return "excluded_from_benchmarking"
    if n_trusts < method.min_trusts:
        return "too_few_trusts"
    return None


def product_variance(
    session: Session,
    product_id: str,
    *,
    window: Window | None = None,
    method: m.Method = m.DEFAULT_METHOD,
    today: date | None = None,
) -> ProductVarianceView:
    product = _summary(session, product_id)
    window = window or Window.default(today)
    totals = _totals(session, window, [product_id]).get(product_id, [])
    variance = m.analyse(totals, method)
    n_trusts = variance.distribution.n_trusts if variance else 0
    reason = _not_reported_reason(product, n_trusts, method)
    rows = []
    if variance is not None and reason is None:
        trusts = accounts.organisations_by_id(session, [t.trust_id for t in variance.trusts])
        for t in variance.trusts:
            org = trusts[t.trust_id]
            rows.append(
                {
                    "ods_code": org.ods_code,
                    "trust_name": org.name,
                    "unit_price_pence": t.unit_price,
                    "units": t.units,
                    "spend_pence": t.spend_pence,
                    "possible_savings_pence": t.possible_savings_pence,
                    "counted_in_totals": t.counted,
                    "outlier": t.outlier,
                }
            )
    return ProductVarianceView(
        product=product,
        window=window,
        method=method,
        n_trusts=n_trusts,
        variance=variance if reason is None else None,
        trusts=rows,
        reason=reason,
    )


def distribution_fields(
    dist: m.Distribution | None, benchmark: Decimal | None, savings_pence: int | None
) -> dict[str, Any]:
    """The fixed field names of a product's distribution (DESIGN §6, docs/pricing.md)."""
    if dist is None:
        return {}
    return {
        "n_trusts": dist.n_trusts,
        "min_pence": dist.min,
        "p10_pence": dist.p10,
        "p25_pence": dist.p25,
        "median_pence": dist.median,
        "p75_pence": dist.p75,
        "max_pence": dist.max,
        "mean_pence": dist.mean,
        "benchmark_pence": benchmark,
        "spread": dist.spread,
        "iqr_over_median": dist.iqr_over_median,
        "possible_savings_pence": savings_pence,
    }


@dataclass
class RankingPage:
    window: Window
    method: m.Method
    sort: str
    items: list[dict[str, Any]]
    next_cursor: str | None
    total_products: int
    total_possible_savings_pence: int


_SAVINGS_COLUMN = {
    "p10": ProductStats.savings_p10_pence,
    "p25": ProductStats.savings_p25_pence,
    "median": ProductStats.savings_median_pence,
}


def _rank_cursor(cursor: str) -> tuple[int | float, str]:
    """A ranking cursor: (sort value, product id)."""
    value, last_id = decode_cursor(cursor, 2)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not isinstance(last_id, str)
    ):
        raise ValidationFailed(
            "The cursor is not valid; start again without one.",
            errors={"cursor": ["Not a cursor this list issued."]},
        )
    return value, last_id


def _stats_distribution(row: ProductStats) -> m.Distribution:
    return m.Distribution(
        n_trusts=row.n_trusts,
        min=row.min_price,
        p10=row.p10_price,
        p25=row.p25_price,
        median=row.median_price,
        p75=row.p75_price,
        max=row.max_price,
        mean=row.mean_price,
        spread=row.spread,
        iqr_over_median=(row.p75_price - row.p25_price) / row.median_price,
    )


def _category_ids(session: Session, category_code: str | None) -> list[str] | None:
    if not category_code:
        return None
    try:
        return catalog.category_subtree_ids(session, category_code)
    except NotFound:
        raise ValidationFailed(
            "Unknown category.", errors={"category": [f"No category with code {category_code!r}."]}
        ) from None


def variance_ranking(
    session: Session,
    *,
    window: Window | None = None,
    method: m.Method = m.DEFAULT_METHOD,
    sort: str = "savings",
    category_code: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    today: date | None = None,
) -> RankingPage:
    """Products ranked by total possible savings (or by spread), with totals. Reads the cache
    for the default window and method; any other window or minimum is computed from the
    rollups."""
    window = window or Window.default(today)
    categories = _category_ids(session, category_code)
    if cached_window(session) == window and method.caches_cover:
        return _ranking_from_cache(session, window, method, sort, categories, cursor, limit)
    return _ranking_computed(session, window, method, sort, categories, cursor, limit)


def _ranking_from_cache(
    session: Session,
    window: Window,
    method: m.Method,
    sort: str,
    categories: list[str] | None,
    cursor: str | None,
    limit: int,
) -> RankingPage:
    savings = _SAVINGS_COLUMN[method.benchmark]
    key = savings if sort == "savings" else ProductStats.spread_sort
    filters = [
        ProductStats.n_trusts >= method.min_trusts,
        ProductStats.benchmark_excluded.is_(False),
    ]
    if categories is not None:
        filters.append(ProductStats.category_id.in_(categories))
    # the totals come from the per-(category, n_trusts) sums, not from every product
    totals = select(
        func.coalesce(func.sum(StatsTotal.products), 0),
        func.coalesce(func.sum(getattr(StatsTotal, savings.key)), 0),
    ).where(StatsTotal.n_trusts >= method.min_trusts)
    if categories is not None:
        totals = totals.where(StatsTotal.category_id.in_(categories))
    count, total = session.execute(totals).one()
    stmt = select(ProductStats).where(*filters)
    if cursor:
        value, last_id = _rank_cursor(cursor)
        stmt = stmt.where((key < value) | ((key == value) & (ProductStats.product_id < last_id)))
    rows = session.scalars(
        stmt.order_by(desc(key), desc(ProductStats.product_id)).limit(limit + 1)
    ).all()
    items = []
    for row in rows[:limit]:
        dist = _stats_distribution(row)
        items.append(
            {
                "product_id": row.product_id,
                "product_name": row.product_name,
                "category_id": row.category_id,
                **distribution_fields(
                    dist, dist.centile(method.benchmark), getattr(row, savings.key)
                ),
                "outliers": row.outliers,
                "units": row.units,
                "spend_pence": row.spend_pence,
            }
        )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([getattr(last, key.key), last.product_id])
    return RankingPage(window, method, sort, items, next_cursor, int(count), int(total))


def _ranking_computed(
    session: Session,
    window: Window,
    method: m.Method,
    sort: str,
    categories: list[str] | None,
    cursor: str | None,
    limit: int,
) -> RankingPage:
    """Every product's variance over ``window`` under ``method``, computed a batch of products
    at a time by the refreshes' batched summary (``summarise_many``, the same figures as
    ``analyse``) from their per-trust totals (``window_columns``)."""
    allowed = set(categories) if categories is not None else None
    ranked: list[tuple[Any, str, dict[str, Any]]] = []
    for product_id, summary, variance in _summarised(
        session, window_columns(session, window), method, allowed
    ):
        dist = variance.distribution
        savings_pence = variance.savings_pence[method.benchmark]
        item = {
            "product_id": product_id,
            "product_name": summary.name,
            "category_id": summary.category_id,
            **distribution_fields(dist, dist.centile(method.benchmark), savings_pence),
            "outliers": variance.outliers,
            "units": variance.units,
            "spend_pence": variance.spend_pence,
        }
        value = savings_pence if sort == "savings" else float(dist.spread)
        ranked.append((value, product_id, item))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    total = sum(item["possible_savings_pence"] for _, _, item in ranked)
    start = 0
    if cursor:
        value, last_id = _rank_cursor(cursor)
        start = next(
            (i for i, (v, p, _) in enumerate(ranked) if (v, p) < (value, last_id)), len(ranked)
        )
    page = ranked[start : start + limit]
    next_cursor = None
    if start + limit < len(ranked) and page:
        next_cursor = encode_cursor([page[-1][0], page[-1][1]])
    return RankingPage(
        window, method, sort, [item for _, _, item in page], next_cursor, len(ranked), total
    )


def _summarised(
    session: Session,
    columns: Iterable[ProductColumns],
    method: m.Method,
    categories: set[str] | None = None,
) -> Iterator[tuple[str, catalog.ProductSummary, m.Summary]]:
    """Each product among ``columns`` that is reported under ``method`` (in the catalogue, not
    excluded from benchmarking, bought by at least ``min_trusts`` trusts; in ``categories``,
    when given), with its catalogue summary and its variance, a batch of products at a time."""
    for batch in chunks(columns, STATS_BATCH):
        summaries = catalog.product_summaries(session, [p for p, _, _ in batch])
        kept = [
            (product_id, units, spends, summary)
            for product_id, units, spends in batch
            if (summary := summaries.get(product_id)) is not None
            and not summary.benchmark_excluded
            and (categories is None or summary.category_id in categories)
        ]
        variances = m.summarise_many([(units, spends) for _, units, spends, _ in kept], method)
        for (product_id, _, _, summary), variance in zip(kept, variances, strict=True):
            if variance.distribution.n_trusts >= method.min_trusts:
                yield product_id, summary, variance


@dataclass
class TrustSavingsPage:
    trust: Organisation
    window: Window
    method: m.Method
    items: list[dict[str, Any]]
    next_cursor: str | None
    total_products: int
    total_possible_savings_pence: int


def _offer_fields(offer: Offer | None, units_per_pack: int) -> dict[str, Any] | None:
    if offer is None:
        return None
    return {
        "offer_id": offer.id,
        "supplier_id": offer.supplier_id,
        "pack_price_pence": offer.pack_price_pence,
        "units_per_pack": units_per_pack,
        "unit_price_pence": Decimal(offer.pack_price_pence) / Decimal(units_per_pack),
    }


def trust_savings(
    session: Session,
    ods_code: str,
    *,
    window: Window | None = None,
    method: m.Method = m.DEFAULT_METHOD,
    cursor: str | None = None,
    limit: int = 50,
    today: date | None = None,
) -> TrustSavingsPage:
    """A trust's savings opportunities, largest first, each with the cheapest current
    marketplace offer for the product. Each saving, and the total, is the exact figure
    rounded once to whole pence."""
    trust = find_trust(session, ods_code)
    window = window or Window.default(today)
    if cached_window(session) == window and method.caches_cover:
        opportunities, exact_total = _cached_opportunities(session, trust.id, window, method)
    else:
        opportunities, exact_total = _computed_opportunities(session, trust.id, window, method)
    opportunities.sort(key=lambda o: (o[0], o[1]), reverse=True)
    start = 0
    if cursor:
        value, last_id = _rank_cursor(cursor)
        start = next(
            (i for i, (v, p, _) in enumerate(opportunities) if (v, p) < (value, last_id)),
            len(opportunities),
        )
    page = opportunities[start : start + limit]
    page_ids = [p for _, p, _ in page]
    summaries = catalog.product_summaries(session, page_ids)
    offers = catalog.cheapest_active_offers(session, page_ids)
    items = []
    for _, product_id, item in page:
        summary = summaries.get(product_id)
        item["cheapest_offer"] = (
            _offer_fields(offers.get(product_id), summary.units_per_pack) if summary else None
        )
        items.append(item)
    next_cursor = None
    if start + limit < len(opportunities) and page:
        next_cursor = encode_cursor([page[-1][0], page[-1][1]])
    return TrustSavingsPage(
        trust=trust,
        window=window,
        method=method,
        items=items,
        next_cursor=next_cursor,
        total_products=len(opportunities),
        total_possible_savings_pence=round_pence(exact_total),
    )


Opportunities = list[tuple[int, str, dict[str, Any]]]  # (savings pence, product id, item)


class _SavingRow(NamedTuple):
    """A trust's row for one product (from the default-window caches, or computed), and its
    saving: in decimals from the decimal benchmark (within ``error`` of the exact one) or exact
    (error 0)."""

    product_id: str
    name: str
    units: int
    spend: int
    n_trusts: int
    benchmark: Decimal
    median: Decimal
    saving: Decimal | Fraction
    error: Decimal

    def exactly(self, benchmark: Fraction) -> _SavingRow:
        saving = m.possible_savings(self.spend, self.units, benchmark)
        return self._replace(saving=saving, error=Decimal(0))


def _cached_opportunities(
    session: Session, trust_id: str, window: Window, method: m.Method
) -> tuple[Opportunities, Fraction]:
    """The trust's counted savings from the default-window caches (any benchmark centile)."""
    return _opportunities(session, window, _cached_savings(session, trust_id, method), method)


def _computed_opportunities(
    session: Session, trust_id: str, window: Window, method: m.Method
) -> tuple[Opportunities, Fraction]:
    """The trust's counted savings over any window or method: its products' distributions
    computed a batch at a time (``summarise_many``, as the caches are) from their per-trust
    totals (``window_columns``)."""
    mine = trust_totals(session, window, trust_id)
    columns = (
        product
        for chunk in chunks(sorted(mine))
        for product in window_columns(session, window, chunk)
    )
    rows: list[_SavingRow] = []
    for product_id, summary, variance in _summarised(session, columns, method):
        dist = variance.distribution
        units, spend = mine[product_id]
        benchmark = dist.centile(method.benchmark)
        rows.append(
            _saving(product_id, summary.name, units, spend, dist.n_trusts, benchmark, dist.median)
        )
    return _opportunities(session, window, rows, method)


def _opportunities(
    session: Session, window: Window, rows: list[_SavingRow], method: m.Method
) -> tuple[Opportunities, Fraction]:
    """The counted savings among a trust's ``rows`` (one per reported product), as items, and
    their exact total.

    A row's benchmark is a decimal (28 digits) of an exact fraction, so a saving computed
    from it is a hair off the exact one. Where that hair could decide whether it counts or
    which way it rounds (it is that close to 0, the minimum or a half penny), the product's
    exact benchmark over ``window`` is computed; so is every product's, when the total is that
    close to a half penny."""
    minimum = method.min_savings_pence
    unsure = {r.product_id for r in rows if m.too_close_to_call(r.saving, r.error, minimum)}
    rows = _exactly(session, window, rows, unsure, method.benchmark)
    counted = [r for r in rows if m.counts(r.saving, minimum)]
    total = sum((Fraction(r.saving) for r in counted), Fraction(0))
    if m.near_half_penny(total, sum((r.error for r in counted), Decimal(0))):
        every = {r.product_id for r in counted}
        counted = _exactly(session, window, counted, every, method.benchmark)
        total = sum((Fraction(r.saving) for r in counted), Fraction(0))
    items = [
        _trust_item(
            r.product_id,
            r.name,
            r.units,
            r.spend,
            r.n_trusts,
            r.median,
            r.benchmark,
            r.saving,
            method,
        )
        for r in counted
    ]
    return [(item["possible_savings_pence"], item["product_id"], item) for item in items], total


def _saving(
    product_id: str,
    name: str,
    units: int,
    spend: int,
    n_trusts: int,
    benchmark: Decimal,
    median: Decimal,
) -> _SavingRow:
    """A trust's row for one product, its saving in decimals from the decimal benchmark."""
    return _SavingRow(
        product_id,
        name,
        units,
        spend,
        n_trusts,
        benchmark,
        median,
        spend - units * benchmark,
        m.decimal_saving_error(spend, units, benchmark),
    )


def _cached_savings(session: Session, trust_id: str, method: m.Method) -> list[_SavingRow]:
    centile = {
        "p10": ProductStats.p10_price,
        "p25": ProductStats.p25_price,
        "median": ProductStats.median_price,
    }[method.benchmark]
    rows = session.execute(
        select(
            ProductStats.product_id,
            ProductStats.product_name,
            TrustWindowTotal.units,
            TrustWindowTotal.spend_pence,
            ProductStats.n_trusts,
            centile,
            ProductStats.median_price,
        )
        .join(ProductStats, ProductStats.product_id == TrustWindowTotal.product_id)
        .where(
            TrustWindowTotal.trust_id == trust_id,
            ProductStats.n_trusts >= method.min_trusts,
            ProductStats.benchmark_excluded.is_(False),
        )
    )
    return [
        _saving(product_id, name, int(units), int(spend), n_trusts, benchmark, median)
        for product_id, name, units, spend, n_trusts, benchmark, median in rows
    ]


def _exactly(
    session: Session, window: Window, rows: list[_SavingRow], product_ids: set[str], benchmark: str
) -> list[_SavingRow]:
    """``rows``, with the savings of these products' rows computed exactly (not again for a
    row that already is), from their exact benchmark centile over ``window``."""
    wanted = {r.product_id for r in rows if r.product_id in product_ids and r.error}
    if not wanted:
        return rows
    exact = _exact_benchmarks(session, window, sorted(wanted), benchmark)
    return [r.exactly(exact[r.product_id]) if r.product_id in wanted else r for r in rows]


def _exact_benchmarks(
    session: Session, window: Window, product_ids: Sequence[str], benchmark: str
) -> dict[str, Fraction]:
    """The exact benchmark centile of these products over ``window``, from the per-trust
    totals their figures were computed from (the caches' for the window they describe)."""
    return {
        product_id: m.exact_benchmark(units, spends, benchmark)
        for chunk in chunks(product_ids)
        for product_id, units, spends in window_columns(session, window, chunk)
    }


def _trust_item(
    product_id: str,
    name: str,
    units: int,
    spend: int,
    n_trusts: int,
    median: Decimal,
    benchmark: Decimal,
    saving: Decimal | Fraction,
    method: m.Method,
) -> dict[str, Any]:
    """One opportunity; ``saving`` is exact, or a decimal far enough from a half penny to
    round as the exact one does."""
    unit_price = Decimal(spend) / Decimal(units)
    return {
        "product_id": product_id,
        "product_name": name,
        "unit_price_pence": unit_price,
        "units": units,
        "spend_pence": spend,
        "n_trusts": n_trusts,
        "benchmark_pence": benchmark,
        "median_pence": median,
        "possible_savings_pence": round_pence(saving),
        "outlier": unit_price > median * (1 + method.outlier_threshold),
    }


@dataclass
class PriceVerdict:
    product_id: str
    unit_price: Decimal
    window: Window
    method: m.Method
    n_trusts: int
    percentile: Decimal | None
    benchmark: Decimal | None
    median: Decimal | None
    verdict: str | None
    reason: str | None
    cheaper_offer: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """The fields of ``PriceCheckSchema`` (the price-check answer, and each quote line's)."""
        return {
            "product_id": self.product_id,
            "unit_price_pence": self.unit_price,
            "window": self.window,
            "method": method_fields(self.method),
            "n_trusts": self.n_trusts,
            "percentile": self.percentile,
            "benchmark_pence": self.benchmark,
            "median_pence": self.median,
            "verdict": self.verdict,
            "reason": self.reason,
            "cheaper_offer": self.cheaper_offer,
        }


def method_fields(method: m.Method) -> dict[str, Any]:
    return {
        "benchmark": method.benchmark,
        "min_trusts": method.min_trusts,
        "outlier_threshold_percent": int(method.outlier_threshold * 100),
        "min_savings_pence": method.min_savings_pence,
    }


def _checked_price(unit_price: Decimal | int) -> Decimal:
    price = Decimal(unit_price)
    if not price.is_finite() or price < 0:
        raise ValidationFailed(
            "A unit price is a non-negative number of pence.",
            errors={"unit_price": ["Must be a non-negative number."]},
        )
    return price


def _verdict_inputs(
    session: Session, window: Window, product_ids: Sequence[str]
) -> dict[str, tuple[m.Distribution, list[Decimal]]]:
    """Each product's distribution over ``window`` and its trusts' unit prices (for the
    percentile rank). For the default window: the materialised distribution and the per-trust
    window totals, for every product in one query. Otherwise computed from the rollups."""
    found: dict[str, tuple[m.Distribution, list[Decimal]]] = {}
    if cached_window(session) != window:
        for product_id, totals in _totals(session, window, product_ids).items():
            variance = m.analyse(totals)
            if variance is not None:
                found[product_id] = (variance.distribution, [t.unit_price for t in variance.trusts])
        return found
    rows = session.execute(
        select(ProductStats, TrustWindowTotal.units, TrustWindowTotal.spend_pence)
        .join(TrustWindowTotal, TrustWindowTotal.product_id == ProductStats.product_id)
        .where(ProductStats.product_id.in_(list(dict.fromkeys(product_ids))))
    )
    prices: dict[str, list[Decimal]] = {}
    stats: dict[str, ProductStats] = {}
    for row, units, spend in rows:
        if units and units > 0:
            stats[row.product_id] = row
            prices.setdefault(row.product_id, []).append(Decimal(int(spend)) / Decimal(int(units)))
    for product_id, row in stats.items():
        found[product_id] = (_stats_distribution(row), sorted(prices[product_id]))
    return found


def price_verdicts(
    session: Session,
    lines: Sequence[tuple[str, Decimal | int]],
    *,
    window: Window | None = None,
    method: m.Method = m.DEFAULT_METHOD,
    today: date | None = None,
) -> list[PriceVerdict]:
    """``price_verdict`` for many (product id, unit price) pairs at once, in a fixed number of
    queries whatever the number of lines (a quote calls this once for its whole basket)."""
    prices = [_checked_price(price) for _, price in lines]
    product_ids = [product_id for product_id, _ in lines]
    products = catalog.product_summaries(session, product_ids)
    for product_id in product_ids:
        if product_id not in products:
            catalog.get_product(session, product_id)  # 404 for an unknown product
    window = window or Window.default(today)
    inputs = _verdict_inputs(session, window, product_ids)
    cheapest = catalog.cheapest_active_offers(session, product_ids)
    verdicts = []
    for product_id, price in zip(product_ids, prices, strict=True):
        product = products[product_id]
        dist, trust_prices = inputs.get(product_id, (None, []))
        n_trusts = dist.n_trusts if dist else 0
        reason = _not_reported_reason(product, n_trusts, method)
        offer = _offer_fields(cheapest.get(product_id), product.units_per_pack)
        cheaper = offer if offer is not None and offer["unit_price_pence"] < price else None
        if dist is None or reason is not None:
            verdicts.append(
                PriceVerdict(
                    product_id,
                    price,
                    window,
                    method,
                    n_trusts,
                    None,
                    None,
                    None,
                    None,
                    reason,
                    cheaper,
                )
            )
            continue
        verdicts.append(
            PriceVerdict(
                product_id=product_id,
                unit_price=price,
                window=window,
                method=method,
                n_trusts=n_trusts,
                percentile=m.percentile_rank(trust_prices, price),
                benchmark=dist.centile(method.benchmark),
                median=dist.median,
                verdict=m.verdict(price, dist, method),
                reason=None,
                cheaper_offer=cheaper,
            )
        )
    return verdicts


def price_verdict(
    session: Session,
    product_id: str,
    unit_price: Decimal | int,
    *,
    window: Window | None = None,
    method: m.Method = m.DEFAULT_METHOD,
    today: date | None = None,
) -> PriceVerdict:
    """How a unit price (pence per base unit) compares with what trusts paid over ``window``
    (default: the default window ending ``today``): its percentile among trusts, the
    benchmark, the median, a verdict, and the cheapest current offer when it is cheaper. The
    verdict is None (with a reason) when the product is excluded from benchmarking or too few
    trusts bought it in the window. The default window is read from the caches; any other is
    summed from the rollups, as for ``product_variance``."""
    return price_verdicts(
        session, [(product_id, unit_price)], window=window, method=method, today=today
    )[0]
