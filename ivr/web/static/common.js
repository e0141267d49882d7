// Shared by the pages: building DOM safely, calling the API with the CSRF
// token, and a live WebSocket that reconnects on its own.
"use strict";
const IVR = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(method, path, body) {
    const options = {method, headers: {"Accept": "application/json"}, credentials: "same-origin"};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRF-Token"] = csrf;
      options.body = JSON.stringify(body);
    }
    const response = await fetch("/api/v1" + path, options);
    if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function live(feed, onMessage) {
    const link = document.getElementById("link");
    let delay = 500;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(`${scheme}//${location.host}/ws?feed=${feed}`);
      socket.onopen = () => { delay = 500; link.textContent = "live"; link.className = "link up"; };
      socket.onmessage = (event) => onMessage(JSON.parse(event.data));
      socket.onclose = (event) => {
        link.textContent = "reconnecting…"; link.className = "link down";
        if (event.code === 1008 || event.code === 4401) { location.href = "/login"; return; }
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    const s = Math.round(value);
    return s >= 60 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : `${s}s`;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
  }

  function time(epochOrIso) {
    const date = typeof epochOrIso === "number" ? new Date(epochOrIso * 1000) : new Date(epochOrIso);
    return isNaN(date) ? "" : date.toLocaleTimeString();
  }

  return {csrf, el, api, live, seconds, percent, time};
})();
