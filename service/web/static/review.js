/* The review page: a relabel button posts a correction, which supersedes the earlier label. */
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  document.getElementById("review").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-label]");
    if (!button) return;
    const tr = button.closest("tr");
    const status = document.getElementById("status");
    try {
      const reply = await fetch("/api/relabel", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ candid: tr.dataset.candid, label: button.dataset.label, objectId: tr.dataset.object }),
      });
      const data = await reply.json();
      if (!reply.ok) throw new Error(data.error || `HTTP ${reply.status}`);
      tr.querySelector(".lbl").textContent = button.dataset.label;
      for (const b of tr.querySelectorAll("button[data-label]")) b.disabled = b === button;
      tr.classList.add("corrected");
      status.textContent = `corrected ${tr.dataset.object}: now ${button.dataset.label}`;
    } catch (e) {
      status.textContent = `not corrected: ${e.message}`;
    }
  });
})();
