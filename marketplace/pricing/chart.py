"""An accessible SVG of what each trust paid per unit for one product: a dot plot (one row per
trust, cheapest at the top) with the median and benchmark as vertical lines, a highlighted
trust, the axis in pounds per unit, and ``<title>``/``<desc>`` for screen readers."""

from __future__ import annotations

from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

from .service import ProductVarianceView

WIDTH = 760
LEFT = 230  # room for trust names
RIGHT = 40
TOP = 100
ROW = 22
BOTTOM = 64
DOT = "#005EB8"  # NHS blue
HIGHLIGHT = "#D5281B"  # NHS red, with a larger marker and a text label (not colour alone)
MEDIAN = "#425563"
BENCHMARK = "#007F3B"


def pounds(pence: Decimal, step: Decimal | None = None) -> str:
    """Pence per unit as pounds with enough places to show it (e.g. £0.0256, £1.25): 2 places
    from £1, else 4, and more when they are needed. An axis tick (``step``: the ticks' spacing,
    in pence) has the places its step needs, so that no two ticks look alike; any other figure
    at least two significant digits, so that a price that is not zero never shows as £0.0000
    (a swab at 0.002p is £0.000020)."""
    value = Decimal(pence).scaleb(-2)  # exact
    places = 2 if abs(value) >= 1 else 4
    if step is not None and step > 0:
        places = max(places, -step.scaleb(-2).adjusted())
    elif value and abs(value) < 1:
        places = max(places, -value.adjusted() + 1)
    return f"£{value:.{min(places, MAX_PLACES)}f}"


MAX_PLACES = 40  # beyond the smallest unit price an import can give (10**-15p)


def _nice_step(span: Decimal) -> Decimal:
    raw = span / 5 if span > 0 else Decimal(1)
    exponent = raw.adjusted()
    base = Decimal(10) ** exponent
    for multiple in (1, 2, 5, 10):
        step = base * multiple
        if step >= raw:
            return step
    return base * 10


def _ticks(low: Decimal, high: Decimal) -> list[Decimal]:
    step = _nice_step(high - low)
    start = (low / step).to_integral_value(rounding="ROUND_FLOOR") * step
    ticks = []
    value = start
    while value <= high + step / 2 and len(ticks) < 12:
        ticks.append(value)
        value += step
    return ticks


