// The agent's screen: the caller's card pops when a call rings, stays while
// it is answered and after it ends, until the agent has recorded the call.
"use strict";
(() => {
  const {el, api, live, time} = IVR;
  const cardsBox = document.getElementById("cards");
  const empty = document.getElementById("no-cards");
  const shown = new Map();  // call_id -> {seq, node}
  let intents = [], outcomes = [];

  function title(name) {
    const spec = intents.find((i) => i.name === name);
    return spec ? (spec.title.ru || spec.title.en || name) : name;
  }

  function cardNode(message) {
    const card = message.card || {};
    const customer = card.customer;
    const reason = card.reason;
    const ivr = card.ivr || {};
    const node = el("article", {class: `card ${message.state}`, "data-call-id": message.call_id,
                                "data-state": message.state},
      el("h2", {}, customer ? customer.name : `Unknown caller ${card.number || ""}`,
         card.is_vip ? el("span", {class: "badge vip"}, "VIP") : null,
         card.segment ? el("span", {class: "badge"}, `segment ${card.segment}`) : null,
         el("span", {class: `badge state-${message.state}`}, message.state)),
      el("p", {class: "meta"}, card.number || "", " · queue ", message.queue || "–",
         card.role ? ` · ${card.role.label}` : "",
         card.organisation ? ` · ${card.organisation.name}` : "",
         card.manager ? ` · manager ${card.manager.name}` : ""),
      !customer ? el("p", {class: "quiet"}, "This number is not in the CRM.") : null,
      reason ? el("div", {class: "reason"},
        el("h3", {}, "Probably calls about: ", title(reason.intent), ` (${Math.round(reason.score * 100)}%)`),
        el("ul", {}, (reason.reasons || []).map((r) => el("li", {}, r)))) : null,
      ivr.self_service ? el("p", {class: "ivr"}, "Self-service: ",
        ivr.self_service.contained ? "answered the caller" : `handed over (${ivr.self_service.reason})`,
        ivr.self_service.intent ? ` · caller named: ${title(ivr.self_service.intent)}` : "") : null,
      ivr.transcript ? el("details", {class: "ivr"}, el("summary", {}, "What the caller said and pressed"),
        el("ol", {}, ivr.transcript.filter((t) => t.heard || t.meaning).map((t) =>
          el("li", {}, `${t.step}: `, el("q", {}, t.heard || "(nothing)"), ` → ${t.meaning || ""}`)))) : null,
      (ivr.dtmf || []).length ? el("p", {class: "ivr"}, "Pressed: ",
        ivr.dtmf.map((d) => `${d.step} ${d.pressed || "–"}`).join(", ")) : null,
      (card.open_cases || []).length ? el("div", {},
        el("h3", {}, "Open cases"),
        el("ul", {}, card.open_cases.map((c) => el("li", {}, `#${c.id} ${c.title} — ${c.status}`,
          c.due_at ? `, due ${new Date(c.due_at).toLocaleDateString()}` : ""))))
        : null,
      (card.previous_calls || []).length ? el("div", {},
        el("h3", {}, "Previous calls"),
        el("ul", {}, card.previous_calls.slice(0, 5).map((c) => el("li", {},
          `${new Date(c.started_at).toLocaleString()} · ${c.intent || "–"} · ${c.queue || "self-service"}`))))
        : null,
      dispositionForm(message, card),
      noteForm(card));
    return node;
  }

  function dispositionForm(message, card) {
    const predicted = card.reason ? card.reason.intent : "";
    const intentSelect = el("select", {name: "intent"},
      intents.map((i) => el("option", {value: i.name, selected: i.name === predicted}, title(i.name))));
    const outcomeSelect = el("select", {name: "outcome"}, outcomes.map((o) => el("option", {value: o}, o)));
    const status = el("span", {class: "quiet"});
    return el("form", {class: "disposition", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api("POST", `/calls/${encodeURIComponent(message.call_id)}/disposition`,
                  {intent: intentSelect.value, outcome: outcomeSelect.value});
        status.textContent = "saved";
        loadRecent();
      } catch (error) { status.textContent = error.message; }
    }}, el("label", {}, "Real reason ", intentSelect), el("label", {}, " Outcome ", outcomeSelect),
       el("button", {type: "submit"}, "Save"),
       message.state === "ended" ? el("button", {type: "button", onclick: () => forget(message.call_id)}, "Close") : null,
       status);
  }

  function noteForm(card) {
    if (!(card.open_cases || []).length) return null;
    const caseSelect = el("select", {name: "case"}, card.open_cases.map((c) => el("option", {value: c.id}, `#${c.id} ${c.title}`)));
    const text = el("input", {name: "note", placeholder: "Note for the case", maxlength: "2000"});
    const status = el("span", {class: "quiet"});
    return el("form", {class: "note", onsubmit: async (event) => {
      event.preventDefault();
      if (!text.value.trim()) return;
      try {
        await api("POST", `/cases/${caseSelect.value}/notes`, {text: text.value});
        text.value = ""; status.textContent = "note added";
      } catch (error) { status.textContent = error.message; }
    }}, caseSelect, text, el("button", {type: "submit"}, "Add note"), status);
  }

  function show(message) {
    const known = shown.get(message.call_id);
    if (known && known.seq >= message.seq) return;  // a repeat (two tabs, a reconnect): nothing moves
    const node = cardNode(message);
    if (known) known.node.replaceWith(node); else cardsBox.prepend(node);
    shown.set(message.call_id, {seq: message.seq, node});
    empty.hidden = shown.size > 0;
    if (message.state === "ended") loadRecent();
  }

  function forget(callId) {
    const known = shown.get(callId);
    if (known) known.node.remove();
    shown.delete(callId);
    empty.hidden = shown.size > 0;
  }

  async function loadRecent() {
    try {
      const {calls} = await api("GET", "/calls?limit=20");
      const body = document.querySelector("#recent tbody");
      body.replaceChildren(...calls.map((c) => el("tr", {},
        el("td", {}, time(c.started_at)), el("td", {}, c.number || "–"), el("td", {}, c.queue || "–"),
        el("td", {}, c.predicted_intent ? title(c.predicted_intent) : "–"),
        el("td", {}, c.actual_intent ? title(c.actual_intent) : "–"), el("td", {}, c.outcome || "–"))));
    } catch (error) { /* the next update tries again */ }
  }

  api("GET", "/intents").then((data) => {
    intents = data.intents; outcomes = data.outcomes;
    live("agent", (message) => {
      if (message.type === "cards") message.cards.forEach(show);
      else if (message.type === "screenpop") show(message);
    });
    loadRecent();
  });
})();
