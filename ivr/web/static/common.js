// Shared by the pages: building DOM safely, calling the API with the CSRF
// token, the server's clock, and a live WebSocket that reconnects on its own.
"use strict";
const IVR = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const SESSION_ENDED = 4401;  // the server closed the socket: log in again
  const SILENCE = 45000;  // ms without any message (the server says "alive" every 15 s): reconnect
  let clockOffset = 0;  // server epoch seconds minus this browser's

  // el("div", {class: "x", onclick: f, style: {width: "5%"}, dataset: {id: 1}}, child, ...)
  // Text children become text nodes (never HTML); styles go through CSSOM, which the CSP allows.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (key === "style") Object.assign(node.style, value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "selected" || key === "checked" || key === "value") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
  }

  async function api(method, path, body) {
    const options = {method, headers: {"Accept": "application/json"}, credentials: "same-origin"};
    if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch("/api/v1" + path, options);
    if (response.status === 401) { toLogin(); throw new Error("logged out"); }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  // live("agent" | "wallboard", onMessage): messages as they come; after a
  // drop it reconnects with a growing, jittered delay and the server sends
  // the current state first, so the page never needs a reload.
  function live(feed, onMessage) {
    const link = document.getElementById("link");
    let delay = 500, socket = null, watchdog = null, retry = null;

    function status(text, up) { link.textContent = text; link.className = `link ${up ? "up" : "down"}`; }

    function arm() {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => { if (socket) socket.close(); }, SILENCE);
    }

    function connect() {
      clearTimeout(retry);
      retry = null;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const current = socket = new WebSocket(`${scheme}//${location.host}/ws?feed=${feed}`);
      let opened = false;
      current.onopen = () => { opened = true; delay = 500; status("live", true); arm(); };
      current.onmessage = (event) => {
        arm();
        const message = JSON.parse(event.data);
        if ((message.type === "wallboard" || message.type === "alive") && typeof message.at === "number") {
          clockOffset = message.at - Date.now() / 1000;
        }
        if (message.type !== "alive") onMessage(message);
      };
      current.onclose = async (event) => {
        if (current !== socket) return;
        clearTimeout(watchdog);
        socket = null;
        if (event.code === SESSION_ENDED) { toLogin(); return; }
        if (!opened) {  // refused at the handshake: logged out, or the server is down
          try { await api("GET", "/me"); } catch (error) { if (error.message === "logged out") return; }
        }
        const wait = delay * (0.75 + Math.random() / 2);
        status(`reconnecting in ${Math.ceil(wait / 1000)} s…`, false);
        retry = setTimeout(connect, wait);
        delay = Math.min(delay * 2, 10000);
      };
    }

    // back from sleep or offline: try at once rather than at the end of the backoff
    const soon = () => { if (retry !== null) { delay = 500; connect(); } };
    window.addEventListener("online", soon);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) soon(); });
    connect();
  }

  // now(): the server's clock (epoch seconds), as far as the last message tells.
  function now() { return Date.now() / 1000 + clockOffset; }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    const s = Math.max(0, Math.round(value));
    if (s >= 3600) return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
    return s >= 60 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : `${s}s`;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
  }

  function time(epochOrIso) {
    const date = typeof epochOrIso === "number" ? new Date(epochOrIso * 1000) : new Date(epochOrIso);
    return isNaN(date) ? "" : date.toLocaleTimeString();
  }

  // Elements with data-since (server epoch seconds) show the time since then, every second.
  function tick(root) {
    const t = now();
    for (const node of root.querySelectorAll("[data-since]")) {
      node.textContent = seconds(t - Number(node.dataset.since));
    }
  }

  return {csrf, el, api, live, now, seconds, percent, time, tick};
})();
