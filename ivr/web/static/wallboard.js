// The supervisors' wallboard: every queue as it is now, from the snapshots
// the server pushes.  Each part of the page is redrawn only when what it
// shows changed, so a snapshot that changes nothing moves nothing and a
// button stays under the pointer; waits and pause times count up every
// second between snapshots.  Actions go to Asterisk through the API.
"use strict";
(() => {
  const {el, api, live, now, seconds, percent, time, tick} = IVR;
  const SL_TARGET = Number(document.body.dataset.slTarget || 0.8);  // below: breached
  const DEFAULT_THRESHOLD = 20;  // s; a queue's own service-level threshold wins
  const STATES = ["available", "ringing", "in_call", "busy", "paused", "unavailable"];
  const BUSIEST = {in_call: 0, ringing: 1, busy: 2, paused: 3, available: 4, unavailable: 5};
  const result = document.getElementById("action-result");
  const box = document.getElementById("queues");
  const tiles = new Map();  // queue name -> tile
  const drawn = new WeakMap();  // node -> signature of what it shows

  // What a member row shows, without the times that tick by themselves.
  function steady(member) {
    const {paused_for: _p, calls, ...rest} = member;
    return {...rest, calls: (calls || []).map(({talking_for: _t, ...call}) => call)};
  }

  // Redraw `node`'s content from build() only when `value` changed (values leave out what ticks).
  function slot(node, value, build) {
    const sig = JSON.stringify(value);
    if (drawn.get(node) === sig) return false;
    drawn.set(node, sig);
    node.replaceChildren(...[build()].flat(Infinity).filter(Boolean));
    return true;
  }

  // Put `children` in `parent` in this order, touching the DOM only if the order differs.
  function arrange(parent, children) {
    const current = [...parent.children];
    if (current.length === children.length && current.every((node, i) => node === children[i])) return;
    parent.replaceChildren(...children);
  }

  async function act(path, body) {
    result.textContent = "sending…";
    result.className = "quiet";
    try {
      const data = await api("POST", path, body);
      result.textContent = `${data.action}: ${data.message || "done"}`;
      result.className = "ok";
    } catch (error) {
      result.textContent = error.message;
      result.className = "error";
    }
  }

  function slClass(figures) {
    if (!figures || figures.service_level === null || figures.service_level === undefined) return "sl-none";
    return figures.service_level < SL_TARGET ? "sl-breached" : "sl-ok";
  }

  function label(state) { return state.replace("_", " "); }

  function figureCells(f) {
    f = f || {};
    return [
      el("div", {class: `figure ${slClass(f)}`}, el("b", {}, percent(f.service_level)),
         f.service_level_seconds ? `service level (${seconds(f.service_level_seconds)})` : "service level"),
      el("div", {class: "figure"}, el("b", {}, f.answered ?? 0), "answered"),
      el("div", {class: `figure ${f.abandoned ? "warn" : ""}`}, el("b", {}, f.abandoned ?? 0),
         `abandoned (${percent(f.abandon_rate)})`),
      el("div", {class: "figure"}, el("b", {}, seconds(f.average_wait)), "average wait"),
      el("div", {class: "figure"}, el("b", {}, seconds(f.average_talk)), "average talk"),
    ];
  }

  function segmentTable(segments) {
    if (!segments.length) return null;
    return el("table", {class: "segments"},
      el("thead", {}, el("tr", {}, ["segment", "service level", "answered", "abandoned", "avg wait", "avg talk"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, segments.map(([segment, f]) => el("tr", {class: slClass(f)},
        el("td", {}, segment), el("td", {class: "sl"}, percent(f.service_level)), el("td", {}, f.answered),
        el("td", {}, f.abandoned, f.abandon_rate ? ` (${percent(f.abandon_rate)})` : ""),
        el("td", {}, seconds(f.average_wait)), el("td", {}, seconds(f.average_talk))))));
  }

  function chips(counts) {
    return [el("span", {class: "chip"}, `logged in ${counts.logged_in ?? 0}`),
            STATES.map((s) => el("span", {class: `chip state-${s}${counts[s] ? "" : " none"}`}, `${label(s)} ${counts[s] ?? 0}`))];
  }

  // --- one queue ---

  function makeTile(name) {
    const tile = {
      name, threshold: DEFAULT_THRESHOLD, rows: new Map(),
      head: el("h2"), figures: el("div", {class: "figures"}), agents: el("p", {class: "agents"}),
      callers: el("ol", {class: "callers"}), segments: el("div"), members: el("tbody"),
    };
    tile.root = el("article", {class: "queue", "data-queue": name},
      tile.head, tile.figures, tile.agents, tile.callers, tile.segments,
      el("table", {class: "members"},
        el("thead", {}, el("tr", {}, ["agent", "state", "calls", "penalty", ""].map((h) => el("th", {}, h)))),
        tile.members),
      addForm(name));
    return tile;
  }

  function drawTile(tile, queue, figures) {
    tile.threshold = (figures && figures.service_level_seconds) || DEFAULT_THRESHOLD;
    tile.root.className = `queue ${slClass(figures)}`;
    const oldest = queue.callers.length ? Math.min(...queue.callers.map((c) => c.since)) : null;
    slot(tile.head, [queue.callers_waiting, oldest], () => [tile.name,
      el("span", {class: `waiting${queue.callers_waiting ? " some" : ""}`}, `${queue.callers_waiting} waiting`),
      el("span", {class: "quiet longest"}, " longest ",
         oldest === null ? "–" : el("span", {dataset: {since: oldest}}, seconds(now() - oldest)))]);
    const segments = figures ? Object.entries(figures.segments || {}) : [];
    slot(tile.figures, figures ? {...figures, segments: null} : null, () => figureCells(figures));
    slot(tile.agents, queue.agents, () => chips(queue.agents));
    const callers = queue.callers.map((c) => [c.uniqueid, c.position, c.number, c.segment, c.priority, c.since]);
    slot(tile.callers, callers, () => queue.callers.map((c) => el("li", {},
      el("span", {class: "caller"}, `${c.position}. `, c.number || "unknown", c.segment ? ` [${c.segment}]` : "",
         c.priority ? el("span", {class: "quiet"}, ` prio ${c.priority}`) : null),
      el("span", {class: "bar"}, el("span", {dataset: {waitSince: c.since}})),
      el("span", {class: "wait", dataset: {since: c.since}}, seconds(now() - c.since)))));
    slot(tile.segments, segments, () => segmentTable(segments));
    const seen = new Set();
    const rows = queue.members.map((member) => {
      seen.add(member.interface);
      let row = tile.rows.get(member.interface);
      if (!row) {
        row = el("tr", {class: "member", "data-interface": member.interface});
        tile.rows.set(member.interface, row);
      }
      if (slot(row, steady(member), () => memberCells(tile.name, member))) {
        row.className = `member ${member.state}`;
        row.dataset.state = member.state;
      }
      return row;
    });
    for (const key of [...tile.rows.keys()]) if (!seen.has(key)) tile.rows.delete(key);
    arrange(tile.members, rows);
  }

  function memberCells(queue, member) {
    const call = (member.calls || [])[0];
    let detail = null;
    if (member.paused) {
      detail = el("span", {class: "detail"}, member.paused_reason ? ` ${member.paused_reason}` : "",
        member.paused_since ? [" · ", el("span", {dataset: {since: member.paused_since}}, seconds(member.paused_for))] : "");
    } else if (call) {
      detail = el("span", {class: "detail"}, ` ${call.number || ""} · `,
        el("span", {dataset: {since: call.since}}, seconds(call.talking_for)));
    }
    return [
      el("td", {}, member.name),
      el("td", {class: `state ${member.state}`}, el("span", {class: `chip state-${member.state}`}, label(member.state)),
         member.paused && member.state !== "paused" ? el("span", {class: "chip state-paused"}, "paused") : null, detail),
      el("td", {}, member.calls_taken), el("td", {}, member.penalty),
      el("td", {class: "actions"},
        el("button", {type: "button", onclick: () => {
          if (member.paused) { act("/actions/pause", {interface: member.interface, paused: false, queue}); return; }
          const reason = prompt(`Pause reason for ${member.name}:`, "break");
          if (reason !== null) {
            act("/actions/pause", {interface: member.interface, paused: true, reason: reason.trim() || undefined, queue});
          }
        }}, member.paused ? "Unpause" : "Pause"),
        el("button", {type: "button", onclick: () => {
          const value = prompt(`Penalty for ${member.name} in ${queue}:`, String(member.penalty));
          if (value !== null && value.trim() !== "") {
            act("/actions/penalty", {interface: member.interface, penalty: Number(value), queue});
          }
        }}, "Penalty"),
        el("button", {type: "button", onclick: () => {
          if (confirm(`Remove ${member.name} from ${queue}?`)) act("/actions/remove", {queue, interface: member.interface});
        }}, "Remove")),
    ];
  }

  function addForm(queue) {
    const iface = el("input", {placeholder: "PJSIP/1001", size: "12", required: true, "aria-label": "interface"});
    const penalty = el("input", {type: "number", min: "0", value: "0", class: "penalty", "aria-label": "penalty"});
    return el("form", {class: "add", onsubmit: (event) => {
      event.preventDefault();
      act("/actions/add", {queue, interface: iface.value.trim(), penalty: Number(penalty.value || 0)});
    }}, "Add agent ", iface, " penalty ", penalty, el("button", {type: "submit"}, "Add"));
  }

  // --- the whole board ---

  const totals = {figures: el("div", {class: "figures"}), now: el("p", {class: "agents"}), segments: el("div")};
  document.getElementById("totals").replaceChildren(el("h2", {}, "All queues"), totals.figures, totals.now,
                                                    totals.segments);

  function draw(message) {
    const queues = (message.queues || {}).queues || {};
    const stats = message.stats || {};
    const statsQueues = stats.queues || {};
    slot(totals.figures, stats.total || null, () => figureCells(stats.total));
    const waiting = Object.values(queues).reduce((n, q) => n + q.callers_waiting, 0);
    const members = new Map();  // an agent in several queues counts once, in their busiest state
    for (const q of Object.values(queues)) {
      for (const m of q.members) {
        const before = members.get(m.interface);
        if (before === undefined || BUSIEST[m.state] < BUSIEST[before]) members.set(m.interface, m.state);
      }
    }
    const counts = {logged_in: [...members.values()].filter((s) => s !== "unavailable").length};
    for (const s of members.values()) counts[s] = (counts[s] || 0) + 1;
    slot(totals.now, [waiting, counts], () => [el("span", {class: `chip${waiting ? " waiting-now" : ""}`}, `${waiting} waiting`),
                                               chips(counts)]);
    slot(totals.segments, stats.segments || {}, () => segmentTable(Object.entries(stats.segments || {})));

    const order = [];
    for (const [name, queue] of Object.entries(queues)) {
      let tile = tiles.get(name);
      if (!tile) tiles.set(name, tile = makeTile(name));
      drawTile(tile, queue, statsQueues[name]);
      order.push(tile.root);
    }
    for (const name of [...tiles.keys()]) if (!(name in queues)) tiles.delete(name);
    arrange(box, order);

    slot(document.querySelector("#abandoned tbody"), stats.abandoned_calls || [], () =>
      (stats.abandoned_calls || []).map((c) => el("tr", {}, el("td", {}, time(c.at)), el("td", {}, c.queue),
        el("td", {}, c.segment || "–"), el("td", {}, c.number || "–"), el("td", {}, seconds(c.wait)),
        el("td", {}, c.reason || ""))));
    const ami = message.ami || {};
    const amiNode = document.getElementById("ami");
    amiNode.textContent = ami.connected ? "Asterisk connected" : `Asterisk: ${ami.last_error || "not connected"}`;
    amiNode.className = `link ${ami.connected ? "up" : "down"}`;
    animate();
  }

  // Between snapshots: waits and pause times count up, wait bars grow (red past the queue's threshold).
  function animate() {
    tick(document.body);
    const t = now();
    for (const tile of tiles.values()) {
      const bars = [...tile.callers.querySelectorAll("[data-wait-since]")];
      const waits = bars.map((b) => Math.max(0, t - Number(b.dataset.waitSince)));
      const scale = Math.max(2 * tile.threshold, ...waits);
      bars.forEach((bar, i) => {
        bar.style.width = `${Math.min(100, (100 * waits[i]) / scale)}%`;
        bar.parentNode.classList.toggle("long", waits[i] > tile.threshold);
      });
    }
  }

  setInterval(animate, 1000);
  live("wallboard", (message) => { if (message.type === "wallboard") draw(message); });
})();
