// Shared helpers of the pages: CSRF-protected writes, small DOM builders.
"use strict";
const LW = {
  csrf: document.querySelector('meta[name="csrf"]').content,
  canWrite: document.querySelector('meta[name="role"]').content === "operator",
  async post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": LW.csrf},
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
    return data;
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value; else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  },
  frameUrl(cameraId, frameId) { return "/frame/" + encodeURIComponent(cameraId) + "/" + encodeURIComponent(frameId); },
  overlayUrl(cameraId, frameId) {
    return "/api/frames/" + encodeURIComponent(cameraId) + "/" + encodeURIComponent(frameId) + "/overlay.jpg";
  },
};
