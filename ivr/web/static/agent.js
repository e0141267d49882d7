// The agent's screen: the agent's own state in the queues with a pause
// control; the caller's card pops when a call rings, turns "in call" when
// answered (with a timer) and stays after the call until the agent has
// recorded the real reason and outcome (or closes it); the calls of the
// last days with their date and length.  A card is updated in place: what
// the agent has picked or typed in its forms is kept.  The card's fields are
// those ivr/call/context.py declares for it (`CallContext` and its parts).
"use strict";
(() => {
  const {el, t, word, number, api, live, now, seconds, shortTime, date, dateTime, tick} = IVR;
  const cardsBox = document.getElementById("cards");
  const empty = document.getElementById("no-cards");
  const savedNote = document.getElementById("saved-note");
  const pageTitle = document.title;
  const shown = new Map();  // call_id -> card entry (see create)
  const dismissed = new Map();  // call_id -> seq of the card the agent closed
  const LINGER = 8000;  // ms a card stays after a call this agent did not take ends
  const AFTER_SAVE = 3000;  // ms a recorded, ended call's card stays (the note above the cards says what was saved)
  const ROLE = /^(private|employee|director)(?: of (.+))?$/;  // caller_id.profile.Role.label
  let intents = [], outcomes = [];

  function title(name) {
    const spec = intents.find((i) => i.name === name);
    return spec ? (spec.title[IVR.lang] || spec.title.ru || spec.title.en || name) : (name || "–");
  }
  const outcomeWord = (outcome) => word("outcome", outcome);
  const queueName = (name) => (name ? word("queue", name) : "–");

  // "director of ООО Ромашка" (how the IVR names a role) in the page's words, the organisation once.
  function roleText(kind, organisation) {
    const role = word("role_kind", kind);
    return organisation ? t("role.of", {role, organisation}) : role;
  }
  function roleLabel(label) {
    const found = ROLE.exec(label || "");
    return found ? roleText(found[1], found[2]) : (label || "");
  }

  function stateText(message) {
    if (message.state === "ended") return word("ended", message.reason || "ended");
    return t(`card.state.${message.state}`);
  }

  // --- the agent's own state and pause ---

  const mine = {
    word: document.getElementById("my-state-word"), time: document.getElementById("my-state-time"),
    detail: document.getElementById("my-state-detail"), form: document.getElementById("pause-form"),
    reason: document.getElementById("pause-reason"), resume: document.getElementById("resume-button"),
    status: document.getElementById("pause-status"), box: document.getElementById("my-state"),
  };

  function drawMyState(state, connected) {
    if (!state) {
      mine.word.textContent = connected ? t("state.none") : t("state.unknown");
      mine.word.className = "chip state-unavailable";
      mine.box.dataset.state = "none";
      mine.time.textContent = "";
      delete mine.time.dataset.since;
      mine.detail.textContent = connected ? t("agent.in_no_queue") : t("agent.no_asterisk");
      mine.form.hidden = true;
      mine.resume.hidden = true;
      return;
    }
    const paused = state.paused || (state.paused_in || []).length > 0;
    mine.box.dataset.state = state.state;
    mine.box.dataset.paused = paused ? "1" : "0";
    mine.word.textContent = t(`state.${state.state}`);
    mine.word.className = `chip state-${state.state}`;
    mine.time.dataset.since = state.since;
    mine.time.textContent = seconds(now() - state.since);
    const call = (state.calls || [])[0];
    const parts = [];
    if (paused) parts.push(state.paused_reason ? word("pause_reason", state.paused_reason) : t("pause.no_reason"));
    if (call) parts.push(`${number(call.number)} · ${queueName(call.queue)}`);
    parts.push(t("agent.my_queues", {queues: (state.queues || []).map((q) => queueName(q.queue)).join(", ")}));
    if (state.answered !== undefined) parts.push(t("agent.answered_today", {n: state.answered}));
    mine.detail.textContent = parts.join(" · ");
    mine.form.hidden = paused;
    mine.resume.hidden = !paused;
  }

  async function pauseMe(paused) {
    mine.status.textContent = t("action.sending");
    mine.status.className = "status quiet";
    try {
      const body = paused ? {paused: true, reason: mine.reason.value} : {paused: false};
      await api("POST", "/me/pause", body);
      mine.status.textContent = paused ? t("pause.done", {reason: word("pause_reason", mine.reason.value)})
        : t("pause.resumed");
      mine.status.className = "status ok";
    } catch (error) {
      mine.status.textContent = t("action.failed", {error: error.message});
      mine.status.className = "status error";
    }
  }
  mine.form.addEventListener("submit", (event) => { event.preventDefault(); pauseMe(true); });
  mine.resume.addEventListener("click", () => pauseMe(false));

  // --- what the card shows (redrawn on every update) ---

  function infoNodes(entry, message) {
    const card = message.card || {};
    const customer = card.customer;
    const reason = card.reason;
    const ivr = card.ivr || {};
    const heading = customer ? customer.name
      : card.context === "pending" ? t("card.looking_up", {number: number(card.number)})
      : t("card.unknown_caller", {number: number(card.number)});
    const organisation = card.organisation && card.organisation.name;
    const role = card.role ? roleText(card.role.kind, organisation) : organisation;
    return [
      el("h2", {}, heading,
         card.is_vip ? el("span", {class: "badge vip"}, t("card.vip")) : null,
         card.segment ? el("span", {class: "badge"}, t("segment.name", {segment: card.segment})) : null,
         el("span", {class: `badge state-${message.state}`}, stateText(message)),
         timerNode(entry, message),
         entry.saved ? el("span", {class: "badge saved"}, t("card.saved")) : null),
      el("p", {class: "meta"}, [number(card.number), card.line && t("card.line", {line: word("line", card.line)}),
        t("card.queue", {queue: queueName(message.queue)}), role,
        card.manager && t("card.manager", {name: card.manager.name})].filter(Boolean).join(" · ")),
      card.context === "missing" ? el("p", {class: "quiet"}, t("card.no_context"))
        : !customer && card.context !== "pending" ? el("p", {class: "quiet"}, t("card.not_in_crm")) : null,
      reason ? el("div", {class: "reason"},
        el("h3", {}, t("card.probably"), " ", title(reason.intent), ` (${Math.round(reason.score * 100)}%)`),
        el("ul", {}, (reason.reasons || []).map((r) => el("li", {}, r))),
        (card.other_reasons || []).length ? el("p", {class: "quiet"}, t("card.also"), " ",
          card.other_reasons.map((r) => `${title(r.intent)} (${Math.round(r.score * 100)}%)`).join(", ")) : null)
        : null,
      ivrNodes(ivr),
      (card.open_cases || []).length ? el("div", {},
        el("h3", {}, t("card.open_cases")),
        el("ul", {}, card.open_cases.map((c) => el("li", {}, `#${c.id} ${c.title} — ${word("case_status", c.status)}`,
          c.due_at ? `, ${t("card.due", {date: date(c.due_at)})}` : "",
          c.customer_owes_next_step ? ` (${t("card.waiting_customer")})` : "")))) : null,
      (card.previous_calls || []).length ? el("div", {},
        el("h3", {}, t("card.previous_calls")),
        el("ul", {}, card.previous_calls.slice(0, 5).map((c) => el("li", {},
          `${dateTime(c.started_at)} · ${c.intent ? title(c.intent) : "–"} · `,
          c.self_served ? t("card.self_served") : queueName(c.queue))))) : null,
    ];
  }

  // Ringing for / in a call for (counting), or how long the call lasted; nothing for a time no call has
  // (a card older than a day, or from a clock far ahead).
  const plausible = (at) => typeof at === "number" && now() - at < 86400 && at - now() < 60;
  function timerNode(entry, message) {
    if (![entry.ringAt, entry.answerAt].some(plausible)) return null;
    if (message.state === "ringing" && entry.ringAt) {
      return el("span", {class: "timer"}, t("card.ringing_for"), " ",
                el("span", {dataset: {since: entry.ringAt}}, seconds(now() - entry.ringAt)));
    }
    if (message.state === "answered" && entry.answerAt) {
      return el("span", {class: "timer"}, t("card.talking_for"), " ",
                el("span", {dataset: {since: entry.answerAt}}, seconds(now() - entry.answerAt)));
    }
    if (message.state === "ended" && entry.answerAt && entry.endAt) {
      return el("span", {class: "timer"}, t("card.talked", {duration: seconds(entry.endAt - entry.answerAt)}));
    }
    return null;
  }

  function meaning(entry) {
    const value = entry.meaning;
    if (value === undefined || value === null || value === "") return "";
    if (/^[1-5]$/.test(value) && entry.step === "rating") return t("meaning.rating", {n: value});
    if (IVR.has(`meaning.${value}`)) return t(`meaning.${value}`);
    return intents.some((i) => i.name === value) ? t("meaning.intent", {intent: title(value)}) : value;
  }

  function heard(entry) {
    if (!entry.heard) return entry.meaning === "no_input" ? "" : null;
    return entry.via === "dtmf" ? t("via.dtmf", {keys: entry.heard}) : t("via.speech", {words: entry.heard});
  }

  function ivrNodes(ivr) {
    const parts = [];
    const question = ivr.role_question;
    if (question) {
      const asked = (question.asked || []).map(roleLabel);
      let answer;
      if (question.chosen) answer = t("ivr.role_chosen", {keys: question.pressed || "?", role: roleLabel(question.chosen)});
      else if (question.confirmed === false && question.assumed) answer = t("ivr.role_assumed", {role: roleLabel(question.assumed)});
      else answer = t("ivr.role_default");
      parts.push(el("p", {class: "role-question"}, el("b", {}, t("ivr.role_asked")), " ",
        asked.map((label, i) => `${i + 1} — ${label}`).join("; "), ". ", answer));
    }
    if (ivr.self_service) {
      const s = ivr.self_service;
      parts.push(el("p", {}, el("b", {}, t("ivr.self_service")), " ",
        s.contained ? t("ivr.contained") : t("ivr.handed_over", {reason: word("handover", s.reason || "unknown")}),
        s.intent ? ` · ${t("ivr.named", {intent: title(s.intent)})}` : "",
        s.declined ? ` · ${t("ivr.declined", {intent: title(s.declined)})}` : "",
        s.rating ? ` · ${t("meaning.rating", {n: s.rating})}` : ""));
    }
    if (ivr.dialog_skipped) {
      const rule = /^rule (.+)$/.exec(ivr.dialog_skipped);
      parts.push(el("p", {class: "dialog-skipped"}, el("b", {}, t("ivr.skipped")), " ",
        rule ? t("skipped.rule", {rule: rule[1]}) : t("skipped.caller")));
    }
    const pressed = (ivr.dtmf || []).filter((d) => d.step !== "role");
    if (pressed.length) parts.push(el("p", {}, el("b", {}, t("ivr.pressed")), " ",
      pressed.map((d) => `${word("step", d.step)}: ${d.pressed || t("meaning.no_input")}`).join(", ")));
    const steps = (ivr.transcript || []).filter((s) => s.heard || s.meaning || s.step === "answer");
    if (steps.length) parts.push(el("details", {open: true}, el("summary", {}, t("ivr.transcript")),
      el("ol", {class: "transcript"}, steps.map((s) => el("li", {dataset: {step: s.step}},
        el("b", {}, word("step", s.step)), ": ",
        s.step === "answer" ? el("q", {}, s.said || "") : [
          heard(s) ? el("span", {class: "heard"}, heard(s)) : null,
          meaning(s) ? [heard(s) ? " — " : "", el("span", {class: "meaning"}, meaning(s))] : null,
          s.said ? el("span", {class: "said quiet", title: s.said}, ` (${t("ivr.asked")} «${s.said}»)`) : null])))));
    if ((ivr.degraded || []).length) parts.push(el("p", {class: "quiet"}, t("ivr.degraded"), " ",
      ivr.degraded.map((d) => (IVR.has(`degraded.${d}`) ? t(`degraded.${d}`)
        : d.startsWith("lookup_") ? t("degraded.lookup", {source: d.slice(7)}) : d)).join(", ")));
    return parts.length ? el("div", {class: "ivr"}, el("h3", {}, t("ivr.heading")), parts) : null;
  }

  // --- what the agent does (built once per card, kept across updates) ---

  function confirmSaved(intent, outcome) {
    const text = t("saved.note", {reason: title(intent), outcome: outcomeWord(outcome), time: shortTime(now())});
    savedNote.textContent = text;
    savedNote.hidden = false;
    clearTimeout(savedNote.timer);
    savedNote.timer = setTimeout(() => { savedNote.hidden = true; }, 12000);
    return text;
  }

  function dispositionForm(callId, predicted, onSaved) {
    const intentSelect = el("select", {name: "intent", onchange: () => { intentSelect.dataset.touched = "1"; }},
      intents.map((i) => el("option", {value: i.name, selected: i.name === predicted}, title(i.name))));
    const outcomeSelect = el("select", {name: "outcome"}, outcomes.map((o) => el("option", {value: o}, outcomeWord(o))));
    const status = el("span", {class: "status quiet", role: "status"});
    const form = el("form", {class: "disposition", onsubmit: async (event) => {
      event.preventDefault();
      status.textContent = t("card.saving");
      status.className = "status quiet";
      try {
        await api("POST", `/calls/${encodeURIComponent(callId)}/disposition`,
                  {intent: intentSelect.value, outcome: outcomeSelect.value});
        confirmSaved(intentSelect.value, outcomeSelect.value);
        status.textContent = t("card.saved_at", {time: shortTime(now())});
        status.className = "status ok";
        form.dataset.saved = "1";
        if (onSaved) onSaved();
        loadRecent();
      } catch (error) {
        status.textContent = t("action.failed", {error: error.message});
        status.className = "status error";
      }
    }}, el("label", {}, t("card.real_reason"), " ", intentSelect), el("label", {}, t("card.outcome"), " ", outcomeSelect),
       el("button", {type: "submit"}, t("card.save")), status);
    form.predict = (intent) => {  // a later card knows the prediction better, unless the agent chose already
      if (!intentSelect.dataset.touched && intent) intentSelect.value = intent;
    };
    return form;
  }

  function noteForm() {
    const caseSelect = el("select", {name: "case"});
    const text = el("input", {name: "note", placeholder: t("card.note_placeholder"), maxlength: "2000"});
    const status = el("span", {class: "status quiet", role: "status"});
    const form = el("form", {class: "note", hidden: true, onsubmit: async (event) => {
      event.preventDefault();
      if (!text.value.trim()) return;
      try {
        await api("POST", `/cases/${caseSelect.value}/notes`, {text: text.value});
        text.value = ""; status.textContent = t("card.note_added"); status.className = "status ok";
      } catch (error) { status.textContent = t("action.failed", {error: error.message}); status.className = "status error"; }
    }}, caseSelect, text, el("button", {type: "submit"}, t("card.add_note")), status);
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
    const entry = {seq: -1, answered: false, saved: false, timer: null, ringAt: null, answerAt: null, endAt: null};
    entry.info = el("div", {class: "info"});
    entry.disposition = dispositionForm(message.call_id, ((message.card || {}).reason || {}).intent, () => {
      entry.saved = true;
      if (entry.last) entry.info.replaceChildren(...infoNodes(entry, entry.last).filter(Boolean));
      if (entry.ended) later(entry, message.call_id, AFTER_SAVE);
    });
    entry.note = noteForm();
    entry.close = el("button", {type: "button", class: "close", hidden: true,
                                onclick: () => forget(message.call_id, true)}, t("card.close"));
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
    entry.last = message;
    entry.ended = message.state === "ended";
    if (message.state === "ringing" && !entry.ringAt) entry.ringAt = message.at;
    if (message.state === "answered" && !entry.answerAt) entry.answerAt = message.at;
    if (entry.ended && !entry.endAt) entry.endAt = message.at;
    if (message.state === "answered" || message.reason === "completed") entry.answered = true;
    entry.node.className = `card ${message.state}`;
    entry.node.dataset.state = message.state;
    entry.info.replaceChildren(...infoNodes(entry, message).filter(Boolean));
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
    document.title = ringing ? `● ${t("card.state.ringing")} — ${pageTitle}` : pageTitle;
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
        const length = c.talk_seconds !== null && c.talk_seconds !== undefined ? seconds(c.talk_seconds)
          : c.self_served ? t("card.self_served") : "–";
        const row = el("tr", {dataset: {callId: c.call_id}},
          el("td", {}, dateTime(c.started_at)), el("td", {}, number(c.number)), el("td", {}, queueName(c.queue)),
          el("td", {class: "num duration"}, length),
          el("td", {}, c.predicted_intent ? title(c.predicted_intent) : "–"),
          el("td", {}, c.actual_intent ? title(c.actual_intent) : "–"),
          el("td", {}, c.outcome ? outcomeWord(c.outcome) : "–"),
          el("td", {}, el("button", {type: "button", onclick: () => edit(row, c)},
                          c.actual_intent ? t("recent.change") : t("recent.record"))));
        return row;
      }));
    } catch (error) { /* the next update tries again */ } finally { recentBusy = false; }
  }

  function edit(row, call) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("editing")) { next.remove(); return; }
    const form = dispositionForm(call.call_id, call.actual_intent || call.predicted_intent, null);
    row.after(el("tr", {class: "editing"}, el("td", {colspan: "8"}, form)));
  }

  setInterval(() => tick(document.body), 1000);
  Promise.all([IVR.ready, api("GET", "/intents")]).then(([me, data]) => {
    intents = data.intents; outcomes = data.outcomes;
    mine.reason.replaceChildren(...(me.pause_reasons || []).map((r) => el("option", {value: r}, word("pause_reason", r))));
    live("agent&states=true", (message) => {
      if (message.type === "cards") message.cards.forEach(show);
      else if (message.type === "screenpop") show(message);
      else if (message.type === "agent_state") drawMyState(message.state, message.connected);
    });
    loadRecent();
  }).catch(() => { empty.textContent = t("agent.load_failed"); });
})();
