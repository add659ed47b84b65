"""The graph reads at a glance, in headless Chromium at 1600 x 1000: it fits the canvas (6 and
60 tokens), labels are at least 11 px, hovering a node highlights exactly its edges, clicking a
token or an output highlights exactly its paths, features carry automatic labels from their
dashboards, the labels list searches, and a link between positions shows its heads and QK pairs.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("selenium", reason="BROWSER TESTS SKIPPED: pip install selenium (extra 'viewer')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from tl_circuits.viewer.annotations import feature_summary  # noqa: E402
from tl_circuits.viewer.server import create_app  # noqa: E402

from .browser import click_node, feature_ids, open_page, shown_links, wait_for  # noqa: E402
from .conftest import serve_in_thread  # noqa: E402
from .synthetic import graph_json  # noqa: E402

# the graph's box against the canvas, and every label's rendered size in CSS pixels
GEOMETRY = """
const svg = document.querySelector('#graph'), s = svg.getBoundingClientRect();
const nodes = [...svg.querySelectorAll('g.node')].map(g => g.getBoundingClientRect());
const box = {x0: Math.min(...nodes.map(r => r.left)), x1: Math.max(...nodes.map(r => r.right)),
             y0: Math.min(...nodes.map(r => r.top)), y1: Math.max(...nodes.map(r => r.bottom))};
const size = t => { const m = t.getScreenCTM(); return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b); };
const labels = [...svg.querySelectorAll('text.token, text.axis, text.out-label, text.feat-label')];
const inside = nodes.every(r => r.left >= s.left - 1 && r.right <= s.right + 1 && r.top >= s.top - 1 && r.bottom <= s.bottom + 1);
return {w: (box.x1 - box.x0) / s.width, h: (box.y1 - box.y0) / s.height, inside,
        minFont: Math.min(...labels.map(size)), kinds: [...new Set(labels.map(t => t.getAttribute('class')))],
        n: nodes.length, canvas: [s.width, s.height]};
