"""End to end in headless Chromium: dashboard on click, pins, supernodes, save and reload, export.

Needs Debian's ``chromium`` and ``chromium-driver`` (tests/viewer/install_browser.sh) and the
``selenium`` package; skipped, with the reason in the summary, when they are missing
(tests/viewer/browser.py).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("selenium", reason="BROWSER TESTS SKIPPED: pip install selenium (extra 'viewer')")
from selenium.webdriver.common.by import By  # noqa: E402

from tl_circuits.viewer.server import create_app, sidecar_path  # noqa: E402

from .browser import click_node, feature_ids, open_page, wait_for  # noqa: E402
from .conftest import EVIL, serve_in_thread  # noqa: E402


def test_click_pin_group_save_reload(browser, graph_file, dashboards, tmp_path):
    graph_path = tmp_path / graph_file.name
    graph_path.write_bytes(graph_file.read_bytes())
    with serve_in_thread(create_app(graph_path, dashboards=dashboards)) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        ids = feature_ids(browser)
        assert len(ids) >= 5
        shot = browser.get_screenshot_as_png()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000

        # live thresholds: a lower node threshold shows fewer features
        browser.execute_script(
            "const s = document.getElementById('node-threshold'); s.value = '0.3';"
            "s.dispatchEvent(new Event('input'))")
        assert len(feature_ids(browser)) < len(ids)
        browser.execute_script(
            "const s = document.getElementById('node-threshold'); s.value = '0.8';"
            "s.dispatchEvent(new Event('input'))")

        # click a node: its dashboard, with highlighted top-activation tokens, and its edges
        click_node(browser, ids[0])
        layer, index, _ = ids[0].split("_")
        expected = dashboards.feature(int(layer), int(index))
        wait_for(browser, "return document.querySelectorAll('#dashboard .example').length > 0")
        first = browser.execute_script(
            "return [...document.querySelector('#dashboard .example').children].map(s => s.textContent)")
        assert first == expected["examples_quantiles"][0]["examples"][0]["tokens"]
        promoted = browser.execute_script(
            "return [...document.querySelectorAll('#dashboard .logits.top span')].map(s => s.textContent)")
        assert promoted == expected["top_logits"]
        assert browser.execute_script("return document.querySelectorAll('#inputs li').length") > 0
        browser.find_element(By.ID, "pin-btn").click()
        browser.find_element(By.ID, "label-input").send_keys("first feature")
        browser.find_element(By.ID, "label-btn").click()

        click_node(browser, ids[1])
        browser.find_element(By.ID, "pin-btn").click()
        checks = browser.find_elements(By.CSS_SELECTOR, "#pinned-list input.pin-check")
        assert [c.get_attribute("data-node-id") for c in checks] == ids[:2]
        for c in checks:
            c.click()
        browser.find_element(By.ID, "supernode-label").send_keys("capital cities")
        browser.find_element(By.ID, "group-btn").click()
        browser.find_element(By.ID, "save-btn").click()
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('Saved')")
        saved = json.loads(sidecar_path(graph_path).read_text())
        assert saved["supernodes"] == [["capital cities", *ids[:2]]]
        assert saved["pinnedIds"] == ids[:2] and saved["labels"] == {ids[0]: "first feature"}

        browser.refresh()
        wait_for(browser, "return document.body.dataset.ready === '1'")
        wait_for(browser, "return document.querySelector('#supernode-list li') !== null")
        assert browser.execute_script(
            "return document.querySelector('#supernode-list li').dataset.label") == "capital cities"
        assert browser.execute_script(
            "return document.querySelector('g.supernode text').textContent") == "capital cities"
        assert browser.execute_script(
            f"return document.querySelector('g.node[data-node-id=\"{ids[0]}\"] text').textContent"
        ) == "first feature"

        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/export.html", timeout=30).read()
    # the server is gone: the exported file opens on its own
    page = tmp_path / "shared.html"
    page.write_bytes(html)
    open_page(browser, page.as_uri())
    assert browser.execute_script(
        "return document.querySelector('#supernode-list li').dataset.label") == "capital cities"
    click_node(browser, ids[0])
    wait_for(browser, "return document.querySelectorAll('#dashboard .example').length > 0")
    assert browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.startsWith('http')).length") == 0


def test_evil_token_renders_as_text(browser, evil_graph_file, tmp_path):
    app = create_app(evil_graph_file, annotations_path=tmp_path / "a.json")
    with serve_in_thread(app) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        tokens = browser.execute_script(  # the full token in the tooltip, the start of it on the axis
            "return [...document.querySelectorAll('svg text.token')].map(t => [t.firstChild.textContent,"
            " t.querySelector('title').textContent])")
        assert tokens[1][1] == "1: " + EVIL and EVIL.startswith(tokens[1][0].rstrip("…"))
        assert EVIL in browser.find_element(By.ID, "prompt").text
        click_node(browser, browser.execute_script(
            "return document.querySelectorAll('g.node.token')[1].dataset.nodeId"))
        assert browser.find_element(By.ID, "node-title").text == EVIL
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
