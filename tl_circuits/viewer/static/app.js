// tl_circuits viewer, start-up and wiring: draws the current graph (or two side by side),
// connects the controls, saves annotations and exports. The pieces live in static/js/.
"use strict";
(function (T) {
  const { $, el, S } = T;
  let views = [];

  T.redraw = () => {
    const pane = $("views");
    pane.replaceChildren();
    views = [];
    if (!S.G) return;
    const pair = S.G2 ? [S.G, S.G2] : [S.G];
    pane.classList.toggle("compare", pair.length > 1);
    for (const [i, G] of pair.entries()) {
      const wrap = el("div", null, "view");
      if (pair.length > 1) {
        const head = el("div", null, "view-title");
        head.appendChild(el("span", G.data.metadata.prompt));
        if (i === 1) {
          const x = el("button", "close", "mini"); x.type = "button"; x.id = "compare-close";
          x.addEventListener("click", () => { S.G2 = null; T.redraw(); });
          head.appendChild(x);
        }
        wrap.appendChild(head);
      }
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "graph"); svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", "attribution graph");
      if (i === 0) svg.id = "graph";
      wrap.appendChild(svg);
      pane.appendChild(wrap);
      const V = T.View(svg, G, {
        onSelect: (nid, shift) => { if (i === 0) { if (shift && nid) T.togglePin(G, nid); T.selectNode(nid, true); } },
        onLink: (l) => { if (i === 0 && G.byId.get(l.source).ctx_idx !== G.byId.get(l.target).ctx_idx) T.showHeads(l); },
      });
      if (i === 0) V.selected = S.selected;
      views.push(V);
    }
    views.forEach((V) => V.draw());
    if (views.length > 1) {
      const shared = T.sharedFeatures(S.G, S.G2, views[0].B.visible, views[1].B.visible);
      views.forEach((V) => { V.shared = shared; V.draw(); });
      $("counts").textContent = shared.size + " shared features (outlined) · left: " + views[0].counts + " · right: " + views[1].counts;
    } else $("counts").textContent = views[0].counts;
  };

  T.selectNode = (nid, fromView) => {
    S.selected = nid;
    if (!fromView && views[0]) {
      if (nid && !views[0].B.visible.has(nid)) { T.redraw(); T.showNode(S.G, nid); }
      else views[0].select(nid);
      return;
    }
    T.showNode(S.G, nid);
  };

  T.showGraph = () => {
    const md = S.G.data.metadata;
    $("title").textContent = "tl_circuits · " + md.slug;
    $("prompt").textContent = md.prompt;
    document.title = md.slug + " · tl_circuits viewer";
    if (T.OFFLINE) $("save-btn").textContent = "Download annotations";
    $("node-empty").hidden = false; $("node-details").hidden = true;
    $("attention-panel").hidden = true;
    $("steer-result").replaceChildren(); $("steer-message").textContent = "";
    T.redraw();
    T.renderPinned(S.G);
    T.renderLabels(S.G);
    document.body.dataset.ready = "1";
    document.body.dataset.graph = S.G.id || "";
  };

  // ---- saving and sharing -----------------------------------------------------------------
  function download(name, text, type) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  }
  async function save() {
    const G = S.G, body = JSON.stringify(G.ann);
    if (T.OFFLINE) { download(G.data.metadata.slug + ".annotations.json", body, "application/json"); return; }
    try {
      const r = await fetch(T.api("/api/annotations", G.id), { method: "PUT", headers: { "Content-Type": "application/json" }, body });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
      T.status("Saved to " + data.saved);
    } catch (e) { T.status("Save failed: " + e.message, true); }
  }
  function annotatedGraph() {
    const G = S.G, g = JSON.parse(JSON.stringify(G.data));
    delete g.id;
    for (const n of g.nodes) if (G.ann.labels[n.node_id]) n.clerp = G.ann.labels[n.node_id];
    g.qParams.pinnedIds = G.ann.pinnedIds.slice();
    g.qParams.supernodes = G.ann.supernodes.map((s) => s.slice());
    return g;
  }
  async function exportHTML() {
    const G = S.G;
    if (!T.OFFLINE) {
      await save();
      const a = document.createElement("a"); a.href = T.api("/api/export.html", G.id); a.download = G.data.metadata.slug + ".html";
      document.body.appendChild(a); a.click(); a.remove();
      return;
    }
    const payload = { graph: annotatedGraph(), annotations: G.ann, features: S.features, feature_labels: G.auto };
    T.embedded.textContent = JSON.stringify(payload).replace(/</g, "\\u003c").replace(/>/g, "\\u003e");
    download(G.data.metadata.slug + ".html", "<!doctype html>\n" + document.documentElement.outerHTML, "text/html");
  }

  // ---- wiring -----------------------------------------------------------------------------
  function wire() {
    const nt = $("node-threshold"), et = $("edge-threshold"), me = $("max-edges");
    const sync = () => {
      S.nodeT = Number(nt.value); S.edgeT = Number(et.value);
      S.maxEdges = Math.max(1, Math.min(20000, Number(me.value) || 300));
      $("node-threshold-value").textContent = S.nodeT.toFixed(2);
      $("edge-threshold-value").textContent = S.edgeT.toFixed(2);
      T.redraw();
    };
    nt.addEventListener("input", sync); et.addEventListener("input", sync); me.addEventListener("change", sync);
    $("pin-btn").addEventListener("click", () => {
      if (S.selected) { T.togglePin(S.G, S.selected); T.redraw(); T.showNode(S.G, S.selected); }
    });
    $("label-btn").addEventListener("click", () => {
      if (!S.selected) return;
      const v = $("label-input").value.trim();
      if (v) S.G.ann.labels[S.selected] = v; else delete S.G.ann.labels[S.selected];
      T.renderPinned(S.G); T.renderLabels(S.G); T.redraw(); T.showNode(S.G, S.selected);
    });
    $("group-btn").addEventListener("click", () => {
      const ids = [...document.querySelectorAll("#pinned-list input.pin-check:checked")].map((c) => c.dataset.nodeId);
      const name = $("supernode-label").value.trim();
      if (!ids.length || !name) { T.status("Check pinned nodes and type a label first", true); return; }
      S.G.ann.supernodes.push([name, ...ids]);
      $("supernode-label").value = "";
      T.renderPinned(S.G); T.redraw();
      T.status("Grouped " + ids.length + " nodes as “" + name + "” (not saved yet)");
    });
    $("label-search").addEventListener("input", () => T.renderLabels(S.G));
    $("save-btn").addEventListener("click", save);
    $("export-json-btn").addEventListener("click", () => download(S.G.data.metadata.slug + ".annotated.json", JSON.stringify(annotatedGraph()), "application/json"));
    $("export-html-btn").addEventListener("click", exportHTML);
    $("gallery-btn").addEventListener("click", () => { $("gallery").hidden = !$("gallery").hidden; });
    $("gallery-btn").hidden = T.OFFLINE;
    T.wireSteer();
    let timer = null;
    window.addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(T.redraw, 150); });
    $("node-threshold-value").textContent = S.nodeT.toFixed(2);
    $("edge-threshold-value").textContent = S.edgeT.toFixed(2);
  }

  async function start() {
    wire();
    if (T.OFFLINE) {
      S.G = await T.loadGraph(null);
      S.info = { has_dashboards: Object.keys(S.features).length > 0, can_steer: false };
      T.showGraph();
      return;
    }
    const data = await T.getJSON("/api/graphs");
    S.graphs = data.graphs;
    T.renderGallery();
    const wanted = new URLSearchParams(location.hash.slice(1)).get("graph");
    const readable = data.graphs.filter((g) => !g.error);
    const first = readable.find((g) => g.id === wanted) || readable[0];
    if (first) await T.switchGraph(first.id);
    else T.showEmpty(data.message || "No graph can be shown; the Graphs list says why.");
    setInterval(T.pollGraphs, 2000);
  }
  start().catch((e) => { T.status("Could not load the graph: " + e.message, true); });
})(window.TLC);