"""


@pytest.fixture()
def synthetic_file(tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps(graph_json(60, 30, 150, attention=True)))
    return path


def test_fits_the_canvas_with_readable_labels(browser, graph_file, synthetic_file, tmp_path):
    for source in (graph_file, synthetic_file):  # 7 tokens (BOS + 6 words), 3 layers; 60 tokens, 30 layers
        with serve_in_thread(create_app(source, annotations_path=tmp_path / "a.json")) as port:
            open_page(browser, f"http://127.0.0.1:{port}/")
            g = browser.execute_script(GEOMETRY)
            assert g["canvas"][0] > 1000 and g["canvas"][1] > 800, g
            assert g["w"] >= 0.85 and g["h"] >= 0.7 and g["inside"], g
            assert g["minFont"] >= 11, g
            assert {"token", "axis", "out-label"} <= set(g["kinds"]), g
            n_tokens = browser.execute_script("return document.querySelectorAll('#graph text.token').length")
            assert n_tokens == len(browser.execute_script("return TLC.S.G.tokens"))
            counts = browser.find_element(By.ID, "counts").text
            assert int(counts.split(" edges shown")[0].split(", ")[1]) <= 300, counts


def test_hover_and_paths(browser, graph_file, tmp_path):
    with serve_in_thread(create_app(graph_file, annotations_path=tmp_path / "a.json")) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        links = shown_links(browser)
        degree = {}
        for s, t, *_ in links:
            degree[s] = degree.get(s, 0) + 1
            degree[t] = degree.get(t, 0) + 1
        fid = max(feature_ids(browser), key=lambda i: degree.get(i, 0))
        node = browser.find_element(By.CSS_SELECTOR, f'#graph g.node[data-node-id="{fid}"]')
        ActionChains(browser).move_to_element(node).perform()
        wait_for(browser, "return document.querySelector('#graph').classList.contains('hovering')")
        links = shown_links(browser)
        assert {(s, t) for s, t, hl, _ in links if hl} == {(s, t) for s, t, *_ in links if fid in (s, t)}
        assert any(not hl for *_, hl, _ in links)
        opacity = browser.execute_script(
            "return [...document.querySelectorAll('#graph path.link:not(.hl)')].map(p => +getComputedStyle(p).opacity)")
        assert max(opacity) < 0.1
        ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, ".legend")).perform()
        wait_for(browser, "return !document.querySelector('#graph').classList.contains('hovering')")

        # a token's paths go downstream, an output's upstream: exactly the reachable edges
        def reach(start, forward):
            seen, stack, edges = {start}, [start], set()
            while stack:
                cur = stack.pop()
                for s, t, *_ in links:
                    if (s if forward else t) == cur:
                        edges.add((s, t))
                        nxt = t if forward else s
                        if nxt not in seen:
                            seen.add(nxt)
                            stack.append(nxt)
            return edges

        for kind, forward in (("token", True), ("logit", False)):
            nid = browser.execute_script(
                f"return [...document.querySelectorAll('#graph g.node.{kind}')].map(g => g.dataset.nodeId)"
                ".find(i => [...document.querySelectorAll('#graph path.link')].some(p => p.dataset.source === i"
                " || p.dataset.target === i))")
            click_node(browser, nid)
            wait_for(browser, "return document.querySelector('#graph').classList.contains('focus')")
            on = {(s, t) for s, t, _, o in shown_links(browser) if o}
            assert on == reach(nid, forward) and on, kind
            assert browser.find_element(By.ID, "node-stats").text.find(nid) > 0
        browser.execute_script("document.querySelector('#graph').dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        wait_for(browser, "return !document.querySelector('#graph').classList.contains('focus')")


def test_automatic_labels_and_search(browser, graph_file, dashboards, tmp_path):
    with serve_in_thread(create_app(graph_file, dashboards=dashboards, annotations_path=tmp_path / "a.json")) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        n_layers = browser.execute_script("return TLC.S.G.nLayers")
        shown = browser.execute_script(
            "return [...document.querySelectorAll('#graph g.node.feature')].map(g => [g.dataset.nodeId,"
            " g.querySelector('text.feat-label') ? g.querySelector('text.feat-label').textContent : null])")
        listed = dict(browser.execute_script(
            "return [...document.querySelectorAll('#label-list li')].map(li => [li.dataset.nodeId,"
            " li.firstChild.textContent])"))
        drawn = [(i, t) for i, t in shown if t]
        assert drawn, "some feature has room for its label"
        for nid in [i for i, _ in shown]:
            layer, index, _ = (int(x) for x in nid.split("_"))
            s = feature_summary(dashboards.feature(layer, index))
            promoted = (layer >= n_layers / 2 and s["promoted"]) or not s["activating"]
            words = s["promoted"][:2] if promoted else s["activating"][:2]
            expected = ("→ " if promoted else "on ") + ", ".join(w.strip() or json.dumps(w) for w in words)
            assert listed[nid] == expected, (nid, listed[nid], expected)
        for nid, text in drawn:
            assert text == listed[nid] or (text.endswith("…") and listed[nid].startswith(text[:-1])), (nid, text)
        labelled = [(i, listed[i]) for i, _ in shown]
        # the labels list: every feature and output, filtered by the search box
        total = browser.execute_script("return document.querySelectorAll('#label-list li').length")
        assert total >= len(shown)
        word = labelled[0][1].split(" ", 1)[1].split(",")[0]
        box = browser.find_element(By.ID, "label-search")
        box.send_keys(word)
        items = browser.execute_script("return [...document.querySelectorAll('#label-list li')].map(li => li.textContent)")
        assert 0 < len(items) < total and all(word.lower() in t.lower() for t in items)
        browser.find_element(By.CSS_SELECTOR, "#label-list li").click()
        wait_for(browser, "return document.querySelector('#graph g.node.selected') !== null")


def test_attention_panel_from_stored_heads_and_qk(browser, synthetic_file, tmp_path):
    data = json.loads(synthetic_file.read_text())
    link = next(lk for lk in data["links"] if "heads" in lk)
    entry = data["qk"][0]
    with serve_in_thread(create_app(synthetic_file, annotations_path=tmp_path / "a.json")) as port:
        open_page(browser, f"http://127.0.0.1:{port}/")
        browser.execute_script("TLC.selectNode(arguments[0])", link["target"])
        wait_for(browser, "return document.querySelectorAll('#inputs li').length > 0")
        button = browser.find_element(
            By.XPATH, f"//ol[@id='inputs']/li[@data-node-id='{link['source']}']/button[contains(@class, 'heads-btn')]")
        button.click()
        wait_for(browser, "return document.querySelectorAll('#attention-heads li.head').length === 2")
        heads = browser.execute_script(
            "return [...document.querySelectorAll('#attention-heads li.head')].map(li => li.textContent)")
        assert heads[0].startswith("L1 H3") and heads[1].startswith("L0 H2")
        assert f"{link['heads_rest']:+.3f}" in browser.find_element(By.ID, "attention-heads").text
        browser.find_element(By.CSS_SELECTOR, "#attention-heads li.head").click()
        wait_for(browser, "return document.querySelectorAll('#attention-qk tr.qk-pair').length === 2")
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#attention-qk tr')].map(tr => [...tr.cells].map(c => c.textContent))")
        assert rows[1][0].endswith(f"({entry['pairs'][0]['query']})") and rows[1][2] == "+1.500"
        assert rows[2][0] == "bias" and [r[0] for r in rows[3:]] == ["position", "norm"]
        # a head with no stored QK terms and no model: the page says what to do
        browser.execute_script("TLC.showQK(5, 0, 3, 1)")
        wait_for(browser, "return document.querySelector('#attention-qk .err') !== null")
