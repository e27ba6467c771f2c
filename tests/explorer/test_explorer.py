"""The metric-tree explorer end to end: headless Chromium on the page at `/`, a real server, the demo at scale 2000.

Numbers are read off the cards' data attributes (`data-metric`, `data-value`, `data-comparison`, …) and
compared with direct `project.query` answers for the same periods and filters.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import tomllib
from importlib.resources import files
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

PROFIT_TREE = ["profit", "net_revenue", "costs", "revenue", "discounts", "refunds", "cogs", "shipping", "payment_fees"]
LEAVES = ["revenue", "discounts", "refunds", "cogs", "shipping", "payment_fees"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (gitignored)


def approx(x):
    return pytest.approx(float(x), abs=0.006, rel=1e-9)


def values(project, start: str, end: str, where=(), metrics=PROFIT_TREE) -> dict[str, float]:
    row = project.query(metrics=list(metrics), filters=list(where),
                        time_range={"start": start, "end": end}).to_pylist()[0]
    return {k: float(v or 0) for k, v in row.items()}


def month(day: dt.date, shift: int = 0) -> tuple[str, str]:
    """The calendar month `shift` months from `day`'s: first and last day."""
    y, m = divmod(day.year * 12 + day.month - 1 + shift, 12)
    first = dt.date(y, m + 1, 1)
    nxt = dt.date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
    return first.isoformat(), (nxt - dt.timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def last_month(project) -> tuple[str, str, str, str]:
    """The last full month of data and the month before it, straight from the query API."""
    last = project.query(metrics=["profit"], dimensions=["metric_time__day"], order_by=["-metric_time__day"],
                         limit=1).to_pylist()[0]["metric_time__day"]
    full = 0 if (last + dt.timedelta(days=1)).month != last.month else -1
    return (*month(last, full), *month(last, full - 1))


@pytest.fixture(scope="module")
def good(project) -> dict[str, str]:
    return {name: node.good for name, node in project.compiler.tree.nodes.items()}


def tone(change: float, good: str) -> str:
    if abs(change) < 1e-9:
        return "flat"
    return ("good" if change > 0 else "bad") if good != "down" else ("bad" if change > 0 else "good")


def assert_tree(cards: dict, now: dict, then: dict, names=PROFIT_TREE) -> None:
    assert sorted(cards) == sorted(names)
    for n in names:
        assert float(cards[n]["value"]) == approx(now[n]), n
        assert float(cards[n]["comparison"]) == approx(then[n]), n
        assert float(cards[n]["change"]) == approx(now[n] - then[n]), n


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_profit_tree_is_last_full_month_vs_the_month_before(page, project, last_month, good):
    page.open()
    start, end, cstart, cend = last_month
    params = page.params()
    assert (params["root"], params["start"], params["end"]) == (["profit"], [start], [end])
    assert params["compare"] == ["previous"] and params["method"] == ["shapley"]
    assert page.d.find_element(By.ID, "compare_start").get_attribute("value") == cstart
    assert page.d.find_element(By.ID, "compare_end").get_attribute("value") == cend
    cards = page.cards()
    now, then = values(project, start, end), values(project, cstart, cend)
    assert_tree(cards, now, then)
    # colored by each metric's good direction: costs going up is red, revenue going up is green
    for n in PROFIT_TREE:
        assert tone(now[n] - then[n], good[n]) in cards[n]["cls"].split(), n
    # each node's contribution to profit's change; the leaves' add up to it (Shapley on a sum is exact)
    root_change = now["profit"] - then["profit"]
    assert sum(float(cards[n]["contribution"]) for n in LEAVES) == approx(root_change)
    assert float(cards["net_revenue"]["contribution"]) + float(cards["costs"]["contribution"]) == approx(root_change)
    assert float(cards["cogs"]["contribution"]) == approx(-(now["cogs"] - then["cogs"]))
    # the operator at each fork, a sparkline per card, a readable summary
    ops = page.d.execute_script("return [...document.querySelectorAll('#tree .op text')].map(t => t.textContent)")
    assert sorted(ops) == sorted(["+", "−", "+", "−", "−", "+", "+", "+"])
    assert len(page.d.find_elements(By.CSS_SELECTOR, "#tree .card .spark path")) == len(PROFIT_TREE)
    summary = page.d.find_element(By.ID, "summary").text
    assert summary.startswith("profit $") and " vs " in summary
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "profit-tree.png"
    page.d.save_screenshot(str(shot))
    assert png_size(shot) == (1280, 800)
    # the whole tree fits a 1280×800 screen: every card is inside the viewport
    assert page.d.execute_script("""return [...document.querySelectorAll('#tree .card')].every(c => {
        const r = c.getBoundingClientRect(); return r.left >= 0 && r.right <= innerWidth && r.bottom <= innerHeight; })""")


def test_changing_the_period_changes_values_and_url_and_back_works(page, project, last_month):
    start, end, cstart, cend = last_month
    page.open()
    december = page.cards()
    page.after(lambda: page.d.find_element(By.ID, "prev").click())
    assert (page.params()["start"], page.params()["end"]) == ([cstart], [cend])
    before = month(dt.date.fromisoformat(cstart), -1)
    november = page.cards()
    assert_tree(november, values(project, cstart, cend), values(project, *before))
    assert november["profit"]["value"] != december["profit"]["value"]
    page.after(page.d.back)
    assert page.params()["start"] == [start] and page.cards()["profit"]["value"] == december["profit"]["value"]
    page.after(page.d.forward)
    assert page.params()["start"] == [cstart] and page.cards()["profit"]["value"] == november["profit"]["value"]
    # a quarter: the grain snaps the period to the last full quarter, compared with the one before
    page.after(lambda: Select(page.d.find_element(By.ID, "grain")).select_by_value("quarter"))
    params = page.params()
    assert params["grain"] == ["quarter"]
    qs, qe = params["start"][0], params["end"][0]
    assert dt.date.fromisoformat(qs).month in (1, 4, 7, 10) and qe <= end
    q0 = month(dt.date.fromisoformat(qs), -3)[0], month(dt.date.fromisoformat(qs), -1)[1]
    assert_tree(page.cards(), values(project, qs, qe), values(project, *q0))


def test_drill_lists_drivers_and_filter_to_this_filters_the_tree(page, project, last_month):
    start, end, cstart, cend = last_month
    page.open()
    unfiltered = page.cards()
    card = page.card("revenue")
    page.d.execute_script("arguments[0].focus()", card)
    ActionChains(page.d).send_keys("d").perform()  # D drills into the focused node
    panel = page.d.find_element(By.ID, "panel")
    page.wait(lambda: panel.is_displayed(), what="the panel")
    assert page.d.find_element(By.ID, "panel-title").text == "revenue"
    page.wait(lambda: page.d.find_element(By.ID, "drill-items").get_attribute("data-metric") == "revenue",
              what="the drill answer")
    items = page.d.find_elements(By.CSS_SELECTOR, "#drill-items li.item")
    assert items, page.d.find_element(By.ID, "drill-status").text
    dims = {i.get_attribute("data-dimension") for i in items}
    assert dims and dims <= {"channel", "country", "acquisition_channel", "is_first_order"}
    button = items[0].find_element(By.CSS_SELECTOR, "button.filter-to")
    where = button.get_attribute("data-where")
    assert re.fullmatch(r"\w+ (= .+|is null)", where)
    page.after(button.click)
    assert page.params()["where"] == [where]
    assert [c.get_attribute("data-where") for c in page.d.find_elements(By.CSS_SELECTOR, "#chips .chip")] == [where]
    filtered = page.cards()
    assert_tree(filtered, values(project, start, end, [where]), values(project, cstart, cend, [where]))
    assert filtered["revenue"]["value"] != unfiltered["revenue"]["value"]
    # the panel follows the filter: the drill is asked again, and this value's button is now spent
    page.wait(lambda: page.d.find_element(By.ID, "drill-items").get_attribute("data-metric") == "revenue")
    spent = page.d.find_elements(By.CSS_SELECTOR, f'#drill-items button.filter-to[data-where="{where}"]')
    assert all(not b.is_enabled() for b in spent)
    # removing the chip brings the whole shop back
    page.after(lambda: page.d.find_element(By.CSS_SELECTOR, "#chips .chip button").click())
    assert "where" not in page.params() and page.cards()["revenue"]["value"] == unfiltered["revenue"]["value"]


def test_what_if_a_leaf_changes_propagates_to_the_root(page, project, last_month):
    start, end, *_ = last_month
    page.open()
    now = values(project, start, end)
    page.card("cogs").click()
    pct = page.d.find_element(By.ID, "whatif-pct")
    page.wait(lambda: pct.is_displayed(), what="the what-if form")
    pct.clear()
    pct.send_keys("-10")
    page.d.find_element(By.CSS_SELECTOR, "#whatif-form button[type=submit]").click()
    page.wait(lambda: page.cards()["profit"]["whatif"] is not None, what="the what-if answer")
    cards = page.cards()
    assert float(cards["cogs"]["whatif"]) == approx(now["cogs"] * 0.9)
    assert float(cards["costs"]["whatif"]) == approx(now["costs"] - now["cogs"] * 0.1)
    assert float(cards["profit"]["whatif"]) == approx(now["profit"] + now["cogs"] * 0.1)
    assert float(cards["revenue"]["whatif"]) == approx(now["revenue"])  # untouched branches keep their values
    assert float(cards["profit"]["value"]) == approx(now["profit"])  # the actual value stays on the card
    banner = page.d.find_element(By.ID, "whatif-banner")
    assert banner.is_displayed() and "cogs" in banner.text
    page.d.find_element(By.ID, "whatif-reset").click()
    page.wait(lambda: page.cards()["profit"]["whatif"] is None, what="the reset")


def test_keyboard_tab_enter_and_d(page, project):
    page.open()
    body = page.d.find_element(By.TAG_NAME, "body")
    body.click()
    active = lambda: page.d.execute_script(  # noqa: E731
        "const a = document.activeElement; return a && a.dataset ? a.dataset.metric || null : null")
    for _ in range(40):  # Tab from the page's top through the controls to the first card
        ActionChains(page.d).send_keys(Keys.TAB).perform()
        if active():
            break
    assert active() == "profit"
    ActionChains(page.d).send_keys(Keys.TAB).perform()
    assert active() == "net_revenue"
    card = page.card("net_revenue")
    assert card.get_attribute("aria-expanded") == "true" and card.get_attribute("role") == "treeitem"
    ActionChains(page.d).send_keys(Keys.ENTER).perform()
    page.wait(lambda: "revenue" not in page.cards(), what="net revenue to collapse")
    assert page.card("net_revenue").get_attribute("aria-expanded") == "false"
    assert active() == "net_revenue"  # focus stays on the node
    opened = page.params()["open"][0].split(",")
    assert "net_revenue" not in opened and {"profit", "costs"} <= set(opened)
    ActionChains(page.d).send_keys(Keys.ENTER).perform()
    page.wait(lambda: "revenue" in page.cards(), what="net revenue to expand")
    ActionChains(page.d).send_keys("d").perform()
    page.wait(lambda: page.d.find_element(By.ID, "drill-items").get_attribute("data-metric") == "net_revenue",
              what="the drill of net revenue")
    ActionChains(page.d).send_keys(Keys.ESCAPE).perform()
    page.wait(lambda: not page.d.find_element(By.ID, "panel").is_displayed(), what="the panel to close")
    # arrows: down moves to the next node, left on an open node collapses it
    page.d.execute_script("arguments[0].focus()", page.card("costs"))
    ActionChains(page.d).send_keys(Keys.ARROW_LEFT).perform()
    page.wait(lambda: "cogs" not in page.cards(), what="costs to collapse")


def test_a_link_reproduces_the_view(page, project):
    where = "channel = 'web'"
    query = ("?root=profit&grain=quarter&start=2025-10-01&end=2025-12-31&compare=yoy&method=lmdi"
             "&where=channel+%3D+%27web%27&open=profit")
    page.open(query)
    d = page.d
    assert Select(d.find_element(By.ID, "grain")).first_selected_option.get_attribute("value") == "quarter"
    assert Select(d.find_element(By.ID, "compare")).first_selected_option.get_attribute("value") == "yoy"
    assert Select(d.find_element(By.ID, "method")).first_selected_option.get_attribute("value") == "lmdi"
    assert [c.get_attribute("data-where") for c in d.find_elements(By.CSS_SELECTOR, "#chips .chip")] == [where]
    names = ["profit", "net_revenue", "costs"]  # only the root is expanded
    assert_tree(page.cards(), values(project, "2025-10-01", "2025-12-31", [where], names),
                values(project, "2024-10-01", "2024-12-31", [where], names), names)
    assert page.cards()["costs"]["expanded"] == "false"
    assert "LMDI" in page.card("profit").text


def test_phone_width_stacks_the_controls_and_the_tree(page):
    page.open(width=390, height=844)
    d = page.d
    assert d.execute_script("return document.documentElement.scrollWidth") <= 390
    # one card per row, children indented under their parent, nothing wider than the screen
    boxes = d.execute_script("""return [...document.querySelectorAll('#tree .card')].map(c => {
        const r = c.getBoundingClientRect(); return [c.dataset.metric, r.left, r.right, r.top]; })""")
    assert [b[0] for b in boxes] == ["profit", "net_revenue", "revenue", "discounts", "refunds", "costs", "cogs",
                                     "shipping", "payment_fees"]
    assert all(b[2] <= 390 for b in boxes) and all(a[3] < b[3] for a, b in pairwise(boxes))
    assert boxes[0][1] < boxes[1][1] < boxes[2][1]
    assert d.execute_script("""return [...document.querySelectorAll('.top select, .top input, .top button')]
        .filter(e => e.offsetParent).every(e => e.getBoundingClientRect().right <= innerWidth)""")
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "profit-tree-phone.png"))
    page.card("cogs").click()  # the panel is a bottom sheet as wide as the screen
    panel = d.find_element(By.ID, "panel")
    page.wait(lambda: panel.is_displayed())
    assert panel.rect["width"] == pytest.approx(390, abs=1) and panel.rect["y"] > 300


