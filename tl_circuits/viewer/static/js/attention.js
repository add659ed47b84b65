// tl_circuits viewer, attention: the heads that carry an edge between positions (stored on the
// link, else /api/heads) and, for a head, its top query-key pairs (the graph's stored "qk"
// entries, else /api/qk). Formats: docs/viewer.md, "Attention".
"use strict";
(function (T) {
  const { $, el } = T;
  const signed = (x) => (x >= 0 ? "+" : "") + Number(x).toFixed(3);
  const nameOf = (G, src) => (G.byId.has(src) ? T.label(G, G.byId.get(src)) + " (" + src + ")" : src);

  T.showHeads = async (l) => {
    const G = T.S.G, panel = $("attention-panel"), box = $("attention-heads");
    panel.hidden = false;
    box.replaceChildren(); $("attention-qk").replaceChildren();
    const a = G.byId.get(l.source), b = G.byId.get(l.target);
    $("attention-title").textContent = T.label(G, a) + " @" + a.ctx_idx + " → " + T.label(G, b) + " @" + b.ctx_idx + "  (" + signed(l.weight) + ")";
    let heads = l.heads, rest = l.heads_rest;
    if (!heads) {
      if (T.OFFLINE) { box.appendChild(el("p", "This graph has no head loadings for this edge.", "muted")); return; }
      try {
        const d = await T.getJSON(T.api("/api/heads", G.id, { source: l.source, target: l.target }));
        heads = d.heads; rest = d.heads_rest;
      } catch (e) { box.appendChild(el("p", "No head loadings: " + e.message, "err")); return; }
    }
    const ul = el("ol", null, "heads");
    for (const h of heads) {
      const li = el("li", null, "link head");
      li.dataset.layer = h.layer; li.dataset.head = h.head;
      li.append(el("span", "L" + h.layer + " H" + h.head + " "), el("span", signed(h.weight), h.weight >= 0 ? "w-pos" : "w-neg"));
      li.addEventListener("click", () => T.showQK(h.layer, h.head, b.ctx_idx, a.ctx_idx));
      ul.appendChild(li);
    }
    box.appendChild(ul);
    if (rest !== undefined && rest !== null) box.appendChild(el("p", "not in a listed head: " + signed(rest), "muted"));
  };

  T.showQK = async (layer, head, query, key) => {
    const G = T.S.G, box = $("attention-qk");
    box.replaceChildren(el("h3", "L" + layer + " H" + head + ": query @" + query + " (" + T.tokenAt(G, query) + ") · key @" + key + " (" + T.tokenAt(G, key) + ")"));
    let q = (G.data.qk || []).find((e) => e.layer === layer && e.head === head && e.query_pos === query && e.key_pos === key);
    if (!q) {
      if (T.OFFLINE) { box.appendChild(el("p", "This graph has no QK terms stored for this head.", "muted")); return; }
      try { q = await T.getJSON(T.api("/api/qk", G.id, { layer, head, query, key })); }
      catch (e) { box.appendChild(el("p", "No QK terms: " + e.message, "err")); return; }
    }
    box.appendChild(el("p", "attention score " + Number(q.score).toFixed(3) + (q.softcapped ? " (softcapped)" : ""), "muted"));
    const table = el("table", null, "qk");
    const hr = el("tr"); hr.append(el("th", "query side"), el("th", "key side"), el("th", "term")); table.appendChild(hr);
    for (const p of q.pairs || []) {
      const tr = el("tr", null, "qk-pair");
      tr.append(el("td", nameOf(G, p.query)), el("td", nameOf(G, p.key)), el("td", signed(p.term), p.term >= 0 ? "w-pos" : "w-neg"));
      table.appendChild(tr);
    }
    for (const [k, v] of Object.entries(q.other || {})) {
      const tr = el("tr", null, "qk-other");
      tr.append(el("td", k), el("td", ""), el("td", signed(v)));
      table.appendChild(tr);
    }
    box.appendChild(table);
  };
})(window.TLC);
