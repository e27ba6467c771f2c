"""/docs (Swagger UI) and /graphql (GraphiQL) work with no network but the server itself.

A headless Chromium of its own, cut off from everything but the loopback server: every host name but
`phloem.test` (mapped to 127.0.0.1) fails to resolve, and every request that is not to `phloem.test` goes to a
proxy on a closed port. Each page must render from the assets the installed packages ship, and the browser's
network log must show no request to any other host.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.explorer.conftest import CHROMEDRIVER, CHROMIUM, FLAGS
from tests.server.conftest import free_port

HOST = "phloem.test"  # not loopback by name, so nothing (Swagger's validator badge, say) is skipped for localhost
METRIC_QUERY = "{ query(orderBy: [{field: channel}]) { channel orders revenue } }"


@pytest.fixture(scope="module")
def offline(live):
    """(driver, base URL): a Chromium that reaches only the live server, with its network log on."""
    dead = free_port()  # bound and released: nothing listens there
    profile = tempfile.mkdtemp(prefix="phloem-offline-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,800",
                 f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND",
                 f"--proxy-server=http://127.0.0.1:{dead}", f"--proxy-bypass-list={HOST}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver, f"http://{HOST}:{live.port}"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def network(driver) -> tuple[list[str], dict[str, int]]:
    """URLs the pages asked for since the last call, and the HTTP status each got."""
    urls, status = [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.responseReceived":
            status[message["params"]["response"]["url"]] = message["params"]["response"]["status"]
    return urls, status


def foreign(urls: list[str]) -> list[str]:
    """Requests that would leave the machine (the browser's own chrome:// pages, data: and blob: stay in it)."""
    return [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).hostname != HOST]


def errors(driver) -> list[str]:
    """The console's errors since the last call (a script or stylesheet that failed to load is one)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver, script: str, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    console = [e["message"] for e in driver.get_log("browser")]
    raise AssertionError(f"timed out waiting for {what} at {driver.current_url}; console: {console}")


def test_the_browser_is_really_offline(offline):
    """The guard itself: a CDN is unreachable, a hard-coded address too, and the server is not."""
    driver, base = offline
    driver.set_script_timeout(10)
    network(driver)
    driver.get(base + "/healthz")
    assert '"ok"' in driver.find_element("tag name", "body").text
    outcomes = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const tryFetch = url => fetch(url, {mode: 'no-cors'}).then(() => 'loaded', () => 'blocked');
        Promise.all(['https://unpkg.com/graphiql/graphiql.min.js', 'https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/',
                     'http://1.1.1.1/'].map(tryFetch)).then(done);""")
    assert outcomes == ["blocked", "blocked", "blocked"]
    assert len(foreign(network(driver)[0])) == 3  # and the log sees such attempts


def test_swagger_ui_renders_offline(offline):
    driver, base = offline
    network(driver), errors(driver)
    driver.get(base + "/docs")
    paths = wait(driver, "return [...document.querySelectorAll('.opblock-summary-path')]"
                         ".map(e => e.dataset.path || e.textContent)", "Swagger UI's operation list")
    assert "/api/v1/query" in paths and "/api/v1/sql" in paths
    styled = driver.execute_script("""return [...document.styleSheets].some(s => s.href && s.href.endsWith(
        '/docs/assets/swagger-ui.css') && s.cssRules.length > 100)""")
    assert styled, "Swagger UI's stylesheet did not load"
    time.sleep(0.5)  # let the favicon request land in the log
    urls, status = network(driver)
    assert not foreign(urls), f"requests left the machine: {foreign(urls)}"
    assert {u for u in urls if "/docs/assets/" in u} >= {base + "/docs/assets/swagger-ui-bundle.js",
                                                          base + "/docs/assets/favicon-32x32.png"}
    assert all(status.get(u, 200) < 400 for u in urls), {u: status.get(u) for u in urls}
    assert not errors(driver)


def test_graphiql_renders_and_runs_a_query_offline(offline, live):
    driver, base = offline
    network(driver), errors(driver)
    driver.get(base + "/graphql")
    wait(driver, "return document.querySelector('.graphiql-query-editor .CodeMirror')", "GraphiQL's query editor")
    wait(driver, "return document.querySelector('.graphiql-execute-button')", "GraphiQL's run button")
    driver.execute_script("document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue("
                          "arguments[0])", METRIC_QUERY)
    driver.execute_script("document.querySelector('.graphiql-execute-button').click()")
    text = wait(driver, """const r = document.querySelector('.result-window .CodeMirror');
                           const v = r && r.CodeMirror.getValue(); return v && v.includes('"query"') && v""",
                "the query's result")
    expected = httpx.post(live.url + "/graphql", json={"query": METRIC_QUERY}).json()["data"]
    assert json.loads(text)["data"] == expected and len(expected["query"]) >= 2, text
    urls, status = network(driver)
    assert not foreign(urls), f"requests left the machine: {foreign(urls)}"
    assert base + "/graphql/assets/graphiql.min.js" in urls and base + "/graphql/assets/graphiql.min.css" in urls
    assert all(status.get(u, 200) < 400 for u in urls), {u: status.get(u) for u in urls}
    assert not errors(driver)
