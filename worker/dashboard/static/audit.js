// The audit trail: every change of the control records, newest first, a page at a time (GET /api/audit?scope=...&skip=N).
"use strict";
const form = document.getElementById("filter"), scopeInput = document.getElementById("scope");
const body = document.querySelector("#trail tbody"), statusLine = document.getElementById("status");

function summary(record) {
  if (!record) return "-";
  const parts = [];
  for (const key of ["image_threshold", "pixel_threshold"]) if (record[key] !== undefined) parts.push(key + " " + record[key]);
  if (record.learning) parts.push("learning " + record.learning.frames + " frames @ " + record.learning.target_fpr);
  if (record.references) parts.push("bank v" + record.references.version);
  if (record.prompts) parts.push("prompts");
  return "v" + record.version + (parts.length ? ": " + parts.join(", ") : "");
}

function row(audit) {
  const details = LW.el("details", {}, LW.el("summary", {}, summary(audit.before) + " \u2192 " + summary(audit.after)),
    LW.el("pre", {}, JSON.stringify({before: audit.before || null, after: audit.after || null}, null, 1)));
  return LW.el("tr", {},
    LW.el("td", {}, (audit.logged_at || audit.at).replace("T", " ").slice(0, 19)), LW.el("td", {}, audit.scope),
    LW.el("td", {}, audit.version === undefined ? "deleted" : "v" + audit.version), LW.el("td", {}, audit.action),
    LW.el("td", {}, audit.by), LW.el("td", {}, audit.principal || "-"), LW.el("td", {}, (audit.changed || []).join(", ")),
    LW.el("td", {}, audit.reason || ""), LW.el("td", {}, details));
}

let skip = 0, total = 0, shown = 0;

async function load() {
  const scope = scopeInput.value.trim();
  const query = new URLSearchParams(scope ? {scope: scope, skip: skip} : {skip: skip});
  statusLine.textContent = "loading...";
  const response = await fetch("/api/audit?" + query, {credentials: "same-origin"});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { statusLine.textContent = data.error || ("HTTP " + response.status); return; }
  body.replaceChildren(...data.records.map(row));
  total = data.total; shown = data.records.length;
  statusLine.textContent = total ? (skip + 1) + "-" + (skip + shown) + " of " + total + " change(s)" : "0 change(s)";
  newer.disabled = skip === 0; older.disabled = skip + shown >= total;
  history.replaceState(null, "", scope ? "?scope=" + encodeURIComponent(scope) : location.pathname);
}

const newer = document.getElementById("newer"), older = document.getElementById("older");
newer.addEventListener("click", () => { skip = Math.max(0, skip - 200); load(); });
older.addEventListener("click", () => { skip += shown; load(); });
form.addEventListener("submit", (event) => { event.preventDefault(); skip = 0; load(); });
scopeInput.value = new URLSearchParams(location.search).get("scope") || "";
load();
