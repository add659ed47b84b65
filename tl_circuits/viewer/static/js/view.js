// tl_circuits viewer, view: draws one graph into one <svg> (the main view, or one side of the
// comparison), with hover highlighting (a node's inputs and outputs), path highlighting (a
// clicked node's upstream and downstream paths) and zoom/pan.
"use strict";
(function (T) {
  const FONT = 12, SMALL = 11;
  const trunc = (s, n) => (s.length > n ? s.slice(0, Math.max(1, n - 1)) + "…" : s);

  T.View = function (svgEl, G, opts) {
    const V = { G, svgEl, selected: null, shared: null, onSelect: opts.onSelect || (() => {}),
      onLink: opts.onLink || (() => {}) };
    const svg = d3.select(svgEl);
    let root = null;
    V.draw = () => {
      const box = svgEl.getBoundingClientRect();
      const B = T.budget(G, { nodeT: T.S.nodeT, edgeT: T.S.edgeT, maxEdges: T.S.maxEdges, selected: V.selected });
      V.B = B;
      const L = T.layout(G, B.visible, box.width, box.height);
      V.L = L;
      svg.selectAll("*").remove();
      root = svg.append("g").attr("class", "root");
      const zoom = d3.zoom().scaleExtent([0.2, 10]).on("zoom", (e) => root.attr("transform", e.transform));
      svg.call(zoom).on("dblclick.zoom", null);
      svg.on("click", (e) => { if (e.target === svgEl) V.select(null); });
      drawAxes(L);
      drawLinks(B, L);
      drawSupernodes(L);
      drawNodes(B, L);
      V.applyFocus();
      const nFeat = G.nodes.filter((n) => B.visible.has(n.node_id) && T.isFeature(n)).length;
      V.counts = nFeat + " features, " + B.links.length + " edges shown (of " + B.total + ")";
      return V;
    };

    function drawAxes(L) {
      const g = root.append("g").attr("class", "axes");
      for (let r = 0; r < L.nRows; r++) {
        const y = L.rowY[r];
        const name = r === 0 ? "tokens" : r === L.nRows - 1 ? "outputs" : "L" + (r - 1);
        if (r > 0 && r < L.nRows - 1) {
          g.append("line").attr("class", "row-line").attr("x1", L.M.left).attr("x2", L.W - L.M.right)
            .attr("y1", y).attr("y2", y);
        }
        // thin rows of empty layers: label every few so the names do not overlap
        if (L.rowH[r] >= FONT || L.rowUsed[r] || r % 5 === 0) {
          g.append("text").attr("class", "axis").attr("x", L.M.left - 8).attr("y", y + 4)
            .attr("text-anchor", "end").style("font-size", SMALL + "px").text(name);
        }
      }
      const ty = L.rowY[0] + Math.min(L.rowH[0] / 2, 14) + 14;
      G.tokens.forEach((t, i) => {
        // a token wider than its column is written slanted, down and to the left of its box
        const x = L.colX[i] + L.colW[i] / 2, narrow = Math.min(16, t.length) * 7.2 > L.colW[i];
        const el = g.append("text").attr("class", "token").attr("data-pos", i).style("font-size", FONT + "px")
          .text(trunc(t, narrow ? 10 : 16));
        el.append("title").text(i + ": " + t);
        if (narrow) el.attr("transform", "translate(" + (x + 4) + "," + (ty - 6) + ") rotate(-45)").attr("text-anchor", "end");
        else el.attr("x", x).attr("y", ty).attr("text-anchor", "middle");
      });
    }

    function drawLinks(B, L) {
      const maxW = d3.max(B.links, (l) => Math.abs(l.weight)) || 1;
      root.append("g").attr("class", "links").selectAll("path").data(B.links).join("path")
        .attr("class", "link").attr("data-source", (l) => l.source).attr("data-target", (l) => l.target)
        .attr("d", (l) => {
          const a = L.pos.get(l.source), b = L.pos.get(l.target);
          return "M" + a.x + "," + a.y + "L" + b.x + "," + b.y;
        })
        .attr("stroke", (l) => (l.weight >= 0 ? "#2166ac" : "#d6604d"))
        .attr("stroke-width", (l) => 0.5 + 3.5 * Math.sqrt(Math.abs(l.weight) / maxW))
        .attr("stroke-opacity", (l) => 0.3 + 0.6 * Math.sqrt(Math.abs(l.weight) / maxW))
        .on("click", (e, l) => { e.stopPropagation(); V.onLink(l); })
        .append("title").text((l) => T.label(G, G.byId.get(l.source)) + " → " + T.label(G, G.byId.get(l.target))
          + ": " + l.weight.toFixed(3));
    }

    function drawSupernodes(L) {
      const sn = root.append("g");
      G.ann.supernodes.forEach((s, i) => {
        const pts = s.slice(1).map((nid) => L.pos.get(nid)).filter(Boolean);
        if (!pts.length) return;
        const x0 = d3.min(pts, (p) => p.x) - 12, x1 = d3.max(pts, (p) => p.x) + 12;
        const y0 = d3.min(pts, (p) => p.y) - 12, y1 = d3.max(pts, (p) => p.y) + 12;
        const g = sn.append("g").attr("class", "supernode").attr("data-index", i);
        g.append("rect").attr("x", x0).attr("y", y0).attr("width", x1 - x0).attr("height", y1 - y0).attr("rx", 8);
        g.append("text").attr("x", x0 + 4).attr("y", y0 - 4).style("font-size", SMALL + "px").text(s[0]);
      });
    }

    function drawNodes(B, L) {
      const pinned = new Set(G.ann.pinnedIds);
      const shown = G.nodes.filter((n) => B.visible.has(n.node_id));
      const nodes = root.append("g").attr("class", "nodes").selectAll("g").data(shown).join("g")
        .attr("class", (n) => "node " + T.kindClass[n.feature_type] + (pinned.has(n.node_id) ? " pinned" : "")
          + (V.shared && T.isFeature(n) && V.shared.has(T.featureKey(n)) ? " shared" : ""))
        .attr("data-node-id", (n) => n.node_id)
        .attr("transform", (n) => { const p = L.pos.get(n.node_id); return "translate(" + p.x + "," + p.y + ")"; })
        .on("click", (e, n) => { e.stopPropagation(); V.select(n.node_id, e.shiftKey); })
        .on("mouseenter", (e, n) => V.hover(n.node_id))
        .on("mouseleave", () => V.hover(null));
      nodes.each(function (n) {
        const g = d3.select(this), p = L.pos.get(n.node_id);
        const r = Math.max(3, Math.min(7, p.gap * 0.3, p.rowH * 0.3));
        if (T.isFeature(n)) g.append("circle").attr("class", "shape").attr("r", r);
        else if (n.feature_type === "mlp reconstruction error") g.append("rect").attr("class", "shape").attr("x", -r).attr("y", -r).attr("width", 2 * r).attr("height", 2 * r);
        else g.append("rect").attr("class", "shape").attr("x", -9).attr("y", -6).attr("width", 18).attr("height", 12).attr("rx", 2);
        g.append("title").text(T.label(G, n) + " (" + n.node_id + ")");
        if (n.feature_type === "logit") {
          g.append("text").attr("class", "out-label").style("font-size", FONT + "px")
            .attr("transform", "translate(3,-10) rotate(-45)").text(trunc(T.label(G, n), 18));
        } else if (T.isFeature(n)) {
          // the label goes right of the circle, in the room left before the next node of the cell
          const chars = Math.floor((p.gap - 2 * r - 6) / 6.2);
          const user = T.userLabel(G, n);
          if (chars >= 5 || user) {
            g.append("text").attr("class", "feat-label" + (user ? " user" : "")).attr("x", r + 3).attr("y", 4)
              .style("font-size", SMALL + "px").text(trunc(T.label(G, n), user ? Math.max(chars, 24) : chars));
          }
        }
      });
    }

    // hover: the node's direct inputs and outputs stay, the rest dims
    V.hover = (nid) => {
      svg.classed("hovering", !!nid);
      if (!nid) { svg.selectAll(".hl").classed("hl", false); return; }
      const near = new Set([nid]);
      svg.selectAll("path.link").classed("hl", (l) => {
        const on = l.source === nid || l.target === nid;
        if (on) { near.add(l.source); near.add(l.target); }
        return on;
      });
      svg.selectAll("g.node").classed("hl", (n) => near.has(n.node_id));
    };

    // paths through the selected node: upstream (what feeds it) and downstream (what it feeds)
    V.pathsOf = (nid) => {
      const onNodes = new Set([nid]), onLinks = new Set();
      const walk = (start, next, end) => {
        const stack = [start], seen = new Set([start]);
        while (stack.length) {
          const cur = stack.pop();
          for (const l of V.B.links) {
            if (l[end] !== cur) continue;
            onLinks.add(l);
            const o = l[next];
            onNodes.add(o);
            if (!seen.has(o)) { seen.add(o); stack.push(o); }
          }
        }
      };
      walk(nid, "source", "target");
      walk(nid, "target", "source");
      return { onNodes, onLinks };
    };
    V.applyFocus = () => {
      const nid = V.selected && V.B && V.B.visible.has(V.selected) ? V.selected : null;
      svg.classed("focus", !!nid);
      svg.selectAll("g.node").classed("selected", (n) => n.node_id === nid);
      if (!nid) { svg.selectAll(".on").classed("on", false); return; }
      const P = V.pathsOf(nid);
      svg.selectAll("path.link").classed("on", (l) => P.onLinks.has(l));
      svg.selectAll("g.node").classed("on", (n) => P.onNodes.has(n.node_id));
    };
    V.select = (nid, shift) => {
      V.selected = nid;
      V.applyFocus();
      V.onSelect(nid, !!shift);
    };
    return V;
  };
})(window.TLC);
