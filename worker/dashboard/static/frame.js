// The frame page: overlay, regions, instances, timings, versions, and the feedback buttons.
"use strict";
const cameraId = document.querySelector('meta[name="camera"]').content;
const frameId = document.querySelector('meta[name="frame"]').content;
const query = window.location.search;
let result = null;

function table(headers, rows) {
  return LW.el("table", {}, LW.el("tr", {}, ...headers.map(h => LW.el("th", {}, h))),
    ...rows.map(r => LW.el("tr", {}, ...r.map(c => LW.el("td", {}, c)))));
}
const box = b => b.x + "," + b.y + " " + b.w + "x" + b.h;

function show(r) {
  const details = document.getElementById("details");
  details.replaceChildren(
    LW.el("h3", {}, "Verdict"),
    table(["verdict", "score", "raw score", "threshold", "object", "captured", "processed"],
      [[r.verdict, r.score.toFixed(3), r.raw_score === null ? "-" : r.raw_score.toFixed(3), r.threshold, r.object_name, r.captured_at, r.processed_at]]),
    LW.el("h3", {}, "Regions (" + r.regions.length + (r.regions.length > 12 ? ", the 12 largest" : "") + ")"),
    table(["box", "area", "peak", "mean"], r.regions.slice(0, 12).map(g => [box(g.box), g.area, g.peak_score.toFixed(3), g.mean_score.toFixed(3)])),
    LW.el("h3", {}, "Instances (" + r.instances.length + ")"),
    table(["box", "area", "score", "tiles"], r.instances.map(i => [box(i.box), i.area, i.score.toFixed(3), i.tiles])),
    LW.el("h3", {}, "Timings (ms)"),
    table(Object.keys(r.timings_ms), [Object.values(r.timings_ms).map(v => v.toFixed(1))]),
    LW.el("h3", {}, "Versions"),
    table(["model", "profile", "prompt set", "threshold", "worker"],
      [[r.versions.model_fingerprint, r.versions.profile, r.versions.prompt_set, r.versions.threshold_version, r.worker_id]]),
    ...(r.traceability ? [LW.el("h3", {}, "Part"),
      table(["part", "recipe", "lot", "camera frame", "camera timestamp (ns)"],
        [[r.traceability.part_id, r.traceability.recipe, r.traceability.lot, r.traceability.frame_counter, r.traceability.hardware_timestamp_ns].map(v => v === null ? "-" : String(v))])] : []),
    ...(r.note ? [LW.el("p", {class: "dim"}, "note: " + r.note)] : []));
}

async function load() {
  document.getElementById("overlay").src = LW.overlayUrl(cameraId, frameId) + query;
  const response = await fetch("/api/results/" + encodeURIComponent(cameraId) + "/" + encodeURIComponent(frameId) + query);
  if (!response.ok) {
    document.getElementById("details").replaceChildren(LW.el("p", {}, "This result is no longer in the dashboard's memory."));
    return;
  }
  result = await response.json();
  show(result);
}

for (const button of document.querySelectorAll("#feedback button")) {
  button.disabled = !LW.canWrite;
  button.addEventListener("click", async () => {
    const status = document.getElementById("feedback-status");
    const params = new URLSearchParams(query);
    const body = {camera_id: cameraId, frame_id: frameId, label: button.dataset.label};
    if (params.has("partition")) { body.partition = Number(params.get("partition")); body.offset = Number(params.get("offset")); }
    try {
      const record = await LW.post("/api/feedback", body);
      status.textContent = "Saved: " + record.label.replace("_", " ") + " by " + record.by + " at " + record.at.slice(0, 19) + "Z";
      status.dataset.saved = record.label;
    } catch (error) { status.textContent = "Not saved: " + error.message; }
  });
}
if (!LW.canWrite) document.getElementById("feedback-status").textContent = "Read-only login: feedback needs the operator role.";
load();
