"""Helpers of the browser tests: one headless Chromium (1600 x 1000) per session, waits, clicks.

Needs Debian's ``chromium`` and ``chromium-driver`` (tests/viewer/install_browser.sh) and the
``selenium`` package; the tests that use :func:`make_browser` are skipped, with the reason in the
summary, when they are missing.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1600, 1000


def make_browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("BROWSER TESTS SKIPPED: chromium/chromedriver not found; run tests/viewer/install_browser.sh")
    pytest.importorskip("selenium", reason="BROWSER TESTS SKIPPED: pip install selenium (extra 'viewer')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    driver.set_page_load_timeout(30)
    return driver


def wait_for(browser, script, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}; status: {status(browser)!r}")


def status(browser):
    return browser.execute_script("return document.getElementById('status').textContent")


def open_page(browser, url):
    browser.get(url)
    wait_for(browser, "return document.body.dataset.ready === '1'")


def feature_ids(browser, svg="#graph"):
    return browser.execute_script(
        f"return [...document.querySelectorAll('{svg} g.node.feature')].map(g => g.dataset.nodeId)")


def click_node(browser, node_id, svg="#graph"):
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'{svg} g.node[data-node-id="{node_id}"] .shape').click()


def shown_links(browser, svg="#graph"):
    return browser.execute_script(
        f"return [...document.querySelectorAll('{svg} path.link')].map(p => [p.dataset.source, p.dataset.target,"
        " p.classList.contains('hl'), p.classList.contains('on')])")
