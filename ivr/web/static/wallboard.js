// The supervisors' wallboard: every queue as it is now, redrawn from each
// snapshot the server pushes; actions go to Asterisk through the API.
"use strict";
(() => {
  const {el, api, live, seconds, percent, time} = IVR;
  const SL_TARGET = 0.8;  // a service level under this is shown as breached
  const result = document.getElementById("action-result");

  async function act(path, body) {
    try {
      const data = await api("POST", path, body);
      result.textContent = `${data.action}: ${data.message || "done"}`;
      result.className = "ok";
    } catch (error) {
      result.textContent = error.message;
      result.className = "error";
    }
  }

  function bar(value, maximum, cls) {
    const width = maximum > 0 ? Math.min(100, Math.round(100 * value / maximum)) : 0;
    return el("span", {class: `bar ${cls || ""}`}, el("span", {style: `width:${width}%`}));
  }

  function slClass(figures) {
    if (!figures || figures.service_level === null || figures.service_level === undefined) return "sl-none";
    return figures.service_level < SL_TARGET ? "sl-breached" : "sl-ok";
  }

  function figureCells(f) {
    f = f || {};
    return [
      el("div", {class: `figure ${slClass(f)}`}, el("b", {}, percent(f.service_level)),
         `service level (${f.service_level_seconds ? seconds(f.service_level_seconds) : "–"})`),
      el("div", {class: "figure"}, el("b", {}, f.answered ?? 0), "answered"),
      el("div", {class: `figure ${f.abandoned ? "warn" : ""}`}, el("b", {}, f.abandoned ?? 0),
         `abandoned (${percent(f.abandon_rate)})`),
      el("div", {class: "figure"}, el("b", {}, seconds(f.average_wait)), "average wait"),
      el("div", {class: "figure"}, el("b", {}, seconds(f.average_talk)), "average talk"),
    ];
  }

  function memberRow(queue, member) {
    const paused = member.paused;
    return el("tr", {class: `member ${member.state}`, "data-interface": member.interface},
      el("td", {}, member.name), el("td", {class: `state ${member.state}`}, member.state,
        paused && member.paused_reason ? ` (${member.paused_reason}, ${seconds(member.paused_for)})` : ""),
      el("td", {}, member.calls_taken), el("td", {}, member.penalty),
      el("td", {class: "actions"},
        el("button", {onclick: () => {
          const reason = paused ? "" : (prompt(`Pause reason for ${member.name}:`, "break") || "");
          act("/actions/pause", {interface: member.interface, paused: !paused, reason, queue: queue});
        }}, paused ? "Unpause" : "Pause"),
        el("button", {onclick: () => {
          const value = prompt(`Penalty for ${member.name} in ${queue}:`, String(member.penalty));
          if (value !== null) act("/actions/penalty", {interface: member.interface, penalty: Number(value), queue});
        }}, "Penalty"),
        el("button", {onclick: () => {
          if (confirm(`Remove ${member.name} from ${queue}?`)) act("/actions/remove", {queue, interface: member.interface});
        }}, "Remove")));
  }

  function queueTile(name, queue, stats) {
    const figures = (stats.queues || {})[name];
    const longest = Math.max(60, ...queue.callers.map((c) => c.wait));
    const segments = figures ? Object.entries(figures.segments || {}) : [];
    return el("article", {class: `queue ${slClass(figures)}`, "data-queue": name},
      el("h2", {}, name, el("span", {class: "waiting"}, `${queue.callers_waiting} waiting`),
         el("span", {class: "quiet"}, ` longest ${seconds(queue.longest_wait)}`)),
      el("div", {class: "figures"}, figureCells(figures)),
      el("p", {class: "agents"}, Object.entries(queue.agents).map(([k, v]) => `${k.replace("_", " ")} ${v}`).join(" · ")),
      queue.callers.length ? el("ol", {class: "callers"}, queue.callers.map((c) => el("li", {},
        el("span", {class: "caller"}, c.number || "unknown", c.segment ? ` [${c.segment}]` : ""),
        bar(c.wait, longest, c.wait > 60 ? "long" : ""), el("span", {}, seconds(c.wait))))) : null,
      segments.length ? el("table", {class: "segments"},
        el("thead", {}, el("tr", {}, el("th", {}, "segment"), el("th", {}, "SL"), el("th", {}, "answered"),
          el("th", {}, "abandoned"), el("th", {}, "avg wait"))),
        el("tbody", {}, segments.map(([seg, f]) => el("tr", {class: slClass(f)},
          el("td", {}, seg), el("td", {}, percent(f.service_level)), el("td", {}, f.answered),
          el("td", {}, f.abandoned), el("td", {}, seconds(f.average_wait)))))) : null,
      el("table", {class: "members"},
        el("thead", {}, el("tr", {}, el("th", {}, "agent"), el("th", {}, "state"), el("th", {}, "calls"),
          el("th", {}, "penalty"), el("th", {}, ""))),
        el("tbody", {}, queue.members.map((m) => memberRow(name, m)))),
      addForm(name));
  }

  function addForm(queue) {
    const iface = el("input", {placeholder: "PJSIP/1001", size: "12", required: true});
    const penalty = el("input", {type: "number", min: "0", value: "0", size: "3"});
    return el("form", {class: "add", onsubmit: (event) => {
      event.preventDefault();
      act("/actions/add", {queue, interface: iface.value.trim(), penalty: Number(penalty.value || 0)});
    }}, "Add agent ", iface, " penalty ", penalty, el("button", {type: "submit"}, "Add"));
  }

  function draw(message) {
    const queues = (message.queues || {}).queues || {};
    const stats = message.stats || {};
    document.getElementById("totals").replaceChildren(
      el("h2", {}, "All queues"), el("div", {class: "figures"}, figureCells(stats.total)),
      el("p", {class: "segments-line"}, Object.entries(stats.segments || {}).map(([seg, f]) =>
        el("span", {class: `segment ${slClass(f)}`}, `${seg}: SL ${percent(f.service_level)}, `,
           `${f.answered} answered, ${f.abandoned} abandoned`))));
    // A tile whose queue is focused (someone typing in its form) is kept until the next snapshot.
    const box = document.getElementById("queues");
    const focused = document.activeElement && document.activeElement.closest("article.queue");
    const tiles = Object.entries(queues).map(([name, q]) =>
      focused && focused.dataset.queue === name ? focused : queueTile(name, q, stats));
    box.replaceChildren(...tiles);
    if (focused) focused.querySelector("input")?.focus();
    document.querySelector("#abandoned tbody").replaceChildren(...(stats.abandoned_calls || []).map((c) =>
      el("tr", {}, el("td", {}, time(c.at)), el("td", {}, c.queue), el("td", {}, c.segment || "–"),
        el("td", {}, c.number || "–"), el("td", {}, seconds(c.wait)), el("td", {}, c.reason || ""))));
    const ami = message.ami || {};
    const amiNode = document.getElementById("ami");
    amiNode.textContent = ami.connected ? "Asterisk connected" : `Asterisk: ${ami.last_error || "not connected"}`;
    amiNode.className = `link ${ami.connected ? "up" : "down"}`;
  }

  live("wallboard", (message) => { if (message.type === "wallboard") draw(message); });
})();
