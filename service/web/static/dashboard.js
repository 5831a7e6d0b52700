/* The dashboard: read /api/dashboard every 15 s and draw it. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const esc = window.FinkPlot.esc;
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

  function row(k, v, id) {
    return `<tr><th>${esc(k)}</th><td${id ? ` data-n="${esc(id)}"` : ""}>${v}</td></tr>`;
  }

  function age(s) {
    if (s === null || s === undefined) return "—";
    for (const [u, n] of [["d", 86400], ["h", 3600], ["min", 60]]) if (s >= n) return `${(s / n).toFixed(1)} ${u}`;
    return `${s.toFixed(0)} s`;
  }

  function grid(table, rows, cols) {
    let s = `<thead><tr><th></th>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>`;
    for (const [name, values] of rows) {
      s += `<tr><th>${esc(name)}</th>${cols.map((c) => `<td class="num">${values[c] ?? 0}</td>`).join("")}</tr>`;
    }
    table.innerHTML = s + "</tbody>";
  }

  function draw(d) {
    const q = d.queue;
    $("d-queue").innerHTML = row("waiting (teach)", q.waiting, "waiting") +
      row("waiting (discover)", q.waiting_discover, "waiting_discover") +
      row("waiting (second look)", q.waiting_second_look, "waiting_second_look") +
      row("set aside as garbage", q.discover_garbage, "discover_garbage") +
      row("leased", q.leased, "leased") +
      row("size / max", `${q.size} / ${q.max_size}`) + row("labelled (Redis)", q.labelled, "labelled") +
      row("label events (stream)", q.labels_stream, "labels_stream") +
      row("oldest waiting", age(q.oldest_age_s)) + row("median age", age(q.median_age_s)) +
      row("leased by", Object.entries(q.leased_by).map(([w, n]) => `${esc(w)} ${n}`).join(", ") || "—");
    const sv = d.service;
    if (sv.reachable) {
      const h = sv.health || {};
      $("d-service").innerHTML = row("alive", h.alive ? "yes" : "<b class=bad>no</b>") +
        row("ready", h.ready ? "yes" : "<b class=bad>no</b>") +
        row("problems", Object.entries(h.problems || {}).map(([p, m]) => `${esc(p)}: ${esc(m)}`).join("<br>") || "none") +
        row("uptime", age(h.uptime_s)) +
        row("consumer lag", sv.lag_total === null ? "—" : `${sv.lag_total} <span class="dim">(${Object.entries(sv.lag).map(([p, n]) => `p${esc(p)}: ${n}`).join(", ")})</span>`, "lag");
    } else {
      $("d-service").innerHTML = row("service", `<b class="bad">unreachable</b> <span class="dim">${esc(sv.error || "")}</span>`);
    }
    const st = d.stores;
    $("d-stores").innerHTML = row("archived alerts", st.archive_alerts, "archive_alerts") +
      row("archive files / nights", `${st.archive_files} / ${st.archive_nights}`) +
      row("dead letters", st.dead_letters, "dead_letters");
    const L = d.labels;
    $("d-classes").innerHTML = row("all", `<b>${L.total}</b>`, "total") +
      Object.entries(L.per_class).map(([c, n]) => row(c, n, `class-${c}`)).join("");
    const who = [...new Set(Object.values(L.per_labeller_per_day).flatMap((v) => Object.keys(v)))].sort();
    grid($("d-per-day"), Object.entries(L.per_labeller_per_day).reverse(), who);
    grid($("d-class-day"), Object.entries(L.per_class_per_day).reverse(), Object.keys(L.per_class));
    grid($("d-balance"), Object.entries(L.class_balance), ["class_1", "class_0", "excluded"]);
    const M = d.models;
    const box = $("d-models");
    box.innerHTML = (M.error ? `<p class="bad">${esc(M.error)}</p>` : "") +
      Object.keys(M.rounds).map((m) => `<div class="model"><h3>${esc(m)} <small>live version ${esc(M.live[m] ?? "none yet")} · ${M.rounds[m].length} round(s)</small></h3>
        <p class="model-status" id="status-${esc(m)}">${esc((M.status && M.status[m] && M.status[m].message) || "no stopping signal yet")}</p>
        <div class="plot" id="curve-${esc(m)}"></div><h4>permutation importance of the live version</h4><div class="plot" id="imp-${esc(m)}"></div></div>`).join("");
    for (const [m, rounds] of Object.entries(M.rounds)) {
      const series = [
        ["prequential/f1", "prequential F1"], ["prequential/roc_auc", "prequential ROC AUC"],
        ["holdout/f1", "held-out F1"], ["holdout/roc_auc", "held-out ROC AUC"],
      ].map(([key, name], i) => ({ name: name, colour: COLOURS[i], points: rounds.map((r) => [r.n_train ?? r.round, r.metrics[key]]) }))
        .filter((s) => s.points.some((p) => p[1] !== null));
      window.FinkPlot.lines($(`curve-${m}`), series, { xlabel: "training labels", ylabel: "metric", yrange: [0, 1.02], empty: "no round yet" });
      window.FinkPlot.bars($(`imp-${m}`), (M.importance[m] || []).slice(0, 21).map((r) => ({ name: r.feature, value: r.mean || 0, err: r.std || 0 })),
        { xlabel: "drop in score when the feature is shuffled", empty: "no importance (too few held-out labels, or no model yet)" });
    }
    $("status").textContent = `as of ${d.as_of.replace("T", " ").replace("+00:00", "")} UTC (refreshes every 15 s)`;
    document.body.dataset.loaded = d.as_of;
  }

  async function load() {
    try {
      const reply = await fetch("/api/dashboard", { credentials: "same-origin" });
      if (reply.status === 401) return (location.href = "/login?next=/dashboard");
      draw(await reply.json());
    } catch (e) {
      $("status").textContent = `could not read the dashboard: ${e.message}`;
    }
  }
  load();
  setInterval(load, 15000);
})();
