// tl_circuits viewer, gallery: the graphs the server holds (prompt, top output, scores, date),
// switching between them without a restart, new graphs picked up while serving, and the
// side-by-side comparison of two graphs with their shared features highlighted.
"use strict";
(function (T) {
  const { $, el } = T;
  const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));

  T.renderGallery = () => {
    const list = T.S.graphs, tb = $("gallery-rows");
    tb.replaceChildren();
    $("gallery-btn").textContent = "Graphs (" + list.length + ")";
    for (const g of list) {
      const tr = el("tr", null, g.error ? "bad" : (T.S.G && g.id === T.S.G.id ? "current" : ""));
      tr.dataset.graphId = g.id;
      if (g.error) {
        tr.append(el("td", g.name), el("td", g.error, "err"), el("td"), el("td"), el("td", g.date ? g.date.replace("T", " ") : ""), el("td"));
      } else {
        const s = g.scores || {};
        tr.append(el("td", g.name), el("td", g.prompt, "prompt-cell"),
          el("td", (g.top_output ?? "–") + (g.top_prob !== null && g.top_prob !== undefined ? " (" + (100 * g.top_prob).toFixed(0) + "%)" : "")),
          el("td", fmt(s.replacement) + " / " + fmt(s.completeness)), el("td", g.date ? g.date.replace("T", " ") : ""));
        const td = el("td");
        const cmp = el("button", "compare", "mini compare-btn"); cmp.type = "button";
        cmp.disabled = !T.S.G || g.id === T.S.G.id;
        cmp.addEventListener("click", (e) => { e.stopPropagation(); T.compareWith(g.id); });
        td.appendChild(cmp);
        tr.appendChild(td);
        tr.addEventListener("click", () => T.switchGraph(g.id));
      }
      tb.appendChild(tr);
    }
  };

  T.pollGraphs = async () => {
    try {
      const data = await T.getJSON("/api/graphs");
      const before = JSON.stringify(T.S.graphs);
      T.S.graphs = data.graphs;
      if (JSON.stringify(T.S.graphs) !== before) T.renderGallery();
      const readable = data.graphs.filter((g) => !g.error);
      if (!T.S.G) {
        if (readable.length) await T.switchGraph(readable[0].id);
        else T.showEmpty(data.message || "No graph can be shown; the Graphs list says why.");
      }
    } catch (e) { /* the server may be restarting; try again at the next poll */ }
  };

  T.showEmpty = (message) => {
    $("empty").hidden = false;
    $("empty").textContent = message;
    document.body.dataset.ready = "1";
  };

  T.switchGraph = async (gid) => {
    try {
      T.status("Loading " + gid + " …");
      const G = await T.loadGraph(gid);
      T.S.info = await T.getJSON(T.api("/api/info", gid));
      T.S.G = G; T.S.G2 = null; T.S.selected = null;
      $("empty").hidden = true;
      history.replaceState(null, "", "#graph=" + encodeURIComponent(gid));
      T.showGraph();
      T.renderGallery();
      T.status("");
    } catch (e) { T.status("Could not open " + gid + ": " + e.message, true); }
  };

  // ---- comparison --------------------------------------------------------------------------
  T.compareWith = async (gid) => {
    try {
      T.S.G2 = await T.loadGraph(gid);
      $("gallery").hidden = true;
      T.redraw();
    } catch (e) { T.status("Could not open " + gid + ": " + e.message, true); }
  };
  T.sharedFeatures = (G1, G2, v1, v2) => {
    const keys = (G, vis) => new Set(G.nodes.filter((n) => T.isFeature(n) && vis.has(n.node_id)).map(T.featureKey));
    const a = keys(G1, v1), b = keys(G2, v2);
    return new Set([...a].filter((k) => b.has(k)));
  };
})(window.TLC);
