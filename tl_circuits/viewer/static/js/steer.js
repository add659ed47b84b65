// tl_circuits viewer, steering: set or scale pinned features or supernodes, run the model
// (server side: tl_circuits.intervene and tl_circuits.generate, one request at a time) and show
// the new top outputs and a short greedy completion beside the original.
"use strict";
(function (T) {
  const { $, el } = T;

  // rows: each pinned feature, and each supernode with at least one feature
  function items(G) {
    const out = [];
    for (const nid of G.ann.pinnedIds) {
      const n = G.byId.get(nid);
      if (n && T.isFeature(n)) out.push({ key: nid, name: T.label(G, n), ids: [nid], value: n.activation ?? 0 });
    }
    G.ann.supernodes.forEach((s) => {
      const ids = s.slice(1).filter((m) => G.byId.has(m) && T.isFeature(G.byId.get(m)));
      if (ids.length) out.push({ key: "supernode:" + s[0], name: "supernode “" + s[0] + "” (" + ids.length + " features)", ids, value: 0 });
    });
    return out;
  }

  T.renderSteer = (G) => {
    const rows = items(G);
    $("steer-panel").hidden = !(T.S.info.can_steer && !T.OFFLINE);
    $("steer-empty").hidden = rows.length > 0;
    const box = $("steer-inputs");
    const old = new Map([...box.querySelectorAll(".steer-row")].map((r) => [r.dataset.key, r]));
    box.replaceChildren();
    for (const it of rows) {
      const prev = old.get(it.key);
      if (prev) { box.appendChild(prev); continue; }
      const row = el("div", null, "row steer-row");
      row.dataset.key = it.key; row.dataset.ids = JSON.stringify(it.ids);
      const use = el("input"); use.type = "checkbox"; use.checked = true; use.className = "steer-use";
      const mode = el("select"); mode.className = "steer-mode";
      for (const m of ["set", "scale"]) { const o = el("option", m === "set" ? "set to" : "scale by"); o.value = m; mode.appendChild(o); }
      const val = el("input"); val.type = "text"; val.className = "steer-value"; val.value = String(Number(it.value).toFixed(3));
      val.setAttribute("inputmode", "decimal");
      mode.addEventListener("change", () => { val.value = mode.value === "scale" ? "0" : String(Number(it.value).toFixed(3)); });
      row.append(use, el("span", it.name, "steer-name"), mode, val);
      box.appendChild(row);
    }
    updateScope(G);
  };

  function chosen(G) {
    const out = [];
    for (const row of document.querySelectorAll("#steer-inputs .steer-row")) {
      if (!row.querySelector(".steer-use").checked) continue;
      const raw = row.querySelector(".steer-value").value.trim(), mode = row.querySelector(".steer-mode").value;
      const value = raw === "" ? NaN : Number(raw);
      for (const nid of JSON.parse(row.dataset.ids)) out.push({ node_id: nid, value: isFinite(value) ? value : raw, mode, ok: isFinite(value), name: row.querySelector(".steer-name").textContent });
    }
    return out;
  }

  // which prompt tokens the interventions touch
  function updateScope(G) {
    const edits = chosen(G);
    const pos = [...new Set(edits.map((e) => G.byId.get(e.node_id).ctx_idx))].sort((a, b) => a - b);
    $("steer-scope").textContent = edits.length
      ? edits.length + " feature intervention" + (edits.length > 1 ? "s" : "") + " on " + pos.length + " of " + G.tokens.length
        + " prompt tokens: " + pos.map((p) => "“" + T.tokenAt(G, p) + "” (" + p + ")").join(", ")
      : "";
  }

  function topList(title, top, key) {
    const div = el("div", null, "steer-col");
    div.appendChild(el("h3", title));
    const ol = el("ol", null, "steer-top");
    for (const t of top.slice(0, 5)) {
      const li = el("li");
      li.appendChild(el("span", t.token, "tok"));
      li.appendChild(el("span", " " + (100 * t[key]).toFixed(1) + "%", "muted"));
      li.dataset.tokenId = t.token_id;
      ol.appendChild(li);
    }
    div.appendChild(ol);
    return div;
  }

  T.runSteer = async () => {
    const G = T.S.G, out = $("steer-result"), msg = $("steer-message");
    const edits = chosen(G);
    msg.textContent = ""; msg.className = "";
    if (!edits.length) { msg.textContent = "Nothing to steer: check at least one row."; msg.className = "err"; return; }
    const bad = edits.find((e) => !e.ok);
    if (bad) { msg.textContent = "The value for " + bad.name + " is not a number: " + JSON.stringify(String(bad.value)); msg.className = "err"; return; }
    const body = { interventions: edits.map((e) => ({ node_id: e.node_id, value: e.value, mode: e.mode })),
      constrained: $("steer-constrained").checked, generate: Number($("steer-generate").value) || 0 };
    const btn = $("steer-btn");
    btn.disabled = true; msg.textContent = "Running…";
    try {
      const r = await fetch(T.api("/api/steer", G.id), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
      out.replaceChildren();
      const cols = el("div", null, "steer-cols");
      cols.append(topList("Original", data.clean_top, "prob"), topList("Steered", data.top, "prob"));
      out.appendChild(cols);
      if (data.completion.n_tokens) {
        const c = el("div", null, "steer-cols");
        for (const [name, text] of [["Original completion", data.completion.clean], ["Steered completion", data.completion.steered]]) {
          const d = el("div", null, "steer-col");
          d.append(el("h3", name), el("div", text, "completion"));
          c.appendChild(d);
        }
        out.appendChild(c);
      }
      msg.textContent = "Applied " + data.n_interventions + " intervention" + (data.n_interventions > 1 ? "s" : "") + " at "
        + data.positions.length + " of " + data.n_prompt_tokens + " prompt tokens ("
        + (data.constrained ? "constrained: other features keep their values" : "open loop: later features respond") + ").";
      out.dataset.done = String(Number(out.dataset.done || 0) + 1);
    } catch (e) {
      msg.textContent = "Steering failed: " + e.message; msg.className = "err";
    } finally { btn.disabled = false; }
  };

  T.wireSteer = () => {
    $("steer-btn").addEventListener("click", T.runSteer);
    $("steer-inputs").addEventListener("change", () => updateScope(T.S.G));
  };
})(window.TLC);
