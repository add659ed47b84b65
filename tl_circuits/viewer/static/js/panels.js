// tl_circuits viewer, side panels: the selected node (dashboard, strongest edges), the labels
// list (every labelled node, searchable), pinned nodes and supernodes.
"use strict";
(function (T) {
  const { $, el } = T;

  function linkItem(G, l, otherId) {
    const o = G.byId.get(otherId);
    const li = el("li", null, "link");
    li.appendChild(el("span", T.label(G, o) + " "));
    li.appendChild(el("span", (l.weight >= 0 ? "+" : "") + l.weight.toFixed(3), l.weight >= 0 ? "w-pos" : "w-neg"));
    li.dataset.nodeId = otherId;
    li.addEventListener("click", () => T.selectNode(otherId));
    const a = G.byId.get(l.source), b = G.byId.get(l.target);
    if (a.ctx_idx !== b.ctx_idx || (l.heads && l.heads.length)) {
      const h = el("button", "heads", "mini heads-btn");
      h.type = "button"; h.title = "attention heads carrying this edge";
      h.addEventListener("click", (e) => { e.stopPropagation(); T.showHeads(l); });
      li.appendChild(h);
    }
    return li;
  }

  function renderExamples(box, data) {
    const act = data.act_max || 1;
    for (const q of data.examples_quantiles || []) {
      if (!q.examples.length) continue;
      box.appendChild(el("h3", q.quantile_name));
      for (const ex of q.examples.slice(0, 6)) {
        const div = el("div", null, "example");
        ex.tokens.forEach((t, i) => {
          const a = ex.tokens_acts_list[i] || 0;
          const span = el("span", t);
          if (a > 0) { span.style.backgroundColor = "rgba(255,140,0," + Math.min(1, a / act).toFixed(3) + ")"; span.title = a.toFixed(3); }
          div.appendChild(span);
        });
        box.appendChild(div);
      }
    }
  }

  T.showNode = async (G, nid) => {
    $("node-empty").hidden = !!nid;
    $("node-details").hidden = !nid;
    if (!nid) return;
    const n = G.byId.get(nid);
    $("node-title").textContent = T.label(G, n);
    const bits = [n.feature_type, "layer " + n.layer, "position " + n.ctx_idx + " (" + T.tokenAt(G, n.ctx_idx) + ")", "id " + n.node_id];
    if (n.activation !== null && n.activation !== undefined) bits.push("activation " + n.activation.toFixed(3));
    if (n.influence !== null && n.influence !== undefined) bits.push("influence " + n.influence.toFixed(3));
    $("node-stats").textContent = bits.join(" · ");
    $("label-input").value = G.ann.labels[nid] || "";
    $("pin-btn").textContent = G.ann.pinnedIds.includes(nid) ? "Unpin" : "Pin";
    const ins = $("inputs"), outs = $("outputs");
    ins.replaceChildren(); outs.replaceChildren();
    const strongest = (arr) => (arr || []).slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 10);
    strongest(G.inLinks.get(nid)).forEach((l) => ins.appendChild(linkItem(G, l, l.source)));
    strongest(G.outLinks.get(nid)).forEach((l) => outs.appendChild(linkItem(G, l, l.target)));
    const box = $("dashboard");
    box.replaceChildren();
    const data = await T.featureData(n);
    if (T.S.selected !== nid) return;
    if (!data) {
      if (T.isFeature(n)) box.appendChild(el("p", "No dashboard for this feature.", "muted"));
      return;
    }
    box.appendChild(el("p", "density " + (100 * data.density).toFixed(3) + "% · max activation " + data.act_max.toFixed(3), "muted"));
    for (const [key, name] of [["top_logits", "Promotes"], ["bottom_logits", "Suppresses"]]) {
      box.appendChild(el("h3", name));
      const div = el("div", null, "logits " + (key === "top_logits" ? "top" : "bottom"));
      (data[key] || []).forEach((t, i) => {
        const s = el("span", t);
        s.title = String((data[key + "_values"] || [])[i] ?? "");
        div.appendChild(s);
      });
      box.appendChild(div);
    }
    renderExamples(box, data);
  };

  // every node with a label (user or automatic), most influential first, filtered by the search box
  T.renderLabels = (G) => {
    const q = $("label-search").value.trim().toLowerCase();
    const ul = $("label-list");
    ul.replaceChildren();
    const rows = G.nodes.filter((n) => T.isFeature(n) || n.feature_type === "logit")
      .map((n) => ({ n, text: T.label(G, n), user: !!T.userLabel(G, n) }))
      .filter((r) => !q || r.text.toLowerCase().includes(q) || r.n.node_id.includes(q))
      .sort((a, b) => (b.user - a.user) || (T.isFeature(b.n) - T.isFeature(a.n)) || (a.n.influence ?? 0) - (b.n.influence ?? 0));
    for (const r of rows.slice(0, 300)) {
      const li = el("li", null, "link" + (r.user ? " user" : ""));
      li.dataset.nodeId = r.n.node_id;
      li.appendChild(el("span", r.text));
      li.appendChild(el("span", "  L" + r.n.layer + " @" + r.n.ctx_idx, "muted"));
      li.addEventListener("click", () => T.selectNode(r.n.node_id));
      ul.appendChild(li);
    }
    $("label-count").textContent = "(" + rows.length + ")";
  };

  T.togglePin = (G, nid) => {
    const i = G.ann.pinnedIds.indexOf(nid);
    if (i >= 0) G.ann.pinnedIds.splice(i, 1); else G.ann.pinnedIds.push(nid);
    T.renderPinned(G);
  };

  T.renderPinned = (G) => {
    const ul = $("pinned-list");
    ul.replaceChildren();
    for (const nid of G.ann.pinnedIds) {
      const li = el("li");
      const cb = el("input"); cb.type = "checkbox"; cb.dataset.nodeId = nid; cb.className = "pin-check";
      const name = el("span", " " + T.label(G, G.byId.get(nid)) + " ", "link");
      name.addEventListener("click", () => T.selectNode(nid));
      const x = el("button", "×"); x.type = "button"; x.title = "unpin";
      x.addEventListener("click", () => { T.togglePin(G, nid); T.redraw(); });
      li.append(cb, name, x);
      ul.appendChild(li);
    }
    const sl = $("supernode-list");
    sl.replaceChildren();
    G.ann.supernodes.forEach((s, i) => {
      const li = el("li");
      li.dataset.label = s[0];
      li.appendChild(el("strong", s[0]));
      li.appendChild(el("span", " — " + s.slice(1).map((m) => (G.byId.has(m) ? T.label(G, G.byId.get(m)) : m)).join(", ") + " "));
      const x = el("button", "×"); x.type = "button"; x.title = "remove supernode";
      x.addEventListener("click", () => { G.ann.supernodes.splice(i, 1); T.renderPinned(G); T.redraw(); });
      li.appendChild(x);
      sl.appendChild(li);
    });
    T.renderSteer(G);
  };
})(window.TLC);
