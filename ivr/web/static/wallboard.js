// The supervisors' wallboard, one screen: every queue as a tile, every
// agent once in a grid (colour by state, time in state), the calls in
// progress, the figures' window and when they were last updated; the
// actions (pause with a reason, penalty, remove, add from a list of agents)
// in a menu.  Drawn from the snapshots the server pushes; each part is
// redrawn only when what it shows changed, so a snapshot that changes
// nothing moves nothing, and the times count up every second in between.
"use strict";
(() => {
  const {el, t, word, number, api, live, now, seconds, percent, time, shortTime, weekdayTime, tick, toast} = IVR;
  const SL_TARGET = Number(document.body.dataset.slTarget || 0.8);  // below: breached
  const DEFAULT_THRESHOLD = 20;  // s; a queue's own service-level threshold wins
  const STATES = ["available", "ringing", "in_call", "busy", "paused", "unavailable"];
  const CALLERS_SHOWN = 4;  // per queue tile; the rest as "+N"
  const CALLS_SHOWN = 12, ABANDONED_SHOWN = 6;
  const result = document.getElementById("action-result");
  const box = document.getElementById("queues");
  const grid = document.getElementById("agents");
  const menu = document.getElementById("menu");
  const tiles = new Map();  // queue name -> tile
  const cells = new Map();  // interface -> agent cell
  const drawn = new WeakMap();  // node -> signature of what it shows
  let latest = {queues: {}, agents: {}, stats: {}};
  let pauseReasons = [];
  let directory = null;  // the agents of the CRM for the picker: {at, agents}

  // Redraw `node`'s content from build() only when `value` changed (values leave out what ticks).
  function slot(node, value, build) {
    const sig = JSON.stringify(value);
    if (drawn.get(node) === sig) return false;
    drawn.set(node, sig);
    node.replaceChildren(...[build()].flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
    return true;
  }

  // Put `children` in `parent` in this order, touching the DOM only if the order differs.
  function arrange(parent, children) {
    const current = [...parent.children];
    if (current.length === children.length && current.every((node, i) => node === children[i])) return;
    parent.replaceChildren(...children);
  }

  const fill = (node, ...children) => node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  const queueName = (name) => word("queue", name);
  const stateWord = (state) => t(`state.${state}`);
  const reasonWord = (reason) => word("pause_reason", reason);

  async function act(path, body, done) {
    toast(result, t("action.sending"), "quiet");
    try {
      await api("POST", path, body);
      toast(result, done, "ok");
      if (menu.open) menu.close();
    } catch (error) {
      toast(result, t("action.failed", {error: error.message}), "error");
    }
  }

  function slClass(figures) {
    if (!figures || figures.service_level === null || figures.service_level === undefined) return "sl-none";
    return figures.service_level < SL_TARGET ? "sl-breached" : "sl-ok";
  }

  function figure(label, value, extra) {
    return el("div", {class: `figure ${extra || ""}`}, el("b", {}, value), el("span", {}, label));
  }

  function figureCells(f, short) {
    f = f || {};
    const k = short ? "figure.short" : "figure";
    return [
      figure(f.service_level_seconds ? t(`${k}.service_level_within`, {seconds: Math.round(f.service_level_seconds)})
        : t(`${k}.service_level`), percent(f.service_level), `sl ${slClass(f)}`),
      figure(t(`${k}.answered`), f.answered ?? 0),
      figure(t(`${k}.abandoned`), `${f.abandoned ?? 0}${f.abandon_rate ? ` · ${percent(f.abandon_rate)}` : ""}`,
             f.abandoned ? "warn" : ""),
      figure(t(`${k}.average_wait`), seconds(f.average_wait)),
      figure(t(`${k}.average_talk`), seconds(f.average_talk)),
    ];
  }

  function chips(counts, withLoggedIn) {
    return [withLoggedIn ? el("span", {class: "chip"}, t("count.logged_in", {n: counts.logged_in ?? 0})) : null,
            STATES.map((s) => el("span", {class: `chip state-${s}${counts[s] ? "" : " none"}`, dataset: {count: s}},
                                 `${stateWord(s)} ${counts[s] ?? 0}`))];
  }

  // --- one queue ---

  function makeTile(name) {
    const tile = {
      name, threshold: DEFAULT_THRESHOLD,
      head: el("h2", {title: name}), sl: el("div"), line: el("p", {class: "qline"}),
      figures: el("div", {class: "figures"}), agents: el("p", {class: "agents"}),
      callers: el("ol", {class: "callers"}), more: el("p", {class: "more quiet"}),
    };
    tile.root = el("article", {class: "queue", "data-queue": name},
      el("div", {class: "qhead"}, tile.head, tile.sl), tile.line, tile.figures, tile.agents, tile.callers, tile.more,
      el("button", {type: "button", class: "add-agent", onclick: () => openQueueMenu(name)}, t("menu.add_agent")));
    return tile;
  }

  function drawTile(tile, queue, figures) {
    tile.threshold = (figures && figures.service_level_seconds) || DEFAULT_THRESHOLD;
    tile.root.className = `queue ${slClass(figures)}`;
    slot(tile.head, [tile.name], () => queueName(tile.name));
    tile.sl.className = `sl-big ${slClass(figures)}`;
    tile.sl.title = figures && figures.service_level_seconds
      ? t("figure.service_level_within", {seconds: Math.round(figures.service_level_seconds)}) : t("figure.service_level");
    slot(tile.sl, [figures ? figures.service_level : null], () => percent(figures ? figures.service_level : null));
    const oldest = queue.callers.length ? Math.min(...queue.callers.map((c) => c.since)) : null;
    slot(tile.line, [queue.callers_waiting, oldest], () => [
      el("span", {class: `waiting${queue.callers_waiting ? " some" : ""}`, dataset: {count: queue.callers_waiting}},
         t("queue.waiting", {n: queue.callers_waiting})),
      el("span", {class: "quiet longest"}, t("queue.longest"), " ",
         oldest === null ? "–" : el("span", {dataset: {since: oldest}}, seconds(now() - oldest)))]);
    slot(tile.figures, figures ? {...figures, segments: null} : null, () => figureCells(figures, true).slice(1));
    slot(tile.agents, queue.agents, () => [
      el("span", {class: "chip state-available"}, `${stateWord("available")} ${queue.agents.available}`),
      el("span", {class: "chip state-in_call"}, `${stateWord("in_call")} ${queue.agents.in_call}`),
      el("span", {class: "chip state-paused"}, `${stateWord("paused")} ${queue.agents.paused}`),
      el("span", {class: "chip"}, t("count.logged_in", {n: queue.agents.logged_in}))]);
    const shown = queue.callers.slice(0, CALLERS_SHOWN);
    slot(tile.callers, shown.map((c) => [c.uniqueid, c.position, c.number, c.segment, c.priority, c.since]), () =>
      shown.map((c) => el("li", {},
        el("span", {class: "caller", title: c.priority ? t("queue.priority", {n: c.priority}) : null},
           number(c.number), c.segment ? el("span", {class: "seg"}, c.segment) : null),
        el("span", {class: "bar"}, el("span", {dataset: {waitSince: c.since}})),
        el("span", {class: "wait", dataset: {since: c.since}}, seconds(now() - c.since)))));
    const hidden = queue.callers.length - shown.length;
    tile.more.textContent = hidden > 0 ? t("more", {n: hidden}) : "";
    tile.more.hidden = hidden <= 0;
  }

  // --- the agents, each once ---

  function detailOf(agent) {
    const call = (agent.calls || [])[0];
    if (call) return `${number(call.number)} · ${queueName(call.queue)}`;
    if (agent.state === "ringing") return agent.ringing.map(queueName).join(", ");
    if (agent.paused || agent.paused_in.length) {
      const reason = agent.paused_reason ? reasonWord(agent.paused_reason) : t("pause.no_reason");
      return agent.paused ? reason : t("agent.paused_in", {queues: agent.paused_in.map(queueName).join(", ")});
    }
    return "";
  }

  function steadyAgent(agent) {
    const {for: _f, calls, ...rest} = agent;
    return {...rest, calls: (calls || []).map(({talking_for: _t, ...call}) => call)};
  }

  function drawAgents(agents) {
    const order = [];
    const seen = new Set();
    const counts = {logged_in: 0};
    let answered = 0;
    for (const agent of Object.values(agents)) {
      seen.add(agent.interface);
      counts[agent.state] = (counts[agent.state] || 0) + 1;
      if (agent.state !== "unavailable") counts.logged_in += 1;
      answered += agent.answered || 0;
      let cell = cells.get(agent.interface);
      if (!cell) {
        cell = el("button", {type: "button", class: "agent", "data-interface": agent.interface,
                             onclick: () => openAgentMenu(agent.interface)});
        cells.set(agent.interface, cell);
      }
      if (slot(cell, steadyAgent(agent), () => [
        el("span", {class: "name"}, agent.name),
        el("span", {class: "line"}, el("span", {class: "word"}, stateWord(agent.state)),
           el("span", {class: "since", dataset: {since: agent.since}}, seconds(now() - agent.since))),
        el("span", {class: "detail"}, detailOf(agent) || "\u00a0"),
        el("span", {class: "answered", title: t("agent.answered_title")}, agent.answered ?? 0)])) {
        cell.className = `agent state-${agent.state}${agent.paused_in.length && !agent.paused ? " partly-paused" : ""}`;
        cell.dataset.state = agent.state;
        cell.title = `${agent.name} · ${agent.interface}`;
      }
      order.push(cell);
    }
    for (const key of [...cells.keys()]) if (!seen.has(key)) cells.delete(key);
    arrange(grid, order);
    return {counts, answered};
  }

  // --- the menus ---

  function optionList(values, label, selected) {
    return values.map((value) => el("option", {value, selected: value === selected}, label(value)));
  }

  function pauseSection(agent) {
    const name = agent.name;
    if (agent.paused || agent.paused_in.length) {
      return el("div", {class: "menu-row"},
        el("span", {}, agent.paused ? t("agent.paused_since", {reason: agent.paused_reason ?
          reasonWord(agent.paused_reason) : t("pause.no_reason")}) : detailOf(agent)),
        el("button", {type: "button", class: "primary", onclick: () => act("/actions/pause",
          {interface: agent.interface, paused: false}, t("action.done.unpause", {name}))}, t("pause.resume")));
    }
    const reason = el("select", {name: "reason"}, optionList(pauseReasons, reasonWord));
    const where = el("select", {name: "queue"}, el("option", {value: ""}, t("menu.all_queues")),
      agent.queues.map((q) => el("option", {value: q.queue}, queueName(q.queue))));
    return el("form", {class: "menu-row pause", onsubmit: (event) => {
      event.preventDefault();
      const body = {interface: agent.interface, paused: true, reason: reason.value};
      if (where.value) body.queue = where.value;
      act("/actions/pause", body, t("action.done.pause", {name, reason: reasonWord(reason.value)}));
    }}, el("label", {}, t("pause.reason"), " ", reason), el("label", {}, t("menu.where"), " ", where),
       el("button", {type: "submit", class: "primary"}, t("pause.pause")));
  }

  function membershipRows(agent) {
    return agent.queues.map((q) => {
      const penalty = el("input", {type: "number", min: "0", max: "1000", value: String(q.penalty ?? 0),
                                   class: "penalty", "aria-label": t("menu.penalty")});
      const fixed = q.membership === "static";  // from queues.conf: Asterisk removes only dynamic members
      const remove = el("button", {type: "button", class: "danger", disabled: fixed,
                                   title: fixed ? t("menu.static_member") : null, onclick: () => {
        if (!remove.dataset.armed) {  // a second click confirms
          remove.dataset.armed = "1";
          remove.textContent = t("menu.remove_confirm");
          return;
        }
        act("/actions/remove", {queue: q.queue, interface: agent.interface},
            t("action.done.remove", {name: agent.name, queue: queueName(q.queue)}));
      }}, t("menu.remove"));
      return el("tr", {dataset: {queue: q.queue}},
        el("td", {}, queueName(q.queue)),
        el("td", {}, el("span", {class: `chip state-${q.state}`}, stateWord(q.state)),
           q.paused && q.state !== "paused" ? el("span", {class: "chip state-paused"}, stateWord("paused")) : null),
        el("td", {class: "num"}, q.answered),
        el("td", {}, el("form", {class: "penalty-form", onsubmit: (event) => {
          event.preventDefault();
          act("/actions/penalty", {interface: agent.interface, penalty: Number(penalty.value || 0), queue: q.queue},
              t("action.done.penalty", {name: agent.name, queue: queueName(q.queue), penalty: penalty.value || 0}));
        }}, penalty, el("button", {type: "submit"}, t("menu.set")))),
        el("td", {}, remove));
    });
  }

  function openAgentMenu(interfaceName) {
    const agent = latest.agents[interfaceName];
    if (!agent) return;
    const others = Object.keys(latest.queues).filter((q) => !agent.queues.some((m) => m.queue === q));
    const queue = el("select", {name: "queue"}, optionList(others, queueName));
    const penalty = el("input", {type: "number", min: "0", max: "1000", value: "0", class: "penalty",
                                 "aria-label": t("menu.penalty")});
    fill(menu,
      el("h3", {}, agent.name, " ", el("small", {class: "quiet"}, agent.interface)),
      el("p", {class: "menu-state", dataset: {interface: agent.interface}}),
      pauseSection(agent),
      el("table", {class: "memberships compact"},
        el("thead", {}, el("tr", {}, [t("menu.queue"), t("menu.state"), t("menu.answered"), t("menu.penalty"), ""]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, membershipRows(agent))),
      others.length ? el("form", {class: "menu-row add", onsubmit: (event) => {
        event.preventDefault();
        act("/actions/add", {queue: queue.value, interface: agent.interface, penalty: Number(penalty.value || 0),
                             name: agent.name},
            t("action.done.add", {name: agent.name, queue: queueName(queue.value)}));
      }}, el("label", {}, t("menu.add_to"), " ", queue), el("label", {}, t("menu.penalty"), " ", penalty),
         el("button", {type: "submit"}, t("menu.add"))) : null,
      el("div", {class: "menu-foot"}, el("button", {type: "button", onclick: () => menu.close()}, t("menu.close"))));
    drawMenuState();
    menu.showModal();
  }

  async function agentsOfCrm() {
    if (directory && Date.now() - directory.at < 60000) return directory.agents;
    const {agents} = await api("GET", "/agents");
    directory = {at: Date.now(), agents};
    return agents;
  }

  async function openQueueMenu(name) {
    const members = new Set((latest.queues[name] || {members: []}).members.map((m) => m.interface));
    const picker = el("select", {name: "agent", required: true});
    const penalty = el("input", {type: "number", min: "0", max: "1000", value: "0", class: "penalty",
                                 "aria-label": t("menu.penalty")});
    const status = el("p", {class: "quiet"}, t("menu.loading"));
    const submit = el("button", {type: "submit", class: "primary", disabled: true}, t("menu.add"));
    fill(menu,
      el("h3", {}, t("menu.add_to_queue", {queue: queueName(name)})),
      el("form", {class: "menu-row add", onsubmit: (event) => {
        event.preventDefault();
        const chosen = picker.selectedOptions[0];
        if (!chosen || !chosen.value) return;
        act("/actions/add", {queue: name, interface: chosen.value, penalty: Number(penalty.value || 0),
                             name: chosen.dataset.name},
            t("action.done.add", {name: chosen.dataset.name, queue: queueName(name)}));
      }}, el("label", {}, t("menu.agent"), " ", picker), el("label", {}, t("menu.penalty"), " ", penalty), submit),
      status,
      el("div", {class: "menu-foot"}, el("button", {type: "button", onclick: () => menu.close()}, t("menu.close"))));
    menu.showModal();
    try {
      const candidates = (await agentsOfCrm()).filter((a) => !members.has(a.interface))
        .sort((a, b) => a.name.localeCompare(b.name, IVR.lang));
      picker.replaceChildren(...candidates.map((a) => el("option", {value: a.interface, dataset: {name: a.name}},
        `${a.name} · ${a.interface}${a.team ? ` · ${a.team}` : ""}`)));
      status.textContent = candidates.length ? "" : t("menu.nobody_to_add");
      submit.disabled = !candidates.length;
    } catch (error) {
      status.textContent = t("action.failed", {error: error.message});
    }
  }

  function drawMenuState() {
    const line = menu.querySelector(".menu-state");
    if (!line) return;
    const agent = latest.agents[line.dataset.interface];
    if (!agent) { line.textContent = t("agent.gone"); return; }
    slot(line, steadyAgent(agent), () => [
      el("span", {class: `chip state-${agent.state}`}, stateWord(agent.state)), " ",
      el("span", {dataset: {since: agent.since}}, seconds(now() - agent.since)), " ",
      el("span", {class: "quiet"}, detailOf(agent))]);
  }

  // --- the whole board ---

  const totals = {head: el("h2"), figures: el("div", {class: "figures"}), now: el("div", {class: "agents"})};
  document.getElementById("totals").replaceChildren(totals.head, totals.figures, totals.now);

  function windowText(stats, at) {
    const span = stats.window_seconds || 0;
    const length = span % 3600 === 0 ? t("span.hours", {n: span / 3600}) : t("span.minutes", {n: Math.round(span / 60)});
    const start = stats.window_start;
    const from = start ? (now() - start < 20 * 3600 ? shortTime(start) : weekdayTime(start)) : "–";
    return [el("span", {}, t("wallboard.window", {length, from})), " · ",
            el("span", {class: "updated"}, t("wallboard.updated", {time: time(at)}))];
  }

  function draw(message) {
    const state = message.queues || {};
    const queues = state.queues || {};
    const agents = state.agents || {};
    const stats = message.stats || {};
    const statsQueues = stats.queues || {};
    latest = {queues, agents, stats};

    const {counts, answered} = drawAgents(agents);
    const waiting = Object.values(queues).reduce((n, q) => n + q.callers_waiting, 0);
    const longest = Math.max(0, ...Object.values(queues).map((q) => q.longest_wait || 0));
    slot(totals.figures, stats.total || null, () => figureCells(stats.total, false));
    slot(totals.now, [waiting, Math.round(longest), counts], () => [
      el("span", {class: `chip${waiting ? " waiting-now" : ""}`}, t("queue.waiting", {n: waiting})),
      chips(counts, true)]);
    document.getElementById("agents-sum").textContent =
      t("wallboard.agents_sum", {n: Object.keys(agents).length, answered});

    const order = [];
    for (const [name, queue] of Object.entries(queues)) {
      let tile = tiles.get(name);
      if (!tile) tiles.set(name, tile = makeTile(name));
      drawTile(tile, queue, statsQueues[name]);
      order.push(tile.root);
    }
    for (const name of [...tiles.keys()]) if (!(name in queues)) tiles.delete(name);
    arrange(box, order);

    const calls = [...(state.calls || [])].sort((a, b) => a.since - b.since);
    const callRows = calls.slice(0, CALLS_SHOWN);
    const nameOf = (call) => (agents[call.interface] || {}).name || call.member_name || call.interface;
    slot(document.querySelector("#calls tbody"), callRows.map((c) => [c.uniqueid, nameOf(c), c.number, c.queue,
                                                                       c.segment, c.since]), () =>
      callRows.map((c) => el("tr", {dataset: {uniqueid: c.uniqueid}},
        el("td", {}, nameOf(c)),
        el("td", {}, number(c.number), c.segment ? el("span", {class: "seg"}, c.segment) : null),
        el("td", {}, queueName(c.queue)),
        el("td", {class: "num", dataset: {since: c.since}}, seconds(now() - c.since)))));
    document.getElementById("calls-count").textContent = calls.length ? String(calls.length) : "";
    const moreCalls = document.getElementById("calls-more");
    moreCalls.hidden = calls.length <= CALLS_SHOWN;
    moreCalls.textContent = t("more", {n: calls.length - CALLS_SHOWN});
    if (!calls.length) slot(document.querySelector("#calls tbody"), "none", () =>
      el("tr", {}, el("td", {colspan: "4", class: "quiet"}, t("wallboard.no_calls"))));

    const segments = Object.entries(stats.segments || {});
    slot(document.querySelector("#segments tbody"), segments, () => segments.map(([segment, f]) =>
      el("tr", {class: slClass(f)},
        el("td", {}, segment === "unknown" ? t("segment.unknown") : t("segment.name", {segment})),
        el("td", {class: "num sl"}, percent(f.service_level)), el("td", {class: "num"}, f.answered),
        el("td", {class: "num"}, f.abandoned, f.abandon_rate ? ` · ${percent(f.abandon_rate)}` : ""),
        el("td", {class: "num"}, seconds(f.average_wait)))));

    const abandoned = stats.abandoned_calls || [];
    const abandonedRows = abandoned.slice(0, ABANDONED_SHOWN);
    slot(document.querySelector("#abandoned tbody"), abandonedRows, () => abandonedRows.map((c) => el("tr", {},
      el("td", {}, shortTime(c.at)), el("td", {}, queueName(c.queue)), el("td", {}, number(c.number)),
      el("td", {class: "num"}, seconds(c.wait)), el("td", {}, word("abandon_reason", c.reason)))));
    document.getElementById("abandoned-count").textContent = abandoned.length ? String(abandoned.length) : "";

    slot(document.getElementById("window"), [stats.window_seconds, stats.window_start, Math.floor(message.at || 0)],
         () => windowText(stats, message.at || now()));
    const ami = message.ami || {};
    const amiNode = document.getElementById("ami");
    amiNode.textContent = ami.connected ? t("ami.connected") : t("ami.down", {error: ami.last_error || t("ami.not_connected")});
    amiNode.className = `link ${ami.connected ? "up" : "down"}`;
    if (menu.open) drawMenuState();
    animate();
  }

  // Between snapshots: waits and times in state count up, wait bars grow (red past the queue's threshold).
  function animate() {
    tick(document.body);
    const t0 = now();
    for (const tile of tiles.values()) {
      const bars = [...tile.callers.querySelectorAll("[data-wait-since]")];
      const waits = bars.map((b) => Math.max(0, t0 - Number(b.dataset.waitSince)));
      const scale = Math.max(2 * tile.threshold, ...waits);
      bars.forEach((bar, i) => {
        bar.style.width = `${Math.min(100, (100 * waits[i]) / scale)}%`;
        bar.parentNode.classList.toggle("long", waits[i] > tile.threshold);
      });
    }
  }

  IVR.ready.then((me) => {
    pauseReasons = me.pause_reasons || [];
    totals.head.textContent = t("wallboard.all_queues");
    setInterval(animate, 1000);
    live("wallboard", (message) => { if (message.type === "wallboard") draw(message); });
  }).catch((error) => { toast(result, t("action.failed", {error: error.message}), "error"); });
})();
