/* The labelling page: one item at a time, one key per answer, the next item fetched ahead.
   Keys as in the terminal: r x g a b v label, s skip, u undo, ? help. */
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const esc = window.FinkPlot.esc;
  const LABELS = { r: "real", x: "extragal", g: "gal", a: "agn", b: "bogus", v: "varstar" };
  const held = []; // items leased by this page: held[0] on screen, held[1] fetched ahead
  let stretch = localStorage.getItem("finkvra.stretch") || "zscale";
  let leasing = null;
  let pendingKey = null; // the time of the key press whose next item is not on screen yet
  const preloaded = new Map(); // url -> Image kept alive so the browser caches it
  window.finkvraTimes = []; // {candid, key, shown}: key press -> item on screen (the benchmark)
  const queueSelect = $("queue-select");
  const QUEUES = Array.from(queueSelect.options).map((o) => o.value);
  let queue = localStorage.getItem("finkvra.queue") || "teach";
  if (!QUEUES.includes(queue)) queue = "teach";
  queueSelect.value = queue;
  $("empty-queue").textContent = queue;

  async function post(path, body) {
    const reply = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await reply.json(); } catch (e) { /* an empty reply */ }
    if (!reply.ok) {
      if (reply.status === 401) location.href = "/login?next=/label";
      throw new Error(data.error || `HTTP ${reply.status}`);
    }
    return data;
  }

  function say(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (kind || "");
  }

  function cutoutUrl(item, title) {
    return `${item.cutouts[title]}?stretch=${stretch}`;
  }

  function preload(item) {
    if (!item) return;
    for (const title of Object.keys(item.cutouts)) {
      const url = cutoutUrl(item, title);
      if (!preloaded.has(url)) {
        const img = new Image();
        img.src = url;
        preloaded.set(url, img);
        if (preloaded.size > 60) preloaded.delete(preloaded.keys().next().value);
      }
    }
  }

  async function leaseOne() {
    if (leasing) return leasing;
    leasing = (async () => {
      try {
        const asked = queue;
        const data = await post("/api/next", { holding: held.map((i) => i.candid), queue: asked });
        if (asked !== queue) { // switched meanwhile: this item belongs to the other queue
          if (data.item) post("/api/release", { candids: [data.item.candid] }).catch(() => {});
          return null;
        }
        if (data.item) {
          held.push(data.item);
          preload(data.item);
        }
        return data.item;
      } finally {
        leasing = null;
      }
    })();
    return leasing;
  }

  let filling = false;
  let fillAgain = false;
  /* Keep two items leased (the one on screen and one ahead); one loop at a time. */
  async function fill() {
    if (filling) {
      fillAgain = true;
      return;
    }
    filling = true;
    try {
      do {
        fillAgain = false;
        while (held.length < 2) {
          let got = null;
          try {
            got = await leaseOne();
          } catch (e) {
            say(`could not fetch the next item: ${e.message}`, "error");
          }
          render();
          if (!got) break;
        }
      } while (fillAgain);
    } finally {
      filling = false;
      render();
    }
  }

  let displayed = null; // the candid on screen
  /* Show held[0] if it is not on screen yet; the empty notice when nothing is held. */
  function render() {
    const item = held[0];
    if (!item) {
      if (displayed !== null || $("empty").hidden) {
        if (filling) return say("fetching the next item…", "");
        displayed = null;
        show(null);
      }
      return;
    }
    if (item.candid !== displayed) {
      displayed = item.candid;
      show(item);
    }
  }

  function row(k, v) {
    return `<tr><th>${esc(k)}</th><td>${v}</td></tr>`;
  }

  function num(v, d) {
    if (v === null || v === undefined) return "—";
    if (d === undefined && Number.isInteger(+v)) return String(v);
    return (+v).toFixed(d === undefined ? 3 : d);
  }

  function show(item) {
    if (!item) {
      $("item").hidden = true;
      $("empty").hidden = false;
      say("the queue is empty", "warn");
      return;
    }
    $("empty").hidden = true;
    $("item").hidden = false;
    $("item").dataset.candid = item.candid;
    $("objectId").textContent = item.objectId;
    $("candid").textContent = item.candid;
    const names = { lasair: "Lasair", fink: "Fink", tns: "TNS", simbad: "SIMBAD" };
    $("links").innerHTML = Object.entries(item.links)
      .map(([k, url]) => `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${esc(names[k] || k)}</a>`)
      .join(" ");
    const images = [];
    for (const img of document.querySelectorAll(".stamp img[data-title]")) {
      const title = img.dataset.title;
      const fig = img.closest(".stamp");
      fig.classList.remove("missing");
      fig.querySelector(".note").textContent = "";
      img.onerror = () => {
        fig.classList.add("missing");
        fig.querySelector(".note").textContent = "no cutout";
      };
      img.onload = () => {
        fig.querySelector(".scale").textContent = `${img.naturalWidth}×${img.naturalHeight} px · ${item.pixel_scale ?? 1.01}″/px`;
      };
      img.src = cutoutUrl(item, title);
      images.push(img.decode().catch(() => null));
    }
    const legacy = $("legacy"), limg = $("legacy-img");
    legacy.hidden = true;
    if (item.legacy_survey) {
      limg.onload = () => { if ($("item").dataset.candid === item.candid) legacy.hidden = false; };
      limg.onerror = () => { legacy.hidden = true; };
      limg.src = item.legacy_survey;
    }
    const n = window.FinkPlot.lightcurve($("lightcurve"), item.lightcurve, $("lc-hover"));
    $("lightcurve").dataset.points = String(n);
    const legend = $("lc-legend");
    legend.textContent = "";
    for (const b of item.lightcurve.bands) {
      const span = document.createElement("span");
      span.style.color = b.colour; // CSSOM, allowed by the page's CSP (inline style attributes are not)
      span.textContent = `● ${b.name} `;
      legend.appendChild(span);
    }
    if (item.lightcurve.points) {
      const symbols = { negative: "○ negative", "negative flux": "○ negative flux", forced: "◆ forced", "upper limit": "▽ upper limit" };
      const span = document.createElement("span");
      span.className = "dim";
      span.textContent = (item.lightcurve.marks || ["upper limit"]).map((m) => symbols[m] || m)
        .concat(["◯ triggering detection"]).join(" · ");
      legend.appendChild(span);
    }
    $("lc-hover").textContent = `${item.lightcurve.points} points; hover one for its values`;
    const scores = Object.entries(item.scores);
    $("scores").innerHTML = scores.length
      ? scores.map(([m, p]) => row(`P(${m})`, `<b>${num(p, 2)}</b> <span class="dim">model ${esc(m)} v${esc(item.model_version[m] ?? "—")}</span>`)).join("")
      : row("models", "none yet (cold start)");
    $("why").innerHTML = row("strategy", esc(item.why.strategy)) + row("priority", num(item.why.priority)) +
      row("queued", esc((item.why.queued_at || "").slice(0, 19).replace("T", " ")) + " UTC");
    $("features").innerHTML = row("ra, dec", `${num(item.ra, 5)}, ${num(item.dec, 5)}`) +
      Object.entries(item.features).map(([k, v]) => row(k, num(v))).join("");
    $("history").innerHTML = item.history.length
      ? item.history.map((h) => row(h.timestamp.slice(0, 16).replace("T", " "), `${esc(h.kind)} <b>${esc(h.label || "—")}</b> by ${esc(h.labeller)} <span class="dim">candid ${esc(h.candid)}</span>`)).join("")
      : row("", '<span class="dim">none</span>');
    $("xmatch").innerHTML = row("", '<span class="dim">reading…</span>');
    fetch(`/api/item/${item.candid}/context`, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((ctx) => {
        if ($("item").dataset.candid !== item.candid) return;
        const entries = Object.entries(ctx.xmatch || {});
        $("xmatch").innerHTML = entries.length
          ? entries.map(([k, v]) => row(k, esc(typeof v === "object" ? Object.entries(v).map(([a, b]) => `${a}: ${b}`).join(", ") : v))).join("")
          : row("", '<span class="dim">not in the archive</span>');
        for (const [title, note] of Object.entries(ctx.notes || {})) {
          const fig = document.querySelector(`.stamp[data-title="${title}"]`);
          if (fig && note) { fig.classList.add("missing"); fig.querySelector(".note").textContent = note; }
        }
      })
      .catch(() => {});
    const key = pendingKey;
    pendingKey = null;
    Promise.all(images).then(() => {
      requestAnimationFrame(() => {
        if ($("item").dataset.candid !== item.candid) return; // another item came meanwhile
        window.finkvraTimes.push({ candid: item.candid, key: key, shown: performance.now() });
        $("item").dataset.shown = item.candid;
      });
    });
  }

  async function answer(key, at) {
    const item = held[0];
    if (key === "?") {
      $("help").hidden = !$("help").hidden;
      return;
    }
    $("help").hidden = true;
    if (key === "u") {
      try {
        const data = await post("/api/undo", {});
        if (!data.ok) return say(data.message, "warn");
        if (data.item) {
          held.unshift(data.item);
          while (held.length > 2) {
            const extra = held.pop();
            post("/api/release", { candids: [extra.candid] }).catch(() => {});
          }
          pendingKey = at;
          render();
          say(`undo: ${data.item.objectId} again, its label withdrawn`, "warn");
        } else say(data.message, "warn");
      } catch (e) { say(`undo failed: ${e.message}`, "error"); }
      return;
    }
    if (key === "w") return switchQueue(QUEUES[(QUEUES.indexOf(queue) + 1) % QUEUES.length]);
    if (!item || item.candid !== displayed) return; // nothing on screen to answer
    let action;
    if (LABELS[key]) action = post("/api/label", { candid: item.candid, label: LABELS[key], objectId: item.objectId });
    else if (key === "s") action = post("/api/skip", { candid: item.candid });
    else return say(`${key} is not a key here: press ? for help`, "error");
    held.shift();
    pendingKey = at;
    render();
    const what = LABELS[key] ? `labelled ${LABELS[key]}` : "skipped: back in the queue";
    action.then(() => say(`✓ ${item.objectId} ${what}`, "ok"), (e) => say(`${item.objectId} not ${what}: ${e.message}`, "error"));
    if (!held.length) await action.catch(() => {}); // a skipped item must not come straight back
    fill();
  }

  /* Work another queue: the items held go back where they waited. */
  async function switchQueue(name) {
    queue = name;
    queueSelect.value = name;
    localStorage.setItem("finkvra.queue", name);
    $("empty-queue").textContent = name;
    const back = held.splice(0, held.length).map((i) => i.candid);
    displayed = null;
    if (back.length) await post("/api/release", { candids: back }).catch(() => {});
    say(`now working the ${name} queue`, "");
    render();
    fill();
  }
  queueSelect.addEventListener("change", () => switchQueue(queueSelect.value));

  /* The stopping signal of each model and the queues' sizes, refreshed now and then. */
  async function refreshStatus() {
    try {
      const reply = await fetch("/api/status", { credentials: "same-origin" });
      if (!reply.ok) return;
      const data = await reply.json();
      $("model-status").innerHTML = data.messages.map((m) => `<li>${esc(m)}</li>`).join("");
      for (const option of queueSelect.options) {
        const n = data.waiting[option.value];
        option.textContent = option.textContent.replace(/\(\d+ waiting\)$/, `(${n} waiting)`);
      }
    } catch (e) { /* the next refresh tries again */ }
  }
  setInterval(refreshStatus, 30000);

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    if (ev.target.closest && ev.target.closest("input, select, textarea, dialog")) return;
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : null;
    if (!key || key === " ") return;
    ev.preventDefault();
    answer(key, ev.timeStamp); // the event's time, on the performance.now() clock
  });
  $("keys").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-key]");
    if (button) answer(button.dataset.key, ev.timeStamp);
  });
  for (const button of document.querySelectorAll("[data-stretch]")) {
    button.classList.toggle("on", button.dataset.stretch === stretch);
    button.addEventListener("click", () => {
      stretch = button.dataset.stretch;
      localStorage.setItem("finkvra.stretch", stretch);
      for (const b of document.querySelectorAll("[data-stretch]")) b.classList.toggle("on", b === button);
      if (held[0]) show(held[0]);
      preload(held[1]);
    });
  }
  for (const img of document.querySelectorAll(".frame img")) {
    img.addEventListener("click", () => {
      $("zoom-img").src = img.src;
      const item = held[0];
      $("zoom-title").textContent = `${item ? item.objectId : ""} ${img.dataset.title || "Legacy Survey"} · ${stretch}`;
      $("zoom").showModal();
    });
  }
  // keep the leases of the items on the page while the labeller looks at them
  const leaseMs = 1000 * (+$("status").dataset.leaseSeconds || 600);
  setInterval(() => {
    if (held.length) post("/api/renew", { candids: held.map((i) => i.candid) }).catch(() => {});
  }, Math.max(1000, leaseMs / 3));
  setInterval(() => {
    if (!held.length) fill();
  }, 5000);
  window.addEventListener("pagehide", () => {
    if (!held.length) return;
    const body = JSON.stringify({ candids: held.map((i) => i.candid), csrf: csrf });
    navigator.sendBeacon("/api/release", new Blob([body], { type: "application/json" }));
  });
  fill().then(() => {
    if (held.length) say("ready: press a key (? for help)", "");
  });
})();
