"""The gallery, steering and comparison in headless Chromium: a folder of three graphs (and a
corrupt file) is listed and switched without a restart, a graph written while serving appears,
an empty folder says so; steering shows the top output `intervene` gives; two graphs side by
side outline exactly their shared features."""

from __future__ import annotations

import pytest

pytest.importorskip("selenium", reason="BROWSER TESTS SKIPPED: pip install selenium (extra 'viewer')")
import torch  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

import tl_circuits  # noqa: E402
from tl_circuits.viewer.server import create_app  # noqa: E402

from .browser import click_node, feature_ids, open_page, wait_for  # noqa: E402
from .conftest import OTHER_PROMPTS, PROMPT, serve_in_thread, write_gallery  # noqa: E402


@pytest.fixture()
def folder(graph, other_graphs, tmp_path):
    return write_gallery(tmp_path, (graph, *other_graphs), third="c.safetensors")


def rows(browser):
    return browser.execute_script(
        "return [...document.querySelectorAll('#gallery-rows tr')].map(tr => [tr.dataset.graphId, tr.className,"
        " [...tr.cells].map(c => c.textContent)])")


def test_gallery_switch_and_new_graph(browser, folder, graph):
    with serve_in_thread(create_app(folder)) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        assert browser.find_element(By.ID, "prompt").text == PROMPT
        browser.find_element(By.ID, "gallery-btn").click()
        listed = rows(browser)
        assert [r[0] for r in listed] == ["a.safetensors", "b.safetensors", "broken.safetensors", "c.safetensors"]
        bad = listed[2]
        assert bad[1] == "bad" and "unreadable" in bad[2][1]
        assert listed[0][1] == "current" and listed[1][2][1] == OTHER_PROMPTS[0]
        assert listed[0][2][2].startswith(graph.targets[0].label)
        browser.find_element(By.CSS_SELECTOR, '#gallery-rows tr[data-graph-id="c.safetensors"]').click()
        wait_for(browser, "return document.body.dataset.graph === 'c.safetensors'")
        assert browser.find_element(By.ID, "prompt").text == OTHER_PROMPTS[1]
        assert "graph=c.safetensors" in browser.current_url
        assert len(feature_ids(browser)) > 0
        graph.save(folder / "d.safetensors")  # written while serving: appears at the next poll
        wait_for(browser, "return !!document.querySelector('#gallery-rows tr[data-graph-id=\"d.safetensors\"]')", 10)
        assert browser.find_element(By.ID, "gallery-btn").text == "Graphs (5)"


def test_empty_folder_message_then_graph(browser, graph, tmp_path):
    with serve_in_thread(create_app(tmp_path)) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        message = browser.find_element(By.ID, "empty").text
        assert f"No graphs in {tmp_path}" in message
        graph.save(tmp_path / "first.safetensors")
        wait_for(browser, "return document.body.dataset.graph === 'first.safetensors'", 10)
        assert not browser.find_element(By.ID, "empty").is_displayed()


def test_compare_two_graphs(browser, folder):
    with serve_in_thread(create_app(folder)) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        browser.find_element(By.ID, "gallery-btn").click()
        browser.find_element(By.CSS_SELECTOR, '#gallery-rows tr[data-graph-id="b.safetensors"] .compare-btn').click()
        wait_for(browser, "return document.querySelectorAll('#views svg.graph').length === 2")
        keys = browser.execute_script("""
            return [...document.querySelectorAll('#views svg.graph')].map(svg =>
              [...svg.querySelectorAll('g.node.feature')].map(g => {
                const [l, f] = g.dataset.nodeId.split('_'); return [l + '_' + f, g.classList.contains('shared')]; }))""")
        left, right = ({k for k, _ in side} for side in keys)
        shared = left & right
        assert shared, "related prompts share features"
        for side in keys:
            assert {k for k, s in side if s} == shared
            assert all(s == (k in shared) for k, s in side)
        assert browser.find_element(By.ID, "counts").text.startswith(f"{len(shared)} shared features")
        browser.find_element(By.ID, "compare-close").click()
        wait_for(browser, "return document.querySelectorAll('#views svg.graph').length === 1")


