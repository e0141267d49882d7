// The agent's screen: the caller's card pops when a call rings, turns
// "in call" when answered and stays after the call until the agent has
// recorded the real reason and outcome (or closes it).  A card is updated
// in place: what the agent has picked or typed in its forms is kept.
"use strict";
(() => {
  const {el, api, live, time} = IVR;
  const cardsBox = document.getElementById("cards");
  const empty = document.getElementById("no-cards");
  const pageTitle = document.title;
  const shown = new Map();  // call_id -> card entry (see create)
  const dismissed = new Map();  // call_id -> seq of the card the agent closed
  const LINGER = 8000;  // ms a card stays after a call this agent did not take ends
  const AFTER_SAVE = 2000;  // ms a recorded, ended call's card stays
  const ENDED = {
    completed: "call ended", answered_elsewhere: "answered by a colleague", no_answer: "not answered",
    dumped: "dropped", abandoned: "caller hung up", left: "caller left the queue", hangup: "caller hung up",
    lost: "call lost",
  };
  let intents = [], outcomes = [];

  function title(name) {
    const spec = intents.find((i) => i.name === name);
    return spec ? (spec.title.ru || spec.title.en || name) : (name || "–");
  }

  function date(iso) { return iso ? new Date(iso).toLocaleDateString() : ""; }

  function stateText(message) {
    if (message.state === "ended") return ENDED[message.reason] || "ended";
    return message.state === "answered" ? "in call" : message.state;
  }

  // --- what the card shows (redrawn on every update) ---

  function infoNodes(message) {
    const card = message.card || {};
    const customer = card.customer;
    const reason = card.reason;
    const ivr = card.ivr || {};
    const heading = customer ? customer.name
      : card.context === "pending" ? `Looking up the caller… ${card.number || ""}`
      : `Unknown caller ${card.number || card.caller_name || ""}`;
    return [
      el("h2", {}, heading,
         card.is_vip ? el("span", {class: "badge vip"}, "VIP") : null,
         card.segment ? el("span", {class: "badge"}, `segment ${card.segment}`) : null,
         el("span", {class: `badge state-${message.state}`}, stateText(message))),
      el("p", {class: "meta"}, [card.number, card.line && `line ${card.line}`, `queue ${message.queue || "–"}`,
        card.role && card.role.label, card.organisation && card.organisation.name,
        card.manager && `manager ${card.manager.name}`].filter(Boolean).join(" · ")),
      card.context === "missing" ? el("p", {class: "quiet"}, "The IVR left no record of this call: ask the caller.")
        : !customer && card.context !== "pending" ? el("p", {class: "quiet"}, "This number is not in the CRM.") : null,
      reason ? el("div", {class: "reason"},
        el("h3", {}, "Probably calls about: ", title(reason.intent), ` (${Math.round(reason.score * 100)}%)`),
        el("ul", {}, (reason.reasons || []).map((r) => el("li", {}, r))),
        (card.other_reasons || []).length ? el("p", {class: "quiet"}, "Also possible: ",
          card.other_reasons.map((r) => `${title(r.intent)} (${Math.round(r.score * 100)}%)`).join(", ")) : null)
        : null,
      ivrNodes(ivr),
      (card.open_cases || []).length ? el("div", {},
        el("h3", {}, "Open cases"),
        el("ul", {}, card.open_cases.map((c) => el("li", {}, `#${c.id} ${c.title} — ${c.status}`,
          c.due_at ? `, due ${date(c.due_at)}` : "",
          c.customer_owes_next_step ? " (waiting for the customer)" : "")))) : null,
      (card.previous_calls || []).length ? el("div", {},
        el("h3", {}, "Previous calls"),
        el("ul", {}, card.previous_calls.slice(0, 5).map((c) => el("li", {},
          `${new Date(c.started_at).toLocaleString()} · ${c.intent ? title(c.intent) : "–"} · `,
          c.self_served ? "self-service" : (c.queue || "–"))))) : null,
    ];
  }

  function ivrNodes(ivr) {
    const parts = [];
    if (ivr.self_service) {
      const s = ivr.self_service;
      parts.push(el("p", {}, "Self-service: ", s.contained ? "answered the caller" : `handed over (${s.reason || "–"})`,
        s.intent ? ` · caller named: ${title(s.intent)}` : "", s.declined ? " · turned the offered answer down" : ""));
    }
    const question = ivr.role_question;
    if (question) parts.push(el("p", {}, `Asked in which role they call (${(question.asked || []).join(" / ")}): `,
      question.confirmed === false && question.assumed ? `role not confirmed — routed as ${question.assumed}`
        : question.chosen || "no choice, the line's default"));
    const pressed = (ivr.dtmf || []).filter((d) => d.step !== "role");
    if (pressed.length) parts.push(el("p", {}, "Pressed: ", pressed.map((d) => `${d.step} ${d.pressed || "–"}`).join(", ")));
    if (ivr.transcript) parts.push(el("details", {}, el("summary", {}, "What the caller said"),
      el("ol", {}, ivr.transcript.filter((t) => t.heard || t.meaning).map((t) =>
        el("li", {}, `${t.step}: `, el("q", {}, t.heard || "(nothing)"), t.meaning ? ` → ${t.meaning}` : "")))));
    if ((ivr.degraded || []).length) parts.push(el("p", {class: "quiet"},
      "The IVR fell back on: ", ivr.degraded.join(", ")));
    return parts.length ? el("div", {class: "ivr"}, el("h3", {}, "In the IVR"), parts) : null;
  }

  // --- what the agent does (built once per card, kept across updates) ---

  function dispositionForm(callId, predicted, onSaved) {
    const intentSelect = el("select", {name: "intent", onchange: () => { intentSelect.dataset.touched = "1"; }},
      intents.map((i) => el("option", {value: i.name, selected: i.name === predicted}, title(i.name))));
    const outcomeSelect = el("select", {name: "outcome"}, outcomes.map((o) => el("option", {value: o}, o.replace("_", " "))));
    const status = el("span", {class: "status quiet", role: "status"});
    const form = el("form", {class: "disposition", onsubmit: async (event) => {
      event.preventDefault();
      status.textContent = "saving…";
      try {
        await api("POST", `/calls/${encodeURIComponent(callId)}/disposition`,
                  {intent: intentSelect.value, outcome: outcomeSelect.value});
        status.textContent = "saved";
        status.className = "status ok";
        if (onSaved) onSaved();
        loadRecent();
      } catch (error) { status.textContent = error.message; status.className = "status error"; }
    }}, el("label", {}, "Real reason ", intentSelect), el("label", {}, "Outcome ", outcomeSelect),
       el("button", {type: "submit"}, "Save"), status);
    form.predict = (intent) => {  // a later card knows the prediction better, unless the agent chose already
      if (!intentSelect.dataset.touched && intent) intentSelect.value = intent;
    };
    return form;
  }

  function noteForm() {
    const caseSelect = el("select", {name: "case"});
    const text = el("input", {name: "note", placeholder: "Note for the case", maxlength: "2000"});
    const status = el("span", {class: "status quiet", role: "status"});
    const form = el("form", {class: "note", hidden: true, onsubmit: async (event) => {
      event.preventDefault();
      if (!text.value.trim()) return;
      try {
        await api("POST", `/cases/${caseSelect.value}/notes`, {text: text.value});
        text.value = ""; status.textContent = "note added"; status.className = "status ok";
      } catch (error) { status.textContent = error.message; status.className = "status error"; }
    }}, caseSelect, text, el("button", {type: "submit"}, "Add note"), status);
    form.cases = (cases) => {  // options for cases not listed yet; the chosen one stays chosen
      const known = new Set([...caseSelect.options].map((o) => o.value));
      for (const c of cases || []) {
        if (!known.has(String(c.id))) caseSelect.append(el("option", {value: c.id}, `#${c.id} ${c.title}`));
      }
      form.hidden = caseSelect.options.length === 0;
    };
    return form;
  }

  function create(message) {
    const entry = {seq: -1, answered: false, saved: false, timer: null};
    entry.info = el("div", {class: "info"});
    entry.disposition = dispositionForm(message.call_id, ((message.card || {}).reason || {}).intent, () => {
      entry.saved = true;
      if (entry.ended) later(entry, message.call_id, AFTER_SAVE);
    });
    entry.note = noteForm();
    entry.close = el("button", {type: "button", class: "close", hidden: true,
                                onclick: () => forget(message.call_id, true)}, "Close");
    entry.node = el("article", {class: "card", "data-call-id": message.call_id},
      entry.info, el("div", {class: "actions"}, entry.disposition, entry.note, entry.close));
    return entry;
  }

  function later(entry, callId, ms) {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => forget(callId, true), ms);
  }

  function show(message) {
    const callId = message.call_id;
    if ((dismissed.get(callId) ?? -1) >= message.seq) return;  // closed here already
    let entry = shown.get(callId);
    if (entry && entry.seq >= message.seq) return;  // a repeat (reconnect, two tabs): nothing moves
    if (!entry) {
      entry = create(message);
      shown.set(callId, entry);
      cardsBox.prepend(entry.node);
    }
    const card = message.card || {};
    entry.seq = message.seq;
    entry.ended = message.state === "ended";
    if (message.state === "answered" || message.reason === "completed") entry.answered = true;
    entry.node.className = `card ${message.state}`;
    entry.node.dataset.state = message.state;
    entry.info.replaceChildren(...infoNodes(message).filter(Boolean));
    entry.disposition.predict((card.reason || {}).intent);
    entry.note.cases(card.open_cases);
    entry.close.hidden = !entry.ended;
    entry.disposition.hidden = entry.ended && !entry.answered;
    if (entry.ended) {
      if (!entry.answered) later(entry, callId, LINGER);
      else if (entry.saved) later(entry, callId, AFTER_SAVE);
      loadRecent();
    }
    refresh();
  }

  function forget(callId, byAgent) {
    const entry = shown.get(callId);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.node.remove();
    shown.delete(callId);
    if (byAgent) dismissed.set(callId, entry.seq);
    refresh();
  }

  function refresh() {
    empty.hidden = shown.size > 0;
    const ringing = [...shown.values()].some((e) => e.node.dataset.state === "ringing");
    document.title = ringing ? `● Ringing — ${pageTitle}` : pageTitle;
  }

  // --- recent calls ---

  let recentBusy = false;
  async function loadRecent() {
    if (recentBusy) return;
    recentBusy = true;
    try {
      const {calls} = await api("GET", "/calls?limit=20");
      const body = document.querySelector("#recent tbody");
      const open = body.querySelector("tr.editing");  // a form the agent is filling in stays
      if (open && body.contains(document.activeElement)) return;
      body.replaceChildren(...calls.map((c) => {
        const row = el("tr", {dataset: {callId: c.call_id}},
          el("td", {}, time(c.started_at)), el("td", {}, c.number || "–"), el("td", {}, c.queue || "–"),
          el("td", {}, c.predicted_intent ? title(c.predicted_intent) : "–"),
          el("td", {}, c.actual_intent ? title(c.actual_intent) : "–"),
          el("td", {}, c.outcome ? c.outcome.replace("_", " ") : "–"),
          el("td", {}, el("button", {type: "button", onclick: () => edit(row, c)},
                          c.actual_intent ? "Change" : "Record")));
        return row;
      }));
    } catch (error) { /* the next update tries again */ } finally { recentBusy = false; }
  }

  function edit(row, call) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("editing")) { next.remove(); return; }
    const form = dispositionForm(call.call_id, call.actual_intent || call.predicted_intent, null);
    row.after(el("tr", {class: "editing"}, el("td", {colspan: "7"}, form)));
  }

  api("GET", "/intents").then((data) => {
    intents = data.intents; outcomes = data.outcomes;
    live("agent", (message) => {
      if (message.type === "cards") message.cards.forEach(show);
      else if (message.type === "screenpop") show(message);
    });
    loadRecent();
  }).catch(() => { empty.textContent = "Could not load the call reasons; reload the page."; });
})();
