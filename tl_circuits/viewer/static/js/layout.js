// tl_circuits viewer, layout: which nodes and edges are shown (node threshold, edge budget by
// influence) and where they go (fit to the canvas: layers up, positions across, spacing by what
// is shown). Positions are screen pixels at the initial zoom, so label sizes are what they say.
"use strict";
(function (T) {
  const rank = (G, n) => (n.layer === "E" ? 0 : n.feature_type === "logit" ? G.nLayers + 1 : Number(n.layer) + 1);
  T.rank = rank;

  // Shown nodes and edges. Edge influence (circuit-tracer's rule): each node's input weights are
  // normalised by their absolute sum, and influence flows down from the outputs (seeded by their
  // probabilities); an edge carries its normalised weight times its target's influence. The
  // edges carrying `edgeT` of the total are shown, at most `maxEdges`, strongest first.
  T.budget = (G, opts) => {
    const pinned = new Set(G.ann.pinnedIds);
    const keep = (n) => n.feature_type === "embedding" || n.feature_type === "logit" || pinned.has(n.node_id)
      || (n.influence ?? 0) <= opts.nodeT;
    const visible = new Set(G.nodes.filter(keep).map((n) => n.node_id));
    const cand = G.links.filter((l) => visible.has(l.source) && visible.has(l.target));
    const inSum = new Map();
    for (const l of cand) inSum.set(l.target, (inSum.get(l.target) || 0) + Math.abs(l.weight));
    const infl = new Map();
    for (const n of G.nodes) {
      if (n.feature_type === "logit") infl.set(n.node_id, Math.max(1e-6, Number(n.token_prob || n.influence || 0)));
    }
    const candIn = new Map();
    for (const l of cand) { if (!candIn.has(l.target)) candIn.set(l.target, []); candIn.get(l.target).push(l); }
    const order = G.nodes.filter((n) => visible.has(n.node_id))
      .sort((a, b) => rank(G, b) - rank(G, a) || b.ctx_idx - a.ctx_idx);
    const edgeInf = new Map();
    for (const t of order) {
      const it = infl.get(t.node_id) || 0, s = inSum.get(t.node_id) || 1;
      for (const l of candIn.get(t.node_id) || []) {
        const e = (Math.abs(l.weight) / s) * it;
        edgeInf.set(l, e);
        infl.set(l.source, (infl.get(l.source) || 0) + e);
      }
    }
    cand.sort((a, b) => (edgeInf.get(b) || 0) - (edgeInf.get(a) || 0));
    const total = cand.reduce((acc, l) => acc + (edgeInf.get(l) || 0), 0) || 1;
    const links = [];
    let acc = 0;
    for (const l of cand) {
      if (acc / total >= opts.edgeT || links.length >= opts.maxEdges) break;
      acc += edgeInf.get(l) || 0;
      links.push(l);
    }
    // a feature or error node with no shown edge says nothing: hide it unless pinned or selected
    const touched = new Set();
    for (const l of links) { touched.add(l.source); touched.add(l.target); }
    for (const nid of [...visible]) {
      const n = G.byId.get(nid);
      if ((T.isFeature(n) || n.feature_type === "mlp reconstruction error") && !touched.has(nid)
          && !pinned.has(nid) && nid !== opts.selected) visible.delete(nid);
    }
    return { visible, links, edgeInf, total: cand.length };
  };

  // Fit the shown nodes to a W x H canvas. Rows: tokens, one per layer, outputs; a layer with
  // nothing shown gets a thin row. Columns: one per position, widened by its busiest cell.
  T.layout = (G, visible, W, H) => {
    const nPos = G.tokens.length, nRows = G.nLayers + 2;
    const cells = new Map();
    const colCount = new Array(nPos).fill(0), rowUsed = new Array(nRows).fill(false);
    for (const n of G.nodes) {
      if (!visible.has(n.node_id)) continue;
      const r = rank(G, n), p = Math.min(n.ctx_idx, nPos - 1), k = r * 100000 + p;
      if (!cells.has(k)) cells.set(k, []);
      cells.get(k).push(n);
      rowUsed[r] = true;
    }
    for (const [k, arr] of cells) { const p = k % 100000; colCount[p] = Math.max(colCount[p], arr.length); }
    const longest = Math.max(...G.nodes.filter((n) => n.feature_type === "logit" && visible.has(n.node_id))
      .map((n) => Math.min(18, T.label(G, n).length)), 4);
    const M = { left: 64, right: 24, top: Math.min(150, 26 + longest * 6), bottom: 64 };
    const colW = colCount.map((c) => 0.6 + Math.sqrt(c));
    const rowW = rowUsed.map((u, r) => (r === 0 || r === nRows - 1 ? 0.5 : u ? 1 : 0.3));
    const sumC = colW.reduce((a, b) => a + b, 0), sumR = rowW.reduce((a, b) => a + b, 0);
    const iw = Math.max(100, W - M.left - M.right), ih = Math.max(100, H - M.top - M.bottom);
    const colX = [M.left];
    colW.forEach((w, i) => { colW[i] = (w / sumC) * iw; colX.push(colX[i] + colW[i]); });
    // row r's centre: rows stack from the bottom (tokens) up to the outputs
    const rowY = new Array(nRows), rowH = rowW.map((w) => (w / sumR) * ih);
    let y = M.top + ih;
    for (let r = 0; r < nRows; r++) { rowY[r] = y - rowH[r] / 2; y -= rowH[r]; }
    const pos = new Map();
    for (const [k, arr] of cells) {
      const r = Math.floor(k / 100000), p = k % 100000;
      arr.sort((a, b) => (a.influence ?? 0) - (b.influence ?? 0));
      // outputs get at least 34 px each (their labels are slanted above), reaching left if needed
      const width = r === nRows - 1 ? Math.min(iw, Math.max(colW[p], arr.length * 34)) : colW[p];
      const x0 = Math.max(M.left, Math.min(colX[p], colX[p + 1] - width)), gap = width / arr.length;
      arr.forEach((n, i) => pos.set(n.node_id, { x: x0 + (i + 0.5) * gap, y: rowY[r], gap, rowH: rowH[r] }));
    }
    return { pos, colX, colW, rowY, rowH, rowUsed, nRows, M, W, H, nPos };
  };
})(window.TLC);