def render(view: ProductVarianceView, highlight: str | None = None) -> str:
    product = view.product
    window = f"{view.window.start.isoformat()} to {view.window.end.isoformat()}"
    title = f"{product.name}: price paid per unit by trust, {window}"
    highlight = (highlight or "").strip().upper() or None
    rows = view.trusts
    if view.variance is None or not rows:
        message = (
            f"Excluded from benchmarking: {product.benchmark_excluded_reason or 'no reason given'}"
            if view.reason == "excluded_from_benchmarking"
            else f"Not enough trusts to compare ({view.n_trusts} bought it; "
            f"at least {view.method.min_trusts} are needed)."
        )
        height = 140
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-title chart-desc" '
            f'font-family="Arial, Helvetica, sans-serif">'
            f'<title id="chart-title">{escape(title)}</title>'
            f'<desc id="chart-desc">{escape(message)}</desc>'
            f'<rect width="100%" height="100%" fill="#ffffff"/>'
            f'<text x="20" y="32" font-size="16" font-weight="bold">{escape(title)}</text>'
            f'<text x="20" y="72" font-size="14">{escape(message)}</text></svg>'
        )

    dist = view.variance.distribution
    benchmark = view.variance.benchmark
    prices = [Decimal(r["unit_price_pence"]) for r in rows]
    low = min([*prices, benchmark]) * Decimal("0.95")
    high = max(prices) * Decimal("1.05")
    ticks = _ticks(low, high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None
    low, high = min(ticks[0], low), max(ticks[-1], high)
    plot_width = WIDTH - LEFT - RIGHT
    height = TOP + ROW * len(rows) + BOTTOM

    def x(price: Decimal) -> str:
        return f"{LEFT + float((price - low) / (high - low)) * plot_width:.1f}"

    bottom = TOP + ROW * len(rows)
    highlighted = next((r for r in rows if r["ods_code"] == highlight), None)
    desc = (
        f"Dot plot of the price per unit that {dist.n_trusts} trusts paid for {product.name} "
        f"from {window}, cheapest first. Median {pounds(dist.median)} per unit; benchmark "
        f"({view.method.benchmark}) {pounds(benchmark)}; lowest {pounds(dist.min)} "
        f"({rows[0]['ods_code']}), highest {pounds(dist.max)} ({rows[-1]['ods_code']}); "
        f"the highest paid {dist.spread * 100:.0f}% more than the lowest."
    )
    if highlight:
        if highlighted:
            where = (
                "an outlier"
                if highlighted["outlier"]
                else (
                    "above the median"
                    if highlighted["unit_price_pence"] > dist.median
                    else "at or below the median"
                )
            )
            desc += (
                f" Highlighted: {highlighted['trust_name']} ({highlight}) paid "
                f"{pounds(highlighted['unit_price_pence'])} per unit, {where}."
            )
        else:
            desc += f" {highlight} did not buy this product in the window."

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-title chart-desc" '
        f'font-family="Arial, Helvetica, sans-serif" font-size="12">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(desc)}</desc>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="16" y="26" font-size="16" font-weight="bold">{escape(product.name)}</text>',
        f'<text x="16" y="46" font-size="13" fill="#425563">Price paid per unit by trust, '
        f"{escape(window)} ({dist.n_trusts} trusts)</text>",
        '<g class="grid" stroke="#d8dde0" stroke-width="1">',
    ]
    for tick in ticks:
        parts.append(f'<line x1="{x(tick)}" y1="{TOP - 8}" x2="{x(tick)}" y2="{bottom}"/>')
    parts.append("</g>")
    parts.append('<g class="axis" text-anchor="middle" fill="#212b32">')
    for tick in ticks:
        parts.append(f'<text x="{x(tick)}" y="{bottom + 18}">{escape(pounds(tick, step))}</text>')
    parts.append(
        f'<text x="{LEFT + plot_width / 2:.1f}" y="{bottom + 42}" font-size="13">'
        "Price paid per unit (£)</text></g>"
    )
    for name, value, colour, dash, label_y in (
        ("median", dist.median, MEDIAN, "6 4", TOP - 26),
        ("benchmark", benchmark, BENCHMARK, "2 3", TOP - 12),
    ):
        label = f"{'Median' if name == 'median' else 'Benchmark (' + view.method.benchmark + ')'} {pounds(value)}"
        parts.append(
            f'<g class="{name}"><line x1="{x(value)}" y1="{TOP - 8}" x2="{x(value)}" y2="{bottom}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
            f'<text x="{x(value)}" y="{label_y}" fill="{colour}" text-anchor="middle">{escape(label)}</text></g>'
        )
    parts.append('<g class="trusts">')
    for i, row in enumerate(rows):
        cy = TOP + ROW * i + ROW / 2
        is_highlight = row["ods_code"] == highlight
        colour = HIGHLIGHT if is_highlight else DOT
        name = f"{row['trust_name']} ({row['ods_code']})"
        if len(name) > 34:
            name = name[:31] + "…"
        weight = ' font-weight="bold"' if is_highlight else ""
        ring = ' stroke="#212b32" stroke-width="2"' if is_highlight else ""
        tooltip = (
            f"{row['trust_name']} ({row['ods_code']}): {pounds(row['unit_price_pence'])} per unit, "
            f"{row['units']} units" + (", outlier" if row["outlier"] else "")
        )
        parts.append(
            f'<g class="trust{" highlight" if is_highlight else ""}" data-ods={quoteattr(row["ods_code"] or "")}>'
            f"<title>{escape(tooltip)}</title>"
            f'<text x="{LEFT - 10}" y="{cy + 4:.1f}" text-anchor="end"{weight}>{escape(name)}</text>'
            f'<circle cx="{x(row["unit_price_pence"])}" cy="{cy:.1f}" r="{7 if is_highlight else 5}" '
            f'fill="{colour}"{ring}/>'
        )
        notes = ([f"◀ {row['ods_code']}"] if is_highlight else []) + (
            ["outlier"] if row["outlier"] else []
        )
        if notes:
            parts.append(
                f'<text x="{float(x(row["unit_price_pence"])) + 12:.1f}" y="{cy + 4:.1f}" '
                f'fill="{HIGHLIGHT if is_highlight else "#212b32"}"{weight}>'
                f"{escape(' · '.join(notes))}</text>"
            )
        parts.append("</g>")
    parts.append("</g></svg>")
    return "".join(parts)
