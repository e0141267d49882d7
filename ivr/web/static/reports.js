// The supervisors' reports: the filters (period, day or custom days, breakdown, buckets, line, queue,
// segment) kept in the page's address, three charts (Chart.js, static/vendor) each with a table
// beside it, CSV of the same figures, and the calls behind a row or one of its buckets, a page at
// a time.  Everything comes from /api/v1/reports (ivr/web/reports.py); nothing is computed here.
"use strict";
(() => {
  const {el, t, word, number, api, seconds, percent, dateTime} = IVR;
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  const csvLink = document.getElementById("csv");
  const drill = document.getElementById("drill");
  const zone = document.body.dataset.timezone || undefined;
  const FIELDS = ["period", "date", "from", "to", "dimension", "bucket", "line", "queue", "segment"];
  const PAGE = 25, SERIES_SHOWN = 10;
  const COLOURS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#9e9d24", "#4e342e",
                   "#ad1457", "#37474f"];
  const charts = {};
  let latest = null;  // the report drawn
  let drilled = null;  // {row, cell, offset}

  const today = () => {
    try { return new Intl.DateTimeFormat("en-CA", {timeZone: zone}).format(new Date()); }
    catch (error) { return new Date().toISOString().slice(0, 10); }
  };

  function keyWord(dimension, row) {
    if (row.key === null || row.key === undefined) return t("reports.none");
    if (dimension === "line") return word("line", row.key);
    if (dimension === "queue") return word("queue", row.key);
    if (dimension === "total") return t("reports.total");
    return row.label || String(row.key);
  }

  function bucketWord(label) {
    return label.includes("T") ? label.slice(11) : label;  // an hour: 14:00
  }

  // --- the filters and the address ---

  function fromAddress() {
    const given = new URLSearchParams(location.search);
    for (const name of FIELDS) {
      if (given.has(name) && form.elements[name]) form.elements[name].value = given.get(name);
    }
    if (!form.elements.date.value) form.elements.date.value = today();
    shownFields();
  }

  function shownFields() {
    const custom = form.elements.period.value === "custom";
    for (const node of form.querySelectorAll("label.single")) node.hidden = custom;
    for (const node of form.querySelectorAll("label.custom")) node.hidden = !custom;
    form.elements.date.required = !custom;
    form.elements.from.required = form.elements.to.required = custom;
  }

  function query() {
    const params = new URLSearchParams();
    const custom = form.elements.period.value === "custom";
    for (const name of FIELDS) {
      if (name === "dimension") continue;
      if ((name === "date" && custom) || ((name === "from" || name === "to") && !custom)) continue;
      const value = form.elements[name].value;
      if (value) params.set(name, value);
    }
    return params;
  }

  function choices(select, values, prefix) {
    const chosen = select.value;
    const first = select.options[0];
    select.replaceChildren(first, ...values.map((value) => el("option", {value}, prefix ? word(prefix, value) : value)));
    select.value = values.includes(chosen) ? chosen : "";
  }

  // --- drawing ---

  function chart(id, config) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(document.getElementById(id), {
      ...config, options: {animation: false, responsive: true, maintainAspectRatio: false,
                           plugins: {legend: {position: "bottom"}}, ...config.options}});
  }

  function head(table, ...names) {
    table.tHead.replaceChildren(el("tr", {}, names.map(([text, numeric]) => el("th", {class: numeric ? "num" : null}, text))));
  }

  const num = (value) => el("td", {class: "num"}, value);
  const rate = (value) => num(percent(value));
  const mean = (value, digits) => num(value === null || value === undefined ? "–" : Number(value).toFixed(digits));

  function rowsShown(report) {
    return report.dimension === "total" ? [report.total] : [...report.rows, report.total];
  }

  function keyCell(report, row) {
    const isTotal = row === report.total;
    const name = isTotal ? t("reports.total") : keyWord(report.dimension, row);
    if (isTotal && report.dimension !== "total") return el("th", {}, name);
    return el("th", {}, el("button", {type: "button", class: "link-button drill", dataset: {key: row.key ?? ""},
                                      onclick: () => openDrill(row, null, 0)}, name));
  }

  function draw(report) {
    latest = report;
    const labels = report.buckets.map((b) => bucketWord(b.label));
    const series = report.dimension === "total" ? [report.total] : report.rows.slice(0, SERIES_SHOWN);
    chart("chart-calls", {type: "bar", data: {labels, datasets: series.map((row, i) => ({
      label: row === report.total ? t("reports.total") : keyWord(report.dimension, row),
      data: row.buckets.map((b) => b.calls), backgroundColor: COLOURS[i % COLOURS.length]}))},
      options: {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}}});

    const rows = document.getElementById("rows");
    head(rows, [t(`reports.dimension.${report.dimension}`)], [t("reports.figure.calls"), 1],
         [t("reports.figure.containment"), 1], [t("reports.figure.offered"), 1], [t("reports.figure.abandon_rate"), 1],
         [t("reports.figure.service_level"), 1], [t("reports.figure.asa"), 1], [t("reports.figure.aht"), 1],
         [t("reports.figure.fcr"), 1]);
    rows.tBodies[0].replaceChildren(...rowsShown(report).map((row) => {
      const f = row.total;
      return el("tr", {class: row === report.total ? "total" : null}, keyCell(report, row), num(f.calls),
                rate(f.containment), num(f.offered), rate(f.abandon_rate), rate(f.service_level), num(seconds(f.asa)),
                num(seconds(f.aht)), rate(f.fcr));
    }));

    const line = (key, i) => ({label: t(`reports.figure.${key}`), data: report.total.buckets.map((b) =>
      b[key] === null ? null : Math.round(b[key] * 1000) / 10), borderColor: COLOURS[i], backgroundColor: COLOURS[i],
      spanGaps: true});
    chart("chart-rates", {type: "line", data: {labels, datasets: ["containment", "service_level", "abandon_rate",
      "fcr", "top1"].map(line)}, options: {scales: {y: {min: 0, max: 100, ticks: {callback: (v) => `${v}%`}}}}});
    const buckets = document.getElementById("buckets");
    head(buckets, [t(`reports.bucket.${report.bucket}`)], [t("reports.figure.calls"), 1],
         [t("reports.figure.containment"), 1], [t("reports.figure.service_level"), 1],
         [t("reports.figure.abandon_rate"), 1], [t("reports.figure.fcr"), 1], [t("reports.figure.top1"), 1],
         [t("reports.figure.top3"), 1]);
    buckets.tBodies[0].replaceChildren(...report.buckets.map((bucket, i) => {
      const f = report.total.buckets[i];
      return el("tr", {}, el("th", {}, bucketWord(bucket.label)), num(f.calls), rate(f.containment),
                rate(f.service_level), rate(f.abandon_rate), rate(f.fcr), rate(f.top1), rate(f.top3));
    }));

    const shown = rowsShown(report);
    const names = shown.map((row) => (row === report.total ? t("reports.total") : keyWord(report.dimension, row)));
    chart("chart-satisfaction", {type: "bar", data: {labels: names, datasets: [
      {label: t("reports.figure.csat_satisfied"), data: shown.map((row) => row.total.csat_satisfied === null ? null
        : Math.round(row.total.csat_satisfied * 100)), backgroundColor: COLOURS[1]},
      {label: t("reports.figure.nps"), data: shown.map((row) => row.total.nps), backgroundColor: COLOURS[0]},
    ]}, options: {scales: {y: {min: -100, max: 100}}}});
    const satisfaction = document.getElementById("satisfaction");
    head(satisfaction, [t(`reports.dimension.${report.dimension}`)], [t("reports.figure.csat_count"), 1],
         [t("reports.figure.csat"), 1], [t("reports.figure.csat_satisfied"), 1], [t("reports.figure.nps_count"), 1],
         [t("reports.figure.nps"), 1], [t("reports.figure.confirmed"), 1], [t("reports.figure.top1"), 1],
         [t("reports.figure.top3"), 1]);
    satisfaction.tBodies[0].replaceChildren(...shown.map((row, i) => {
      const f = row.total;
      return el("tr", {class: row === report.total ? "total" : null}, el("th", {}, names[i]), num(f.csat_count),
                mean(f.csat, 2), rate(f.csat_satisfied), num(f.nps_count), mean(f.nps, 0), num(f.confirmed),
                rate(f.top1), rate(f.top3));
    }));
  }

  // --- the calls behind a row or a bucket ---

  async function openDrill(row, cell, offset) {
    if (!latest) return;
    drilled = {row, cell, offset};
    const params = query();
    if (latest.dimension !== "total") params.set("key", row.key ?? "");
    if (cell !== null) params.set("cell", String(cell));
    params.set("limit", String(PAGE));
    params.set("offset", String(offset));
    const dimension = latest.dimension;
    try {
      const data = await api("GET", `/reports/${dimension}/calls?${params}`);
      const where = row === latest.total ? t("reports.total") : keyWord(dimension, row);
      const when = cell === null ? "" : ` · ${bucketWord(latest.buckets[cell].label)}`;
      document.getElementById("drill-title").textContent = t("reports.drill_title", {what: where + when, n: data.count});
      const table = document.getElementById("drill-calls");
      head(table, [t("reports.call.started")], [t("reports.call.number")], [t("reports.dimension.line")],
           [t("reports.dimension.queue")], [t("reports.dimension.segment")], [t("reports.call.result")],
           [t("reports.call.intent")], [t("reports.call.wait"), 1], [t("reports.call.talk"), 1], [""]);
      table.tBodies[0].replaceChildren(...data.calls.map((c) => el("tr", {dataset: {callId: c.call_id}},
        el("td", {}, dateTime(c.started_at)), el("td", {}, number(c.number)), el("td", {}, word("line", c.line)),
        el("td", {}, word("queue", c.queue)), el("td", {}, c.segment || ""), el("td", {}, word("result", c.result)),
        el("td", {}, c.actual_intent || c.predicted_intent || ""), num(seconds(c.wait_seconds)),
        num(seconds(c.talk_seconds)),
        el("td", {}, el("a", {href: `/api/v1/calls/${encodeURIComponent(c.call_id)}`, target: "_blank",
                              rel: "noopener"}, t("reports.call.details"))))));
      const last = Math.min(offset + data.calls.length, data.count);
      document.getElementById("drill-page").textContent = data.count
        ? t("reports.page", {first: offset + 1, last, n: data.count}) : t("reports.no_calls");
      document.getElementById("drill-prev").disabled = offset === 0;
      document.getElementById("drill-next").disabled = last >= data.count;
      drill.hidden = false;
      drill.scrollIntoView({block: "nearest"});
    } catch (error) {
      if (!error.loggedOut) status.textContent = t("reports.failed", {error: error.message});
    }
  }

  document.getElementById("drill-prev").addEventListener("click", () => {
    if (drilled) openDrill(drilled.row, drilled.cell, Math.max(0, drilled.offset - PAGE));
  });
  document.getElementById("drill-next").addEventListener("click", () => {
    if (drilled) openDrill(drilled.row, drilled.cell, drilled.offset + PAGE);
  });
  document.getElementById("drill-close").addEventListener("click", () => { drill.hidden = true; drilled = null; });

  // a click on a bar: the calls of that row in that bucket
  document.getElementById("chart-calls").addEventListener("click", (event) => {
    const found = charts["chart-calls"] && charts["chart-calls"].getElementsAtEventForMode(
      event, "nearest", {intersect: true}, false);
    if (!found || !found.length || !latest) return;
    const series = latest.dimension === "total" ? [latest.total] : latest.rows.slice(0, SERIES_SHOWN);
    openDrill(series[found[0].datasetIndex], found[0].index, 0);
  });

  // --- loading ---

  async function load() {
    const params = query();
    const dimension = form.elements.dimension.value;
    const address = new URLSearchParams(params);
    address.set("dimension", dimension);
    history.replaceState(null, "", `${location.pathname}?${address}`);
    csvLink.href = `/api/v1/reports/${dimension}?${params}&format=csv`;
    status.textContent = t("reports.loading");
    status.className = "quiet";
    drill.hidden = true;
    try {
      const report = await api("GET", `/reports/${dimension}?${params}`);
      choices(form.elements.line, report.choices.lines, "line");
      choices(form.elements.queue, report.choices.queues, "queue");
      choices(form.elements.segment, report.choices.segments, null);
      draw(report);
      status.textContent = t("reports.shown", {from: report.period.from, to: report.period.to,
                                               n: report.total.total.calls});
      document.body.dataset.loaded = `${dimension}:${report.period.from}:${report.bucket}`;
    } catch (error) {
      if (error.loggedOut) return;
      status.textContent = t("reports.failed", {error: error.message});
      status.className = "error";
    }
  }

  form.elements.period.addEventListener("change", shownFields);
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  for (const name of ["dimension", "bucket", "line", "queue", "segment"]) {
    form.elements[name].addEventListener("change", () => { if (form.reportValidity()) load(); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    IVR.ready.then(() => { fromAddress(); load(); });
  });
})();
