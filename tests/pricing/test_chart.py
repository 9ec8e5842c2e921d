"""The price-variance chart: valid, accessible SVG; a headless screenshot where Chromium is
installed (into test-artifacts/)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import days_ago, line, make_gtin

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def chart_market(world, import_as):
    for i, total in enumerate([2000, 2500, 3000, 3500, 6000]):
        import_as(
            world.trust(i),
            [
                line(
                    f"PO-{i}",
                    1,
                    gtin=make_gtin(1),
                    quantity=10,
                    total_price_pence=total,
                    when=days_ago(3),
                )
            ],
        )
    return world


def _svg(client, path: str) -> ET.Element:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/svg+xml"
    return ET.fromstring(response.get_data())  # noqa: S314 (our own output)


def test_chart_is_accessible_svg_with_lines_and_highlight(client, chart_market):
    root = _svg(
        client, f"/api/v1/products/{chart_market.gloves.id}/price-variance.svg?highlight=rt4"
    )
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-title chart-desc"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert "Nitrile examination gloves" in title.text
    assert days_ago(364).isoformat() in title.text
    assert "5 trusts" in desc.text
    assert "Median £0.0300" in desc.text
    assert "benchmark (p10) £0.0220" in desc.text
    assert "Highlighted: Trust 4 (RT4) paid £0.0600 per unit, an outlier" in desc.text
    trusts = root.findall(f".//{SVG}g[@data-ods]")
    assert [g.get("data-ods") for g in trusts] == ["RT0", "RT1", "RT2", "RT3", "RT4"]
    assert all(g.find(f"{SVG}circle") is not None for g in trusts)
    assert [g.get("data-ods") for g in trusts if "highlight" in g.get("class")] == ["RT4"]
    assert root.find(f".//{SVG}g[@class='median']/{SVG}line") is not None
    assert root.find(f".//{SVG}g[@class='benchmark']/{SVG}line") is not None
    axis = "".join(root.find(f".//{SVG}g[@class='axis']").itertext())
    assert "£" in axis
    assert "Price paid per unit (£)" in axis


def test_chart_without_enough_trusts_says_so(client, world, import_as):
    import_as(world.trust(0), [line("PO-1", 1, gtin=make_gtin(2))])
    root = _svg(client, f"/api/v1/products/{world.stockings.id}/price-variance.svg")
    assert "Not enough trusts" in root.find(f"{SVG}desc").text


def test_chart_for_unknown_highlight_and_product(client, chart_market):
    root = _svg(
        client, f"/api/v1/products/{chart_market.gloves.id}/price-variance.svg?highlight=ZZZ"
    )
    assert "ZZZ did not buy this product" in root.find(f"{SVG}desc").text
    assert client.get("/api/v1/products/prd_nope/price-variance.svg").status_code == 404


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed on this machine"
)
def test_chart_screenshot(client, chart_market, tmp_path):
    response = client.get(
        f"/api/v1/products/{chart_market.gloves.id}/price-variance.svg?highlight=RT2"
    )
    svg = tmp_path / "chart.svg"
    svg.write_bytes(response.get_data())
    ARTEFACTS.mkdir(exist_ok=True)
    shot = ARTEFACTS / "price-variance-chart.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=800,300",
            svg.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert shot.exists()
    assert shot.stat().st_size > 1000
    assert shutil.which(str(CHROMIUM))
