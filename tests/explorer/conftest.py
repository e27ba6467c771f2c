"""The explorer page in headless Chromium (Debian's chromium + chromium-driver, driven by selenium) against a
real uvicorn server on loopback serving the demo at scale 2000 (tests/server/conftest.py's `demo_dir` and
`live`, reused here).

Chromium and its driver are installed by .ci/run; a missing one fails these tests with the install command,
they are never skipped.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "phloem_tests_server_conftest", Path(__file__).resolve().parents[1] / "server" / "conftest.py")
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)
demo_dir = _server.demo_dir  # noqa: F811 — re-exported fixtures
live = _server.live

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL = "apt-get install -y chromium chromium-driver && pip install -e '.[test]'  (as .ci/run does)"


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session, with a fresh profile; the viewport is 1280×800."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL}", pytrace=False)
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: {INSTALL}", pytrace=False)
    profile = tempfile.mkdtemp(prefix="phloem-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,800"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


class Page:
    """The explorer in the browser: open it, wait for it to settle, read the numbers off the cards."""

    def __init__(self, driver, base: str):
        self.d, self.base = driver, base

    def open(self, query: str = "", width: int = 1280, height: int = 800) -> Page:
        viewport(self.d, width, height)
        self.d.get(self.base + "/" + query)
        self.wait(lambda: self.loads() >= 1 and self.cards())
        return self

    def loads(self) -> int:
        return int(self.d.execute_script("return Number(document.body.dataset.loads || 0)"))

    def wait(self, condition, timeout: float = 15.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        logs = [entry["message"] for entry in self.d.get_log("browser")]
        raise AssertionError(f"timed out waiting {what or condition} at {self.d.current_url}; console: {logs}")

    def after(self, action) -> None:
        """Do `action`, then wait for the tree to be drawn from a new answer."""
        before = self.loads()
        action()
        self.wait(lambda: self.loads() > before, what="the tree to reload")

    def cards(self) -> dict[str, dict]:
        """metric → the numbers its (first) card carries in data attributes."""
        rows = self.d.execute_script("""
            return [...document.querySelectorAll('#tree .card')].map(c => ({
              metric: c.dataset.metric, key: c.dataset.key, value: c.dataset.value, comparison: c.dataset.comparison,
              change: c.dataset.change, contribution: c.dataset.contribution, whatif: c.dataset.whatif ?? null,
              cls: c.getAttribute('class'), expanded: c.getAttribute('aria-expanded')}))""")
        out: dict[str, dict] = {}
        for r in rows:
            out.setdefault(r["metric"], r)
        return out

    def card(self, metric: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, f'#tree .card[data-metric="{metric}"]')

    def params(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs, urlsplit

        return parse_qs(urlsplit(self.d.current_url).query)


@pytest.fixture
def page(browser, live) -> Page:
    return Page(browser, live.url)


@pytest.fixture(scope="session")
def project(live):
    return live.app.state.runtime.project