def test_page_assets_are_local_and_ship_as_package_data(live):
    with httpx.Client(base_url=live.url, timeout=10) as c:
        index = c.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in index.headers["content-security-policy"]
        for path, kind in [("/explorer/explorer.js", "text/javascript"), ("/explorer/explorer.css", "text/css")]:
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
            assert c.get(path, headers={"if-none-match": r.headers["etag"]}).status_code == 304
            # nothing from elsewhere: the only absolute URL is the SVG namespace
            assert set(re.findall(r"https?://[^\s'\"]+", r.text)) <= {"http://www.w3.org/2000/svg"}
        assert c.get("/explorer/nope.js").status_code == 404
        assert not re.search(r"(src|href)=\"https?:", index.text)
    shipped = {p.name for p in (files("server.explorer") / "static").iterdir()}
    assert shipped >= {"index.html", "explorer.js", "explorer.css"}
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["server.explorer"]
    assert globs == ["static/*"]


def test_filter_picker_lists_values_from_a_query_and_filters_the_tree(page, project, last_month):
    start, end, cstart, cend = last_month
    page.open()
    d = page.d
    dims = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "fdim")).options][1:]
    assert {"channel", "country", "acquisition_channel"} <= set(dims) and "category" not in dims  # profit's dims
    Select(d.find_element(By.ID, "fdim")).select_by_value("country")
    values_box = d.find_element(By.ID, "fval")
    page.wait(lambda: values_box.is_enabled(), what="the country values")
    shown = [o.text for o in Select(values_box).options][1:]
    countries = {r["country"] for r in project.query(metrics=["profit"], dimensions=["country"]).to_pylist()}
    assert set(shown) == countries
    Select(values_box).select_by_visible_text(shown[0])
    page.after(lambda: d.find_element(By.ID, "fadd").click())
    where = f"country = '{shown[0]}'"
    assert page.params()["where"] == [where]
    assert_tree(page.cards(), values(project, start, end, [where]), values(project, cstart, cend, [where]))


def test_custom_comparison_period(page, project, last_month):
    start, end, cstart, cend = last_month
    page.open()
    d = page.d
    page.wait(lambda: not d.find_element(By.ID, "custom").is_displayed())
    Select(d.find_element(By.ID, "compare")).select_by_value("custom")
    assert d.find_element(By.ID, "custom").is_displayed()
    params = page.params()
    assert params["compare"] == ["custom"] and params["compare_start"] == [cstart]
    year_before = month(dt.date.fromisoformat(start), -12)
    page.after(lambda: d.execute_script("""
        const [s, e] = [document.getElementById('compare_start'), document.getElementById('compare_end')];
        s.value = arguments[0]; e.value = arguments[1]; e.dispatchEvent(new Event('change'));""", *year_before))
    params = page.params()
    assert (params["compare_start"], params["compare_end"]) == ([year_before[0]], [year_before[1]])
    assert_tree(page.cards(), values(project, start, end), values(project, *year_before))
