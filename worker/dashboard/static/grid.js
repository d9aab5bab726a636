// The line view: one tile per camera (overlay, verdict, score trend against the threshold, fps, lag)
// and the alarm list, kept live by server-sent events from /api/events.
"use strict";
const IMAGE_REFRESH_MS = 1000;  // a tile's picture changes at most once a second (each is a Kafka fetch)
const HISTORY_S = 300;
const tiles = new Map();
let clockSkew = 0;  // server clock minus this browser's: trends are drawn on the server's time
const serverNow = () => Date.now() / 1000 + clockSkew;

function tile(cameraId) {
  if (tiles.has(cameraId)) return tiles.get(cameraId);
  const t = {img: LW.el("img", {alt: cameraId}), canvas: LW.el("canvas", {width: 240, height: 48}),
             verdict: LW.el("span", {class: "verdict"}), score: LW.el("span", {class: "score"}),
             rate: LW.el("span", {class: "dim"}), history: [], frameId: null, shownAt: 0};
  t.node = LW.el("a", {class: "tile", id: "tile-" + cameraId, "data-camera": cameraId},
    LW.el("div", {class: "row"}, LW.el("b", {}, cameraId), t.verdict), t.img,
    LW.el("div", {class: "row"}, t.score, t.rate), t.canvas);
  const grid = document.getElementById("grid");
  const after = [...grid.children].find(n => n.dataset.camera > cameraId);
  grid.insertBefore(t.node, after || null);
  document.getElementById("empty").hidden = true;
  tiles.set(cameraId, t);
  return t;
}

function drawTrend(t) {
  const ctx = t.canvas.getContext("2d"), w = t.canvas.width, h = t.canvas.height;
  const now = serverNow();
  t.history = t.history.filter(p => p[0] >= now - HISTORY_S);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#d29922"; ctx.setLineDash([4, 3]); ctx.beginPath();  // threshold: 0.5 on the normalised score
  ctx.moveTo(0, h / 2); ctx.lineTo(w, h / 2); ctx.stroke(); ctx.setLineDash([]);
  ctx.strokeStyle = "#8ab4f8"; ctx.beginPath();
  t.history.forEach((p, i) => {
    const x = w - (now - p[0]) / HISTORY_S * w, y = h - p[1] * h;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  for (const p of t.history) {  // a dot per result: a lone point is visible too
    ctx.fillStyle = p[2] === "anomalous" ? "#ff7b72" : "#8ab4f8";
    ctx.fillRect(w - (now - p[0]) / HISTORY_S * w - 1.5, h - p[1] * h - 1.5, 3, 3);
  }
}

// The camera's clock against the broker's, shown when it is off by 2 s or more (skew includes transit).
function cameraClock(skew) {
  if (skew === null || skew === undefined || Math.abs(skew) < 2) return "";
  return ", camera clock " + (skew < 0 ? "+" : "-") + Math.abs(skew).toFixed(1) + " s";
}

function showCamera(entry, full) {
  const t = tile(entry.camera_id);
  t.rate.textContent = entry.fps.toFixed(1) + " fps, lag " + (entry.lag === null ? "-" : entry.lag);
  if (entry.latest) {
    const r = entry.latest;
    t.node.className = "tile " + r.verdict;
    t.node.href = LW.frameUrl(r.camera_id, r.frame_id);
    t.node.dataset.frame = r.frame_id;
    t.verdict.textContent = r.verdict;
    t.score.textContent = "score " + r.score.toFixed(3) + (r.raw_score === null ? "" : " (raw " + r.raw_score.toFixed(3) + ")") +
      (r.part_id ? ", part " + r.part_id : "") + cameraClock(r.clock_skew_s);
    if (entry.history) t.history = full ? entry.history : t.history.concat(entry.history);
    if (r.frame_id !== t.frameId && Date.now() - t.shownAt >= IMAGE_REFRESH_MS) {
      t.frameId = r.frame_id; t.shownAt = Date.now();
      t.img.src = LW.overlayUrl(r.camera_id, r.frame_id);
    }
    drawTrend(t);
  }
}

function alarmItem(a) {
  const cls = a.acked_by ? "acked" : (a.silenced_until ? "silenced" : "open");
  const link = a.frame_id && a.camera_id ? LW.el("a", {href: LW.frameUrl(a.camera_id, a.frame_id) +
    (a.result_ref ? "?partition=" + a.result_ref[0] + "&offset=" + a.result_ref[1] : "")}, "frame") : "";
  const state = a.acked_by ? "acknowledged by " + a.acked_by : (a.silenced_until ? "silenced until " + a.silenced_until.slice(11, 19) : "open");
  const actions = LW.el("div", {class: "actions"});
  if (!a.acked_by) actions.append(LW.el("button", {class: "ack", onclick: () => act("/api/alarms/" + encodeURIComponent(a.alarm_id) + "/ack", {})}, "Acknowledge"));
  if (a.camera_id && !a.silenced_until) actions.append(LW.el("button", {class: "silence", onclick: () => act("/api/silences", {camera_id: a.camera_id, minutes: 30})}, "Silence camera 30 min"));
  if (a.camera_id && a.silenced_until) actions.append(LW.el("button", {onclick: () => act("/api/silences/" + encodeURIComponent(a.camera_id) + "/lift", {})}, "Lift silence"));
  for (const b of actions.querySelectorAll("button")) b.disabled = !LW.canWrite;
  return LW.el("li", {class: cls, "data-alarm": a.alarm_id},
    LW.el("div", {}, LW.el("b", {}, a.rule), " ", a.camera_id || a.line_id, a.part_id ? " part " + a.part_id : "", " ", a.created_at.slice(11, 19), " ", link),
    LW.el("div", {class: "dim"}, a.message), LW.el("div", {class: "dim"}, state), actions);
}

async function act(url, body) {
  try { await LW.post(url, body); } catch (error) { alert(error.message); }
}

function showAlarms(alarms) {
  const list = document.getElementById("alarms");
  list.replaceChildren(...alarms.slice(0, 100).map(alarmItem));
  const open = alarms.filter(a => !a.acked_by && !a.silenced_until).length;
  document.getElementById("alarm-count").textContent = open + " open of " + alarms.length;
}

function apply(payload) {
  clockSkew = payload.now - Date.now() / 1000;
  for (const entry of payload.cameras) showCamera(entry, payload.full);
  if (payload.alarms) showAlarms(payload.alarms);
  window.lwLastUpdate = {at: Date.now(), version: payload.version};
  document.getElementById("status").textContent = "live, " + payload.cameras.length + " cameras, lag " + payload.lag_total;
}

const source = new EventSource("/api/events");
source.onmessage = event => apply(JSON.parse(event.data));
source.onerror = () => { document.getElementById("status").textContent = "reconnecting..."; };
source.addEventListener("ended", () => { source.close(); location.href = "/login?next=/"; });  // logged out
setInterval(() => tiles.forEach(drawTrend), 5000);
