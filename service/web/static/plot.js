/* finkvra's plots, hand-written SVG: light curves, learning curves, bar charts.
   No library, no build step: observatory networks are often closed. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function ticks(lo, hi, n) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
    return { values: out, step: step };
  }

  function fmt(v, step) {
    const d = step > 0 ? Math.max(0, -Math.floor(Math.log10(step))) : 1;
    return v.toFixed(Math.min(d, 3));
  }

  /* Axes frame; returns {svg parts, sx, sy} for data -> pixel. */
  function frame(width, height, xr, yr, opts) {
    const m = { l: 52, r: 12, t: 10, b: 38 };
    const w = width - m.l - m.r, h = height - m.t - m.b;
    const sx = (x) => m.l + ((x - xr[0]) / (xr[1] - xr[0] || 1)) * w;
    const sy = opts.invertY
      ? (y) => m.t + ((y - yr[0]) / (yr[1] - yr[0] || 1)) * h
      : (y) => m.t + h - ((y - yr[0]) / (yr[1] - yr[0] || 1)) * h;
    let s = `<rect class="plot-bg" x="${m.l}" y="${m.t}" width="${w}" height="${h}"/>`;
    const xt = ticks(xr[0], xr[1], Math.max(2, Math.floor(w / 90)));
    const yt = ticks(Math.min(yr[0], yr[1]), Math.max(yr[0], yr[1]), Math.max(2, Math.floor(h / 40)));
    for (const v of xt.values || []) {
      const x = sx(v);
      s += `<line class="grid" x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + h}"/><text class="tick" x="${x}" y="${m.t + h + 14}" text-anchor="middle">${fmt(v, xt.step)}</text>`;
    }
    for (const v of yt.values || []) {
      const y = sy(v);
      s += `<line class="grid" x1="${m.l}" x2="${m.l + w}" y1="${y}" y2="${y}"/><text class="tick" x="${m.l - 6}" y="${y + 4}" text-anchor="end">${fmt(v, yt.step)}</text>`;
    }
    s += `<text class="axis" x="${m.l + w / 2}" y="${height - 4}" text-anchor="middle">${esc(opts.xlabel || "")}</text>`;
    s += `<text class="axis" transform="translate(12 ${m.t + h / 2}) rotate(-90)" text-anchor="middle">${esc(opts.ylabel || "")}</text>`;
    return { s: s, sx: sx, sy: sy, m: m, w: w, h: h };
  }

  function mount(el, width, height, body) {
    el.innerHTML = `<svg xmlns="${NS}" viewBox="0 0 ${width} ${height}" width="100%" height="${height}" preserveAspectRatio="none" role="img">${body}</svg>`;
    return el.firstChild;
  }

  function range(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!(hi > lo)) { lo -= 1; hi += 1; }
    const p = (hi - lo) * pad;
    return [lo - p, hi + p];
  }

  /* A light curve: detections with error bars (negative differences or fluxes hollow),
     forced photometry as diamonds, upper limits as open down-triangles, the triggering
     detection ringed; hovering a point shows its values. */
  function lightcurve(el, lc, hoverEl) {
    const width = Math.max(320, el.clientWidth || 600), height = el.clientHeight > 120 ? el.clientHeight : 300;
    const xs = [], ys = [];
    for (const b of lc.bands) {
      /* points with errors above the survey's range_sigma (LSST: fluxes near zero) do not
         set the range: they sit at its edge, as on the terminal */
      for (const d of b.detections.concat(b.forced || [])) {
        xs.push(d[0]);
        if (lc.range_sigma == null || (d[2] || 0) <= lc.range_sigma) ys.push(d[1] - (d[2] || 0), d[1] + (d[2] || 0));
      }
      for (const u of b.limits) { xs.push(u[0]); ys.push(u[1]); }
    }
    if (!xs.length) {
      el.innerHTML = '<p class="dim nolc">no light curve</p>';
      return 0;
    }
    if (!ys.length) for (const b of lc.bands) for (const d of b.detections.concat(b.forced || [])) ys.push(d[1]);
    const yr = range(ys, 0.08);
    const clampY = (y) => Math.min(yr[1], Math.max(yr[0], y));
    const f = frame(width, height, range(xs, 0.04), yr, { invertY: true, xlabel: "MJD", ylabel: "magnitude" });
    let s = f.s;
    let n = 0;
    if (lc.trigger) {
      const x = f.sx(lc.trigger.mjd);
      s += `<line class="trigger-line" x1="${x}" x2="${x}" y1="${f.m.t}" y2="${f.m.t + f.h}"/>`;
    }
    const negWord = (lc.marks || []).includes("negative flux") ? "negative flux" : "negative difference";
    for (const b of lc.bands) {
      for (const d of b.forced || []) {
        const x = f.sx(d[0]), y = f.sy(clampY(d[1]));
        if (d[2]) s += `<line class="err forced-err" x1="${x}" x2="${x}" y1="${f.sy(clampY(d[1] - d[2]))}" y2="${f.sy(clampY(d[1] + d[2]))}" stroke="${b.colour}"/>`;
        const info = `${b.name} forced ${d[1].toFixed(3)} ± ${(d[2] || 0).toFixed(3)} mag at MJD ${d[0].toFixed(4)}${d[3] ? ` (${negWord})` : ""}`;
        s += `<path class="pt forced" data-kind="forced" data-band="${esc(b.name)}" data-negative="${d[3] ? 1 : 0}" data-mag="${d[1]}" data-info="${esc(info)}" d="M${x},${y - 5} L${x + 5},${y} L${x},${y + 5} L${x - 5},${y} Z" fill="${d[3] ? "white" : b.colour}" stroke="${b.colour}"/>`;
        n++;
      }
      for (const u of b.limits) {
        const x = f.sx(u[0]), y = f.sy(u[1]);
        s += `<path class="pt lim" data-kind="limit" data-info="${esc(`${b.name} upper limit > ${u[1].toFixed(2)} mag at MJD ${u[0].toFixed(4)}`)}" d="M${x - 5},${y - 4} L${x + 5},${y - 4} L${x},${y + 5} Z" stroke="${b.colour}" fill="none"/>`;
        n++;
      }
      for (const d of b.detections) {
        const x = f.sx(d[0]), y = f.sy(clampY(d[1]));
        if (d[2]) s += `<line class="err" x1="${x}" x2="${x}" y1="${f.sy(clampY(d[1] - d[2]))}" y2="${f.sy(clampY(d[1] + d[2]))}" stroke="${b.colour}"/>`;
        const info = `${b.name} ${d[1].toFixed(3)} ± ${(d[2] || 0).toFixed(3)} mag at MJD ${d[0].toFixed(4)}${d[3] ? ` (${negWord})` : ""}`;
        s += `<circle class="pt det" data-kind="detection" data-band="${esc(b.name)}" data-negative="${d[3] ? 1 : 0}" data-mag="${d[1]}" data-info="${esc(info)}" cx="${x}" cy="${y}" r="4.5" fill="${d[3] ? "white" : b.colour}" stroke="${b.colour}"/>`;
        n++;
      }
    }
    if (lc.trigger) {
      s += `<circle class="trigger" cx="${f.sx(lc.trigger.mjd)}" cy="${f.sy(lc.trigger.mag)}" r="9"/>`;
    }
    const svg = mount(el, width, height, s);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    if (hoverEl) {
      svg.addEventListener("mouseover", (ev) => {
        const info = ev.target.getAttribute && ev.target.getAttribute("data-info");
        if (info) hoverEl.textContent = info;
      });
    }
    return n;
  }

  /* Line series [{name, colour, points: [[x, y], ...]}] with markers. */
  function lines(el, series, opts) {
    const width = Math.max(320, el.clientWidth || 500), height = opts.height || 220;
    const xs = [], ys = [];
    for (const se of series) for (const p of se.points) if (p[1] !== null) { xs.push(p[0]); ys.push(p[1]); }
    if (!xs.length) {
      el.innerHTML = `<p class="dim">${esc(opts.empty || "nothing yet")}</p>`;
      return;
    }
    const yr = opts.yrange || range(ys, 0.08);
    const f = frame(width, height, range(xs, 0.05), yr, opts);
    let s = f.s, legend = "";
    series.forEach((se, i) => {
      const pts = se.points.filter((p) => p[1] !== null);
      if (!pts.length) return;
      s += `<polyline class="series" fill="none" stroke="${se.colour}" points="${pts.map((p) => `${f.sx(p[0])},${f.sy(p[1])}`).join(" ")}"/>`;
      for (const p of pts) s += `<circle class="pt" cx="${f.sx(p[0])}" cy="${f.sy(p[1])}" r="3" fill="${se.colour}"><title>${esc(`${se.name}: ${p[1].toFixed(3)} at ${opts.xlabel} ${p[0]}`)}</title></circle>`;
      legend += `<text class="legend" x="${f.m.l + 8}" y="${f.m.t + 14 + 14 * i}" fill="${se.colour}">${esc(se.name)}</text>`;
    });
    mount(el, width, height, s + legend).setAttribute("preserveAspectRatio", "xMidYMid meet");
  }

  /* Horizontal bars [{name, value, err}] (permutation importance). */
  function bars(el, rows, opts) {
    if (!rows.length) {
      el.innerHTML = `<p class="dim">${esc(opts.empty || "nothing yet")}</p>`;
      return;
    }
    const width = Math.max(320, el.clientWidth || 500), rowH = 16, height = rows.length * rowH + 30;
    const left = 170, right = 16, w = width - left - right;
    const max = Math.max(...rows.map((r) => Math.abs(r.value) + (r.err || 0)), 1e-9);
    const min = Math.min(0, ...rows.map((r) => r.value - (r.err || 0)));
    const sx = (v) => left + ((v - min) / (max - min)) * w;
    let s = "";
    rows.forEach((r, i) => {
      const y = 8 + i * rowH;
      s += `<text class="tick" x="${left - 6}" y="${y + 11}" text-anchor="end">${esc(r.name)}</text>`;
      s += `<rect class="bar" x="${Math.min(sx(0), sx(r.value))}" y="${y + 2}" width="${Math.abs(sx(r.value) - sx(0))}" height="${rowH - 5}"><title>${esc(`${r.name}: ${r.value.toFixed(4)} ± ${(r.err || 0).toFixed(4)}`)}</title></rect>`;
      if (r.err) s += `<line class="err" x1="${sx(r.value - r.err)}" x2="${sx(r.value + r.err)}" y1="${y + 8}" y2="${y + 8}"/>`;
    });
    s += `<line class="grid" x1="${sx(0)}" x2="${sx(0)}" y1="4" y2="${height - 22}"/>`;
    s += `<text class="axis" x="${left + w / 2}" y="${height - 6}" text-anchor="middle">${esc(opts.xlabel || "")}</text>`;
    mount(el, width, height, s).setAttribute("preserveAspectRatio", "xMidYMid meet");
  }

  window.FinkPlot = { lightcurve: lightcurve, lines: lines, bars: bars, esc: esc };
})();
