"""End to end in a real headless Chromium (selenium + the system chromedriver): the app served on
127.0.0.1 by werkzeug, a product with offers and purchase records; search for it with the
keyboard, open it, find the chart and the trust table, check the layout on a phone, and save
screenshots to ``test-artifacts/``. Optionally, axe-core checks the pages.

Needs the Debian packages ``chromium`` and ``chromium-driver``
(``apt-get install -y chromium chromium-driver``) and ``selenium`` (the test extra); skipped,
with the reason, without them. axe-core: ``npm install --no-save axe-core@4`` in the repository
(or ``AXE_CORE_JS=/path/to/axe.min.js``); that check is skipped without it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
)
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "Chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(app) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def product(world):
    gloves = world.product(
        name="Nitrile examination gloves, medium", category_code="18424300", units_per_pack=100
    )
    world.offer(world.large, gloves, 399)
    world.offer(world.sme, gloves, 256)
    for i, (trust, total) in enumerate(zip(world.trusts, (2560, 3100, 4200), strict=True)):
        world.purchase(trust, gloves, quantity=10, total_pence=total, ref=f"g{i}")
    return gloves


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_search_open_and_read_a_product(server, browser, product):
    ARTIFACTS.mkdir(exist_ok=True)
    wait = WebDriverWait(browser, 15)
    browser.get(server + "/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en-GB"

    # Keyboard: the first Tab reaches the skip link; the search box has a visible label.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to main content"
    label = browser.find_element(By.CSS_SELECTOR, "label[for=q]")
    assert label.is_displayed()
    assert label.text == "Product name or GTIN"
    box = browser.find_element(By.ID, "q")
    # The home page already links the product (under "Where prices differ most"), so wait for
    # the results page itself before looking for the link.
    home = browser.find_element(By.TAG_NAME, "html")
    box.send_keys("examination gloves", Keys.ENTER)
    wait.until(ec.staleness_of(home))
    wait.until(ec.text_to_be_present_in_element((By.ID, "results-heading"), "Results for"))

    link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, product.name)))
    result = browser.find_element(By.CSS_SELECTOR, ".result")
    assert "£0.0256 per unit" in result.text
    assert "Small Medical Supplies Ltd" in result.text
    browser.save_screenshot(str(ARTIFACTS / "search-results.png"))
    results_page = browser.find_element(By.TAG_NAME, "html")
    link.send_keys(Keys.ENTER)  # follow it with the keyboard

    wait.until(ec.staleness_of(results_page))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.trusts")))
    assert browser.find_element(By.TAG_NAME, "h1").text == product.name
    chart = browser.find_element(By.CSS_SELECTOR, "figure.chart svg[role=img]")
    assert chart.is_displayed()
    assert chart.size["width"] > 300
    rows = browser.find_elements(By.CSS_SELECTOR, "table.trusts tbody tr")
    assert len(rows) == 3
    assert "Leeds Teaching Hospitals NHS Trust" in rows[0].text  # cheapest first
    offers = browser.find_elements(By.CSS_SELECTOR, "table.offers tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text.split(" SME")[0] for r in offers] == [
        "Small Medical Supplies Ltd",
        "Big Healthcare Distribution plc",
    ]
    browser.save_screenshot(str(ARTIFACTS / "product-page.png"))
    assert console_errors(browser) == []  # no CSP violations, no missing assets

    # On a phone: nothing wider than the screen (tables scroll inside their own region).
    browser.set_window_size(390, 844)
    desktop_page = browser.find_element(By.TAG_NAME, "html")
    browser.refresh()
    wait.until(ec.staleness_of(desktop_page))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.trusts")))
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    assert browser.find_element(By.CSS_SELECTOR, "figure.chart svg").size["width"] <= 390
    browser.save_screenshot(str(ARTIFACTS / "product-page-phone.png"))


def _axe_script() -> str | None:
    candidates = [os.environ.get("AXE_CORE_JS"), str(ROOT / "node_modules/axe-core/axe.min.js")]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return Path(candidate).read_text(encoding="utf-8")
    return None


def test_axe_finds_no_serious_accessibility_problems(server, browser, product):
    script = _axe_script()
    if script is None:
        pytest.skip("axe-core not found (npm install --no-save axe-core@4, or set AXE_CORE_JS)")
    found = {}
    for path in ("/", "/?q=gloves", f"/products/{product.id}", "/open-data"):
        browser.get(server + path)
        browser.execute_script(script)
        result = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa', 'wcag22aa', 'best-practice']}})"
            ".then(r => done(r.violations.map(v => [v.id, v.impact, v.nodes.length])));"
        )
        serious = [v for v in result if v[1] in ("serious", "critical")]
        if serious:
            found[path] = serious
    assert found == {}


def test_api_docs_render_under_their_content_security_policy(server, browser):
    # /docs runs Swagger UI under a CSP that allows its one inline start-up script by hash: the
    # page must still draw every operation, with no CSP violation in the console.
    browser.get(server + "/docs")
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) > 20
    assert (
        "NHS Open Procurement Marketplace" in browser.find_element(By.CSS_SELECTOR, ".title").text
    )
    # The browser asks for /favicon.ico on its own; the API has none (a 404 is not a violation).
    assert [m for m in console_errors(browser) if "/favicon.ico" not in m] == []
