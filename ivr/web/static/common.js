// Shared by the pages: building DOM safely, calling the API with the CSRF
// token, the server's clock, a live WebSocket that reconnects on its own,
// and the words of the page's language (static/i18n/<lang>.json: nothing a
// person reads is written in the scripts), its dates in the contact
// center's time zone, numbers masked one way.
"use strict";
const IVR = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const version = (document.querySelector('meta[name="static-version"]') || {}).content || "";
  const lang = document.documentElement.lang || "en";
  const zone = document.body.dataset.timezone || undefined;
  const SESSION_ENDED = 4401;  // the server closed the socket: log in again
  const SILENCE = 45000;  // ms without any message (the server says "alive" every 15 s): reconnect
  let clockOffset = 0;  // server epoch seconds minus this browser's
  let words = {};

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

  // --- words ---

  // t("state.in_call"), t("wallboard.window", {hours: 24}): the text in the page's language.
  function t(key, values) {
    const text = words[key];
    if (text === undefined) return key;
    return values ? text.replace(/\{([a-z_]+)\}/g, (all, name) => (name in values ? String(values[name]) : all)) : text;
  }
  function has(key) { return key in words; }
  // A code's word when the catalogue has one (pause reasons, queue names), else the code as written.
  function word(prefix, code) {
    if (code === null || code === undefined || code === "") return "";
    return has(`${prefix}.${code}`) ? t(`${prefix}.${code}`) : String(code);
  }

  // --- numbers, times ---

  // Every phone number on the pages the same way: the last digits the server's masking keeps
  // (four of ten or more, two of six to nine), behind three dots; withheld and unknown in words.
  function number(value) {
    if (value === null || value === undefined) return t("number.unknown");
    const text = String(value).trim();
    const lowered = text.toLowerCase().replace(/[<>]/g, "");
    if (!text || lowered === "unknown") return t("number.unknown");
    if (lowered === "anonymous" || lowered === "withheld" || lowered === "restricted") return t("number.withheld");
    const body = text.replace(/[\s().-]/g, "").replace(/^\+/, "");
    if (!/^[\d*]+$/.test(body)) return "•••";
    const keep = body.length >= 10 ? 4 : body.length >= 6 ? 2 : 0;
    const tail = keep ? body.slice(-keep) : "";
    return /^\d+$/.test(tail) ? `•••${tail}` : "•••";
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
    if (response.status === 401) {
      toLogin();
      throw Object.assign(new Error(t("error.logged_out")), {loggedOut: true});
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  // live("agent" | "wallboard" | "agent&states=true", onMessage): messages as they come; after a
  // drop it reconnects with a growing, jittered delay and the server sends
  // the current state first, so the page never needs a reload.
  function live(feed, onMessage) {
    const link = document.getElementById("link");
    let delay = 500, socket = null, watchdog = null, retry = null;

    function status(text, up) {
      link.textContent = text;
      link.className = `link ${up ? "up" : "down"}`;
      link.dataset.up = up ? "1" : "0";
    }

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
      current.onopen = () => { opened = true; delay = 500; status(t("link.live"), true); arm(); };
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
          try { await api("GET", "/me"); } catch (error) { if (error.loggedOut) return; }
        }
        const wait = delay * (0.75 + Math.random() / 2);
        status(t("link.reconnecting", {seconds: Math.ceil(wait / 1000)}), false);
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

  // A duration as a clock reads: 0:07, 12:30, 1:02:03.
  function seconds(value) {
    if (value === null || value === undefined || isNaN(value)) return "–";
    const s = Math.max(0, Math.round(value));
    const mm = String(Math.floor(s / 60) % 60), ss = String(s % 60).padStart(2, "0");
    return s >= 3600 ? `${Math.floor(s / 3600)}:${mm.padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
  }

  function asDate(epochOrIso) {
    if (epochOrIso === null || epochOrIso === undefined || epochOrIso === "") return null;
    const date = typeof epochOrIso === "number" ? new Date(epochOrIso * 1000) : new Date(epochOrIso);
    return isNaN(date) ? null : date;
  }

  const formats = {};
  function format(kind) {
    if (!formats[kind]) {
      const options = {
        time: {hour: "2-digit", minute: "2-digit", second: "2-digit"},
        short: {hour: "2-digit", minute: "2-digit"},
        date: {day: "2-digit", month: "2-digit", year: "numeric"},
        datetime: {day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit"},
        weekday: {weekday: "short", hour: "2-digit", minute: "2-digit"},
      }[kind];
      try { formats[kind] = new Intl.DateTimeFormat(lang, {...options, timeZone: zone}); }
      catch (error) { formats[kind] = new Intl.DateTimeFormat(lang, options); }  // an unknown zone
    }
    return formats[kind];
  }
  function when(kind) { return (value) => { const date = asDate(value); return date ? format(kind).format(date) : ""; }; }
  const time = when("time"), shortTime = when("short"), date = when("date"), dateTime = when("datetime");
  const weekdayTime = when("weekday");

  // Elements with data-since (server epoch seconds) show the time since then, every second.
  function tick(root) {
    const t0 = now();
    for (const node of root.querySelectorAll("[data-since]")) {
      node.textContent = seconds(t0 - Number(node.dataset.since));
    }
  }

  // A short note in the corner (what an action did); it goes by itself.
  function toast(node, text, kind) {
    node.textContent = text;
    node.className = kind;
    clearTimeout(node.timer);
    if (kind !== "quiet") node.timer = setTimeout(() => { node.textContent = ""; }, 8000);
  }

  // The page's words, then `me` (the user, their agent, the pause reasons): pages start from this.
  const ready = Promise.all([
    fetch(`/static/i18n/${lang}.json?v=${version}`, {credentials: "same-origin"}).then((r) => r.json()),
    api("GET", "/me"),
  ]).then(([catalogue, me]) => { words = catalogue; return me; });

  return {csrf, lang, el, t, has, word, number, api, live, now, seconds, percent, time, shortTime, date,
          dateTime, weekdayTime, tick, toast, ready};
})();
