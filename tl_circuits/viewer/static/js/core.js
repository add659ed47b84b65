// tl_circuits viewer, core: the TLC namespace, DOM helpers, the state of one graph and its labels.
// Every string from a graph (tokens, labels) is written with textContent (d3 .text()), never as
// HTML. The other scripts add to TLC: layout, view, panels, steer, gallery, attention, app.
"use strict";
window.TLC = (function () {
  const embedded = document.getElementById("tlc-data");
  const T = {
    OFFLINE: embedded !== null, embedded,
    S: { G: null, G2: null, info: {}, features: {}, nodeT: 0.8, edgeT: 0.9, maxEdges: 300, graphs: [] },
  };
  T.$ = (id) => document.getElementById(id);
  T.el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  T.status = (msg, isError) => {
    const s = T.$("status");
    s.textContent = msg;
    s.className = isError ? "err" : "";
  };
  T.getJSON = async (url) => {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new Error((data && data.error) || url + ": HTTP " + r.status);
    return data;
  };
  // API url for the current graph (the server serves several: ?graph=ID)
  T.api = (path, gid, params) => {
    const q = new URLSearchParams(params || {});
    if (gid) q.set("graph", gid);
    const s = q.toString();
    return path + (s ? "?" + s : "");
  };

  // ---- one graph: nodes, links, annotations, automatic labels ---------------------------------
  T.makeGraph = (data, ann, auto, id) => {
    const G = { id: id || null, data, nodes: data.nodes, byId: new Map(), inLinks: new Map(), outLinks: new Map(),
      ann: Object.assign({ version: 1, labels: {}, pinnedIds: [], supernodes: [] }, ann || {}), auto: auto || {} };
    G.nodes.forEach((n) => G.byId.set(n.node_id, n));
    G.links = data.links.filter((l) => G.byId.has(l.source) && G.byId.has(l.target));
    for (const l of G.links) {
      if (!G.inLinks.has(l.target)) G.inLinks.set(l.target, []);
      if (!G.outLinks.has(l.source)) G.outLinks.set(l.source, []);
      G.inLinks.get(l.target).push(l); G.outLinks.get(l.source).push(l);
    }
    G.ann.pinnedIds = G.ann.pinnedIds.filter((nid) => G.byId.has(nid));
    const md = data.metadata;
    G.nLayers = Number(md.n_layers ?? Math.max(0, ...G.nodes.filter((n) => n.layer !== "E").map((n) => Number(n.layer))) - 1);
    G.tokens = md.prompt_tokens;
    return G;
  };
  T.isFeature = (n) => n.feature_type === "cross layer transcoder";
  T.featureKey = (n) => n.layer + "_" + n.feature_index;
  T.tokenAt = (G, i) => (G.tokens[i] ?? "");
  // whitespace made visible, so a newline or a space token can be read as a label
  T.visible = (t) => (String(t).trim() ? String(t).replace(/\n/g, "⏎") : JSON.stringify(String(t)));
  const short = (t) => String(t).trim() || JSON.stringify(String(t));
  // automatic label from the dashboards: promoted tokens for late layers, activating tokens early
  T.autoLabel = (G, n) => {
    const s = G.auto[T.featureKey(n)];
    if (!s) return null;
    const late = Number(n.layer) >= G.nLayers / 2;
    const prom = (s.promoted || []).slice(0, 2).map(short), act = (s.activating || []).slice(0, 2).map(short);
    if ((late && prom.length) || !act.length) return prom.length ? "→ " + prom.join(", ") : null;
    return "on " + act.join(", ");
  };
  T.userLabel = (G, n) => G.ann.labels[n.node_id] || (T.isFeature(n) && n.clerp) || null;
  T.label = (G, n) => {
    const user = T.userLabel(G, n);
    if (user) return user;
    if (n.feature_type === "embedding") return T.tokenAt(G, n.ctx_idx);
    if (n.feature_type === "logit") {
      const m = /^Output "([\s\S]*)" \(p=[\s\S]*\)$/.exec(n.clerp || "");
      return m ? T.visible(m[1]) : (n.clerp || n.node_id);
    }
    if (T.isFeature(n)) return T.autoLabel(G, n) || "L" + n.layer + "/" + n.feature_index;
    if (n.feature_type === "mlp reconstruction error") return "error L" + n.layer;
    return n.node_id;
  };
  T.kindClass = { "cross layer transcoder": "feature", "mlp reconstruction error": "error",
    embedding: "token", logit: "logit" };

  // ---- loading --------------------------------------------------------------------------------
  T.loadGraph = async (gid) => {
    if (T.OFFLINE) {
      const p = JSON.parse(embedded.textContent);
      T.S.features = p.features || {};
      return T.makeGraph(p.graph, p.annotations, p.feature_labels || {}, null);
    }
    const [data, ann, auto] = await Promise.all([T.getJSON(T.api("/api/graph", gid)),
      T.getJSON(T.api("/api/annotations", gid)), T.getJSON(T.api("/api/feature_labels", gid))]);
    return T.makeGraph(data, ann, auto, data.id || gid);
  };
  T.featureData = async (n) => {
    if (!T.isFeature(n) || n.feature_index === undefined) return null;
    const key = T.featureKey(n);
    if (key in T.S.features) return T.S.features[key];
    if (T.OFFLINE || !T.S.info.has_dashboards) return null;
    try { T.S.features[key] = await T.getJSON("/api/feature/" + n.layer + "/" + n.feature_index); }
    catch (e) { T.S.features[key] = null; }
    return T.S.features[key];
  };
  return T;
})();