def test_steering_round_trip(browser, graph_file, graph, model, transcoders, tmp_path):
    app = create_app(graph_file, model=model, transcoders=transcoders, annotations_path=tmp_path / "a.json")
    with serve_in_thread(app) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        assert browser.find_element(By.ID, "steer-panel").is_displayed()
        fid = feature_ids(browser)[0]
        click_node(browser, fid)
        browser.find_element(By.ID, "pin-btn").click()
        scope = browser.find_element(By.ID, "steer-scope").text
        layer, index, pos = (int(x) for x in fid.split("_"))
        assert scope.startswith(f"1 feature intervention on 1 of {len(graph.tokens)} prompt tokens") and f"({pos})" in scope
        value = browser.find_element(By.CSS_SELECTOR, "#steer-inputs .steer-value")
        value.clear()
        value.send_keys("abc")
        browser.find_element(By.ID, "steer-btn").click()
        assert "is not a number" in browser.find_element(By.ID, "steer-message").text
        value.clear()
        value.send_keys("25")
        browser.find_element(By.ID, "steer-btn").click()
        wait_for(browser, "return document.getElementById('steer-result').dataset.done === '1'")
        shown = browser.execute_script(
            "return [...document.querySelectorAll('#steer-result .steer-top')].map(ol =>"
            " [...ol.querySelectorAll('li')].map(li => +li.dataset.tokenId))")
        tokens = torch.tensor(graph.tokens)
        new = tl_circuits.intervene(model, transcoders, tokens, [(layer, pos, index, 25.0)]).logits[-1]
        assert shown[1][0] == int(new.argmax()) and shown[1] == new.topk(5).indices.tolist()
        assert shown[0] == model(tokens[None])[0, -1].topk(5).indices.tolist()
        texts = browser.execute_script(
            "return [...document.querySelectorAll('#steer-result .completion')].map(d => d.textContent)")
        ids = tl_circuits.generate(model, transcoders, tokens, 8, interventions=[(layer, pos, index, 25.0)])
        assert texts[1] == "".join(model.to_str_tokens(torch.tensor(ids[len(tokens):])))
        assert "at 1 of" in browser.find_element(By.ID, "steer-message").text
        # a supernode of two features: one row, both features scaled, two intervention positions or one
        other = next(i for i in feature_ids(browser) if i != fid)
        click_node(browser, other)
        browser.find_element(By.ID, "pin-btn").click()
        for check in browser.find_elements(By.CSS_SELECTOR, "#pinned-list input.pin-check"):
            check.click()
        browser.find_element(By.ID, "supernode-label").send_keys("pair")
        browser.find_element(By.ID, "group-btn").click()
        row = browser.find_element(By.CSS_SELECTOR, '#steer-inputs .steer-row[data-key="supernode:pair"]')
        assert "(2 features)" in row.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#steer-inputs .steer-row"):
            if r.get_attribute("data-key") != "supernode:pair":
                r.find_element(By.CSS_SELECTOR, ".steer-use").click()
        row.find_element(By.CSS_SELECTOR, ".steer-mode option[value='scale']").click()
        row.find_element(By.CSS_SELECTOR, ".steer-value").send_keys("3")  # scale by 03 = 3
        browser.find_element(By.ID, "steer-btn").click()
        wait_for(browser, "return document.getElementById('steer-result').dataset.done === '2'")
        edits = [(int(a), int(c), int(b), 3.0, "scale") for a, b, c in (x.split("_") for x in (fid, other))]
        new = tl_circuits.intervene(model, transcoders, tokens, edits).logits[-1]
        steered = browser.execute_script(
            "return [...document.querySelectorAll('#steer-result .steer-top')[1].querySelectorAll('li')]"
            ".map(li => +li.dataset.tokenId)")
        assert steered == new.topk(5).indices.tolist()
        assert browser.find_element(By.ID, "steer-message").text.startswith("Applied 2 interventions")
