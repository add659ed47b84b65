// tl_circuits viewer: draws an attribution graph (layers up, token positions across), shows
// feature dashboards, and keeps labels, pinned nodes and supernodes as annotations.
// Every string from the graph (tokens, labels) is written with textContent (d3 .text()), never
// as HTML. Served by tl_circuits.viewer.server, or inlined into one standalone HTML file.
"use strict";
(function () {
  const embedded = document.getElementById("tlc-data");
  const OFFLINE = embedded !== null;
  const S = {
    graph: null, nodes: [], byId: new Map(), links: [], inLinks: new Map(), outLinks: new Map(),
    ann: { version: 1, labels: {}, pinnedIds: [], supernodes: [] },
    features: {}, info: {}, selected: null, nodeT: 0.8, edgeT: 0.9, visible: new Set(),
  };
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };

  function status(msg, isError) {
    const s = $("status");
    s.textContent = msg;
    s.className = isError ? "err" : "";
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // ---- data -------------------------------------------------------------------------------
  async function load() {
    let ann;
    if (OFFLINE) {
      const p = JSON.parse(embedded.textContent);
      S.graph = p.graph; S.features = p.features || {}; ann = p.annotations;
      S.info = { has_dashboards: Object.keys(S.features).length > 0, can_intervene: false };
    } else {
      [S.graph, ann, S.info] = await Promise.all([getJSON("/api/graph"), getJSON("/api/annotations"),
        getJSON("/api/info")]);
    }
    S.ann = Object.assign({ version: 1, labels: {}, pinnedIds: [], supernodes: [] }, ann || {});
    S.nodes = S.graph.nodes;
    S.nodes.forEach((n) => S.byId.set(n.node_id, n));
    S.links = S.graph.links.filter((l) => S.byId.has(l.source) && S.byId.has(l.target));
    for (const l of S.links) {
      if (!S.inLinks.has(l.target)) S.inLinks.set(l.target, []);
      if (!S.outLinks.has(l.source)) S.outLinks.set(l.source, []);
      S.inLinks.get(l.target).push(l); S.outLinks.get(l.source).push(l);
    }
    S.ann.pinnedIds = S.ann.pinnedIds.filter((id) => S.byId.has(id));
    const md = S.graph.metadata;
    $("title").textContent = "tl_circuits · " + md.slug;
    $("prompt").textContent = md.prompt;
    document.title = md.slug + " · tl_circuits viewer";
    if (OFFLINE) $("save-btn").textContent = "Download annotations";
  }

  async function featureData(n) {
    if (n.feature_type !== "cross layer transcoder" || n.feature_index === undefined) return null;
    const key = n.layer + "_" + n.feature_index;
    if (key in S.features) return S.features[key];
    if (OFFLINE || !S.info.has_dashboards) return null;
    try { S.features[key] = await getJSON("/api/feature/" + n.layer + "/" + n.feature_index); }
    catch (e) { S.features[key] = null; }
    return S.features[key];
  }

  // ---- labels -----------------------------------------------------------------------------
  const tokenAt = (i) => (S.graph.metadata.prompt_tokens[i] ?? "");
  function label(n) {
    const custom = S.ann.labels[n.node_id];
    if (custom) return custom;
    if (n.feature_type === "embedding") return tokenAt(n.ctx_idx);
    if (n.clerp) return n.clerp;
    if (n.feature_type === "cross layer transcoder") return "L" + n.layer + "/" + n.feature_index;
    if (n.feature_type === "mlp reconstruction error") return "error L" + n.layer;
    return n.node_id;
  }
  const kindClass = { "cross layer transcoder": "feature", "mlp reconstruction error": "error",
    embedding: "token", logit: "logit" };

  // ---- visibility (client-side thresholds) -------------------------------------------------
  function computeVisible() {
    const pinned = new Set(S.ann.pinnedIds);
    S.visible = new Set(S.nodes.filter((n) => n.feature_type === "embedding" || n.feature_type === "logit"
      || pinned.has(n.node_id) || (n.influence ?? 0) <= S.nodeT).map((n) => n.node_id));
    const cand = S.links.filter((l) => S.visible.has(l.source) && S.visible.has(l.target))
      .sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    const total = cand.reduce((s, l) => s + Math.abs(l.weight), 0) || 1;
    let acc = 0;
    S.shownLinks = [];
    for (const l of cand) {
      if (acc / total >= S.edgeT) break;
      acc += Math.abs(l.weight);
      S.shownLinks.push(l);
    }
  }

  // ---- layout: layer up, position across ---------------------------------------------------
  function layout() {
    const nLayers = Number(S.graph.metadata.n_layers ?? Math.max(...S.nodes.filter(
      (n) => n.layer !== "E").map((n) => Number(n.layer))) - 1);
    const rank = (n) => (n.layer === "E" ? 0 : n.feature_type === "logit" ? nLayers + 1 : Number(n.layer) + 1);
    const cells = new Map();
    for (const n of S.nodes) {
      if (!S.visible.has(n.node_id)) continue;
      const k = rank(n) + ":" + n.ctx_idx;
      if (!cells.has(k)) cells.set(k, []);
      cells.get(k).push(n);
    }
    const nPos = S.graph.metadata.prompt_tokens.length;
    const widest = new Array(nPos).fill(1);
    for (const [k, arr] of cells) {
      const p = Number(k.split(":")[1]);
      widest[p] = Math.max(widest[p], arr.length);
    }
    const colW = widest.map((c) => Math.max(90, Math.min(c, 40) * 22));
    const colX = [0];
    colW.forEach((w, i) => colX.push(colX[i] + w));
    const rowH = 80, top = 60, nRows = nLayers + 1;
    const pos = new Map();
    for (const [k, arr] of cells) {
      const [r, p] = k.split(":").map(Number);
      arr.sort((a, b) => (a.influence ?? 0) - (b.influence ?? 0));
      arr.forEach((n, i) => pos.set(n.node_id, {
        x: colX[p] + ((i + 1) * colW[p]) / (arr.length + 1), y: top + (nRows - r) * rowH,
      }));
    }
    return { pos, colX, colW, rowH, top, nRows, width: colX[nPos], height: top + (nRows + 1) * rowH, nLayers };
  }

  // ---- drawing ----------------------------------------------------------------------------
  let root = null, zoom = null;
  function draw() {
    computeVisible();
    const L = layout();
    const svg = d3.select("#graph");
    if (!root) {
      svg.selectAll("*").remove();
      root = svg.append("g").attr("class", "root");
      zoom = d3.zoom().scaleExtent([0.1, 8]).on("zoom", (e) => root.attr("transform", e.transform));
      svg.call(zoom);
      const box = svg.node().getBoundingClientRect();
      const k = Math.min(1, box.width / (L.width + 60), box.height / (L.height + 20));
      svg.call(zoom.transform, d3.zoomIdentity.translate(50, 0).scale(k));
    }
    root.selectAll("*").remove();
    const rows = root.append("g");
    for (let r = 0; r <= L.nRows; r++) {
      const y = L.top + (L.nRows - r) * L.rowH;
      rows.append("line").attr("class", "row-line").attr("x1", 0).attr("x2", L.width).attr("y1", y).attr("y2", y);
      const name = r === 0 ? "tokens" : r === L.nRows ? "outputs" : "L" + (r - 1);
      rows.append("text").attr("class", "axis").attr("x", -8).attr("y", y + 3).attr("text-anchor", "end").text(name);
    }
    S.graph.metadata.prompt_tokens.forEach((t, i) => {
      rows.append("text").attr("class", "token").attr("x", L.colX[i] + L.colW[i] / 2)
        .attr("y", L.top + L.nRows * L.rowH + 30).attr("text-anchor", "middle").text(t);
    });
    const maxW = d3.max(S.shownLinks, (l) => Math.abs(l.weight)) || 1;
    const sel = S.selected;
    root.append("g").selectAll("path").data(S.shownLinks).join("path")
      .attr("class", (l) => "link" + (sel && l.source !== sel && l.target !== sel ? " dim" : ""))
      .attr("d", (l) => {
        const a = L.pos.get(l.source), b = L.pos.get(l.target);
        return "M" + a.x + "," + a.y + "L" + b.x + "," + b.y;
      })
      .attr("stroke", (l) => (l.weight >= 0 ? "#2166ac" : "#d6604d"))
      .attr("stroke-width", (l) => 0.3 + 3.5 * Math.sqrt(Math.abs(l.weight) / maxW))
      .attr("stroke-opacity", (l) => 0.25 + 0.6 * Math.sqrt(Math.abs(l.weight) / maxW));
    const sn = root.append("g");
    S.ann.supernodes.forEach((s, i) => {
      const pts = s.slice(1).map((id) => L.pos.get(id)).filter(Boolean);
      if (!pts.length) return;
      const x0 = d3.min(pts, (p) => p.x) - 14, x1 = d3.max(pts, (p) => p.x) + 14;
      const y0 = d3.min(pts, (p) => p.y) - 14, y1 = d3.max(pts, (p) => p.y) + 14;
      const g = sn.append("g").attr("class", "supernode").attr("data-index", i);
      g.append("rect").attr("x", x0).attr("y", y0).attr("width", x1 - x0).attr("height", y1 - y0).attr("rx", 8);
      g.append("text").attr("x", x0 + 4).attr("y", y0 - 4).text(s[0]);
    });
    const pinned = new Set(S.ann.pinnedIds);
    const nodes = root.append("g").selectAll("g").data(S.nodes.filter((n) => S.visible.has(n.node_id)))
      .join("g")
      .attr("class", (n) => "node " + kindClass[n.feature_type] + (pinned.has(n.node_id) ? " pinned" : "")
        + (n.node_id === sel ? " selected" : ""))
      .attr("data-node-id", (n) => n.node_id)
      .attr("transform", (n) => { const p = L.pos.get(n.node_id); return "translate(" + p.x + "," + p.y + ")"; })
      .on("click", (e, n) => { if (e.shiftKey) togglePin(n.node_id); select(n.node_id); });
    nodes.each(function (n) {
      const g = d3.select(this);
      if (n.feature_type === "cross layer transcoder") g.append("circle").attr("class", "shape").attr("r", 6);
      else if (n.feature_type === "mlp reconstruction error") g.append("rect").attr("class", "shape").attr("x", -5).attr("y", -5).attr("width", 10).attr("height", 10);
      else g.append("rect").attr("class", "shape").attr("x", -9).attr("y", -6).attr("width", 18).attr("height", 12).attr("rx", 2);
      g.append("title").text(label(n) + " (" + n.node_id + ")");
      const text = n.feature_type === "logit" ? label(n).replace(/^Output "(.*)" \(p=.*\)$/, "$1") : label(n);
      if (n.feature_type !== "embedding" && (S.ann.labels[n.node_id] || n.feature_type === "logit" || n.node_id === sel)) {
        const t = g.append("text").text(text.length > 24 ? text.slice(0, 23) + "…" : text);
        if (n.feature_type === "logit") t.attr("transform", "translate(2,-9) rotate(-40)");
        else t.attr("y", 16).attr("text-anchor", "middle");
      }
    });
    const nFeat = S.nodes.filter((n) => S.visible.has(n.node_id) && n.feature_type === "cross layer transcoder").length;
    $("counts").textContent = nFeat + " features, " + S.shownLinks.length + " edges shown";
  }

  // ---- side panel -------------------------------------------------------------------------
  function linkItem(l, otherId) {
    const o = S.byId.get(otherId);
    const li = el("li", null, "link");
    li.appendChild(el("span", label(o) + " "));
    li.appendChild(el("span", (l.weight >= 0 ? "+" : "") + l.weight.toFixed(3), l.weight >= 0 ? "w-pos" : "w-neg"));
    li.dataset.nodeId = otherId;
    li.addEventListener("click", () => select(otherId));
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

  async function select(id) {
    S.selected = id;
    const n = S.byId.get(id);
    $("node-empty").hidden = true;
    $("node-details").hidden = false;
    $("node-title").textContent = label(n);
    const bits = [n.feature_type, "layer " + n.layer, "position " + n.ctx_idx + " (" + tokenAt(n.ctx_idx) + ")", "id " + n.node_id];
    if (n.activation !== null && n.activation !== undefined) bits.push("activation " + n.activation.toFixed(3));
    if (n.influence !== null && n.influence !== undefined) bits.push("influence " + n.influence.toFixed(3));
    $("node-stats").textContent = bits.join(" · ");
    $("label-input").value = S.ann.labels[id] || "";
    $("pin-btn").textContent = S.ann.pinnedIds.includes(id) ? "Unpin" : "Pin";
    const ins = $("inputs"), outs = $("outputs");
    ins.replaceChildren(); outs.replaceChildren();
    const strongest = (arr) => (arr || []).slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 10);
    strongest(S.inLinks.get(id)).forEach((l) => ins.appendChild(linkItem(l, l.source)));
    strongest(S.outLinks.get(id)).forEach((l) => outs.appendChild(linkItem(l, l.target)));
    const box = $("dashboard");
    box.replaceChildren();
    draw();
    const data = await featureData(n);
    if (S.selected !== id) return;
    if (!data) {
      if (n.feature_type === "cross layer transcoder") box.appendChild(el("p", "No dashboard for this feature.", "muted"));
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
  }

  function togglePin(id) {
    const i = S.ann.pinnedIds.indexOf(id);
    if (i >= 0) S.ann.pinnedIds.splice(i, 1); else S.ann.pinnedIds.push(id);
    renderPinned();
  }

  function renderPinned() {
    const ul = $("pinned-list");
    ul.replaceChildren();
    for (const id of S.ann.pinnedIds) {
      const li = el("li");
      const cb = el("input"); cb.type = "checkbox"; cb.dataset.nodeId = id; cb.className = "pin-check";
      const name = el("span", " " + label(S.byId.get(id)) + " ", "link");
      name.addEventListener("click", () => select(id));
      const x = el("button", "×"); x.type = "button"; x.title = "unpin";
      x.addEventListener("click", () => { togglePin(id); draw(); });
      li.append(cb, name, x);
      ul.appendChild(li);
    }
    const sl = $("supernode-list");
    sl.replaceChildren();
    S.ann.supernodes.forEach((s, i) => {
      const li = el("li");
      li.dataset.label = s[0];
      li.appendChild(el("strong", s[0]));
      li.appendChild(el("span", " — " + s.slice(1).map((m) => (S.byId.has(m) ? label(S.byId.get(m)) : m)).join(", ") + " "));
      const x = el("button", "×"); x.type = "button"; x.title = "remove supernode";
      x.addEventListener("click", () => { S.ann.supernodes.splice(i, 1); renderPinned(); draw(); });
      li.appendChild(x);
      sl.appendChild(li);
    });
    renderIntervene();
  }

  function renderIntervene() {
    const feats = S.ann.pinnedIds.map((id) => S.byId.get(id)).filter((n) => n.feature_type === "cross layer transcoder");
    $("intervene-panel").hidden = !(S.info.can_intervene && feats.length);
    const box = $("intervene-inputs");
    box.replaceChildren();
    for (const n of feats) {
      const row = el("div", null, "row");
      const inp = el("input"); inp.type = "number"; inp.step = "any"; inp.value = String(n.activation ?? 0);
      inp.dataset.nodeId = n.node_id;
      row.append(el("span", label(n) + " = "), inp);
      box.appendChild(row);
    }
  }

  async function runIntervention() {
    const settings = [...document.querySelectorAll("#intervene-inputs input")].map((inp) => {
      const n = S.byId.get(inp.dataset.nodeId);
      return { layer: Number(n.layer), position: n.ctx_idx, feature: n.feature_index, value: Number(inp.value) };
    });
    const r = await fetch("/api/intervene", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ settings }) });
    const data = await r.json();
    const ol = $("intervene-result");
    ol.replaceChildren();
    if (!r.ok) { status(data.error || "intervention failed", true); return; }
    for (const t of data.top) {
      ol.appendChild(el("li", t.token + "  " + (100 * t.prob).toFixed(1) + "%  (was " + (100 * t.clean_prob).toFixed(1) + "%)"));
    }
    status("Intervention done");
  }

  // ---- saving and sharing -----------------------------------------------------------------
  function download(name, text, type) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  }

  async function save() {
    const body = JSON.stringify(S.ann);
    if (OFFLINE) { download(S.graph.metadata.slug + ".annotations.json", body, "application/json"); return; }
    try {
      const r = await fetch("/api/annotations", { method: "PUT", headers: { "Content-Type": "application/json" }, body });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
      status("Saved to " + data.saved);
    } catch (e) { status("Save failed: " + e.message, true); }
  }

  function annotatedGraph() {
    const g = JSON.parse(JSON.stringify(S.graph));
    for (const n of g.nodes) if (S.ann.labels[n.node_id]) n.clerp = S.ann.labels[n.node_id];
    g.qParams.pinnedIds = S.ann.pinnedIds.slice();
    g.qParams.supernodes = S.ann.supernodes.map((s) => s.slice());
    return g;
  }

  function exportJSON() {
    download(S.graph.metadata.slug + ".annotated.json", JSON.stringify(annotatedGraph()), "application/json");
  }

  async function exportHTML() {
    if (!OFFLINE) {
      await save();
      const a = document.createElement("a"); a.href = "/api/export.html"; a.download = S.graph.metadata.slug + ".html";
      document.body.appendChild(a); a.click(); a.remove();
      return;
    }
    const payload = { graph: annotatedGraph(), annotations: S.ann, features: S.features };
    embedded.textContent = JSON.stringify(payload).replace(/</g, "\\u003c").replace(/>/g, "\\u003e");
    download(S.graph.metadata.slug + ".html", "<!doctype html>\n" + document.documentElement.outerHTML, "text/html");
  }

  // ---- wiring -----------------------------------------------------------------------------
  function wire() {
    const nt = $("node-threshold"), et = $("edge-threshold");
    const sync = () => {
      S.nodeT = Number(nt.value); S.edgeT = Number(et.value);
      $("node-threshold-value").textContent = S.nodeT.toFixed(2);
      $("edge-threshold-value").textContent = S.edgeT.toFixed(2);
      draw();
    };
    nt.addEventListener("input", sync); et.addEventListener("input", sync);
    $("pin-btn").addEventListener("click", () => { if (S.selected) { togglePin(S.selected); select(S.selected); } });
    $("label-btn").addEventListener("click", () => {
      if (!S.selected) return;
      const v = $("label-input").value.trim();
      if (v) S.ann.labels[S.selected] = v; else delete S.ann.labels[S.selected];
      renderPinned(); select(S.selected);
    });
    $("group-btn").addEventListener("click", () => {
      const ids = [...document.querySelectorAll("#pinned-list input.pin-check:checked")].map((c) => c.dataset.nodeId);
      const name = $("supernode-label").value.trim();
      if (!ids.length || !name) { status("Check pinned nodes and type a label first", true); return; }
      S.ann.supernodes.push([name, ...ids]);
      $("supernode-label").value = "";
      renderPinned(); draw();
      status("Grouped " + ids.length + " nodes as “" + name + "” (not saved yet)");
    });
    $("save-btn").addEventListener("click", save);
    $("export-json-btn").addEventListener("click", exportJSON);
    $("export-html-btn").addEventListener("click", exportHTML);
    $("intervene-btn").addEventListener("click", runIntervention);
    sync();
  }

  load().then(() => { wire(); renderPinned(); document.body.dataset.ready = "1"; })
    .catch((e) => { status("Could not load the graph: " + e.message, true); });
})();
