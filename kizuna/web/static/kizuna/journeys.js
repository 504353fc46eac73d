// The journey builder. Draws the journey's graph (the JSON the engine runs) as a diagram —
// the trigger on top, steps top to bottom, the ways out of a condition, a wait for an event or a
// split side by side — and edits it in place: add a step on any connector, edit a step inside its
// card, choose where each way goes (an existing step: "go to", which is how loops are made),
// move, delete. The form posts the graph as JSON; faults the server finds come back with the step
// and field they belong to and are shown there. Live numbers per step come from the stats view.
// A step reached a second time (a loop, or two ways joining) is drawn once, where it is first
// reached; the other ways show "go to" it. Steps no way reaches are drawn apart, never dropped.
// Every word comes from the page's schema, translated on the server. Values are set with
// textContent or .value only, never as HTML. No inline scripts or styles (CSP).
(() => {
  "use strict";

  const el = (tag, props, ...kids) => {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (v === undefined || v === null || v === false) return;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "value") node.value = v;
      else node.setAttribute(k, v === true ? "" : v);
    });
    kids.flat().forEach((kid) => { if (kid !== null && kid !== undefined && kid !== "") node.append(kid); });
    return node;
  };
  // Words with a number come as [one, other] (English); Japanese has the same text twice.
  const plural = (pair, n) => (Array.isArray(pair) ? pair[Number(n) === 1 ? 0 : 1] : pair);
  // Python-format words from the server: %(name)s filled in, %% is a percent sign.
  const fmt = (text, values) => String(text).replace(/%\((\w+)\)s|%%/g, (m, k) => (m === "%%" ? "%" : k in values ? String(values[k]) : m));
  const options = (pairs, current) => pairs.map(([value, label]) =>
    el("option", { value: String(value), selected: String(value) === String(current) }, String(label)));

  const start = () => {
    const app = document.querySelector("[data-journey-builder]");
    if (!app) return;
    const data = (id) => JSON.parse(document.getElementById(id).textContent);
    const S = data("journey-schema");
    const T = S.text;
    const form = app.closest("form");
    const readonly = Boolean(S.readonly);
    const csrf = form ? (form.querySelector("input[name=csrfmiddlewaretoken]") || {}).value : "";
    const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);
    let graph = data("journey-graph");
    let errors = data("journey-errors");
    let stats = document.getElementById("journey-stats") ? data("journey-stats") : null;
    let scope = "current";
    let menu = null;  // {slot, kind: "add" | "goto"}
    let dirty = false;
    const open = new Set(S.open || []);
    const builders = new Map();  // where → filter builder, for placing faults inside conditions

    if (!graph || typeof graph !== "object") graph = {};
    if (!graph.trigger || typeof graph.trigger !== "object") graph.trigger = { type: "manual" };
    if (!Array.isArray(graph.nodes)) graph.nodes = [];
    if (graph.start === undefined) graph.start = graph.nodes.length ? graph.nodes[0].id : null;
    errors.forEach((e) => { if (e.area === "node" && e.node) open.add(e.node); if (e.area === "trigger") open.add("@trigger"); });
    if (!graph.nodes.length && !readonly) open.add("@trigger");

    // --- the graph ---------------------------------------------------------------------------
    const BRANCHING = new Set(["condition", "wait_event", "split"]);
    const byId = () => new Map(graph.nodes.filter((n) => n && typeof n === "object").map((n) => [n.id, n]));
    const branchLetter = (j) => String.fromCharCode(65 + j);
    const ways = (node) => {
      if (node.type === "condition") return [{ key: "then", label: T.yes, cls: "yes" }, { key: "else", label: T.no, cls: "no" }];
      if (node.type === "wait_event") {
        return [{ key: "then", label: T.came, cls: "yes" }, { key: "else", label: T.timedOut, cls: "no" }];
      }
      if (node.type === "split") {
        const list = (node.branches || []).map((b, j) => ({
          key: `branches[${j}].next`, cls: "branch",
          label: `${branchLetter(j)}${b.label ? ` · ${b.label}` : ""} · ${b.percent === undefined || b.percent === null ? "?" : b.percent}%`,
        }));
        if (node.holdout) list.push({ key: "holdout", label: fmt(T.holdoutPct, { n: node.holdout }), cls: "holdout", end: true });
        return list;
      }
      if (node.type === "exit") return [];
      return [{ key: "next", label: T.then }];
    };
    const getLink = (node, key) => {
      if (!node) return graph.start || null;
      const m = key.match(/^branches\[(\d+)\]\.next$/);
      if (m) return ((node.branches || [])[Number(m[1])] || {}).next || null;
      return node[key] || null;
    };
    const setLink = (node, key, id) => {
      if (!node) { graph.start = id || null; return; }
      const m = key.match(/^branches\[(\d+)\]\.next$/);
      if (m) { node.branches[Number(m[1])].next = id || null; return; }
      if (id) node[key] = id; else delete node[key];
    };
    const eachLink = (fn) => {
      fn(null, "start", graph.start);
      graph.nodes.forEach((n) => ways(n).forEach((w) => { if (!w.end) fn(n, w.key, getLink(n, w.key)); }));
    };
    const reachable = () => {
      const nodes = byId();
      const seen = new Set();
      const stack = graph.start ? [graph.start] : [];
      while (stack.length) {
        const id = stack.pop();
        if (seen.has(id) || !nodes.has(id)) continue;
        seen.add(id);
        ways(nodes.get(id)).forEach((w) => { const t = getLink(nodes.get(id), w.key); if (t) stack.push(t); });
      }
      return seen;
    };
    const incoming = (id) => {
      let n = 0;
      eachLink((_o, _k, target) => { if (target === id) n += 1; });
      return n;
    };
    const newId = (type) => {
      const taken = new Set(graph.nodes.map((n) => n.id));
      let i = 1;
      while (taken.has(`${type}_${i}`)) i += 1;
      return `${type}_${i}`;
    };
    const first = (pairs) => (pairs.length ? pairs[0][0] : null);
    const fresh = (type) => {
      const node = { id: newId(type), type };
      const defaults = {
        wait: { duration: { days: 1 } },
        wait_event: { event: S.defaultEvent, where: [], timeout: { days: 7 } },
        condition: { if: { all: [] } },
        split: { branches: [{ percent: 50, next: null, label: "" }, { percent: 50, next: null, label: "" }], holdout: 0 },
        send_email: { template: first(S.templates) },
        update_field: { field: S.updatable.length ? S.updatable[0].key : "", value: "" },
        add_tag: { tag: "" }, remove_tag: { tag: "" },
        set_stage: { stage: "mql" },
        score: { model: first(S.models), points: 10 },
        add_to_list: { list: first(S.lists) }, remove_from_list: { list: first(S.lists) },
        alert_owner: { message: "" },
        webhook: { webhook: first(S.webhooks) },
        enroll: { journey: first(S.journeys) },
        goal: { name: "" },
        exit: {},
      };
      return Object.assign(node, JSON.parse(JSON.stringify(defaults[type] || {})));
    };

    // --- words -------------------------------------------------------------------------------
    const nameOf = (pairs, id, missing) => {
      const hit = pairs.find(([k]) => String(k) === String(id));
      return hit ? hit[1] : fmt(missing || T.missing, { id: id === null || id === undefined ? "?" : id });
    };
    const quoted = (text) => fmt(T.quoted, { text });
    const durationText = (d) => {
      const parts = [];
      if (d && d.days) parts.push(fmt(plural(T.nDays, d.days), { n: d.days }));
      if (d && d.hours) parts.push(fmt(plural(T.nHours, d.hours), { n: d.hours }));
      if (d && d.minutes) parts.push(fmt(plural(T.nMinutes, d.minutes), { n: d.minutes }));
      return parts.join(" ") || "—";
    };
    const summary = (node) => {
      switch (node.type) {
        case "wait":
          if (node.duration) return fmt(T.waitFor, { time: durationText(node.duration) });
          if (node.until) return fmt(T.waitUntil, { when: String(node.until).slice(0, 16).replace("T", " ") });
          if (node.business_days) {
            return fmt(plural(T.waitBusiness, node.business_days), { n: node.business_days }) + (node.time_of_day ? ` · ${node.time_of_day}` : "");
          }
          return fmt(node.days ? plural(T.waitTimeDays, node.days) : T.waitTime, { at: node.time_of_day || "?", n: node.days || 0 });
        case "wait_event":
          return fmt(T.waitEvent, { time: durationText(node.timeout),
            event: node.event === "page" ? T.pageVisit : quoted(node.event || "?") });
        case "condition": return fmt(T.ifWords, { words: conditionWords(node.if) });
        case "split": return T.types.split;
        case "send_email": return fmt(T.sendEmail, { email: quoted(nameOf(S.templateNames, node.template)) });
        case "update_field": {
          const f = S.updatable.find((u) => u.key === node.field);
          return fmt(T.updateField, { field: f ? f.label : node.field || "?" });
        }
        case "add_tag": return fmt(T.addTag, { tag: quoted(node.tag || "?") });
        case "remove_tag": return fmt(T.removeTag, { tag: quoted(node.tag || "?") });
        case "set_stage": return fmt(T.setStage, { stage: nameOf(S.stages, node.stage) });
        case "score": {
          const points = Number(node.points) || 0;
          return fmt(T.scorePoints, { points: `${points > 0 ? "+" : ""}${points}`, model: nameOf(S.models, node.model) });
        }
        case "add_to_list": return fmt(T.addToList, { list: quoted(nameOf(S.listNames, node.list)) });
        case "remove_from_list": return fmt(T.removeFromList, { list: quoted(nameOf(S.listNames, node.list)) });
        case "webhook": return fmt(T.callWebhook, { webhook: quoted(nameOf(S.webhooks, node.webhook)) });
        case "enroll": return fmt(T.enrollIn, { journey: quoted(nameOf(S.journeyNames, node.journey)) });
        case "goal": return node.name ? fmt(T.goalNamed, { name: node.name }) : T.types.goal;
        default: return T.types[node.type] || node.type;
      }
    };
    // A condition in a few words, for the card (the editor shows it whole).
    const fieldsByKey = new Map(S.filter.fields.map((f) => [f.key, f]));
    const valueWords = (n, f) => {
      if (n.value === undefined || n.value === null) return "";
      const label = (v) => (f && f.choices ? nameOf(f.choices, v, "%(id)s") : n.field === "list" ? nameOf(S.lists, v)
        : n.field === "owner" ? nameOf(S.filter.users, v) : String(v));
      return Array.isArray(n.value) ? n.value.map(label).join(", ") : label(n.value);
    };
    const treeWords = (n, top) => {
      if (!n || typeof n !== "object") return "?";
      if ("all" in n || "any" in n) {
        const key = "all" in n ? "all" : "any";
        const parts = (n[key] || []).map((c) => treeWords(c, false));
        if (!parts.length) return key === "all" ? T.everyone : T.noOne;
        const joined = parts.join(key === "all" ? T.and : T.or);
        return parts.length === 1 || top ? joined : `(${joined})`;
      }
      if ("not" in n) return fmt(T.notWords, { words: treeWords(n.not, false) });
      if ("segment" in n) return fmt(T.inSegment, { segment: quoted(nameOf(S.segments, n.segment)) });
      if ("email" in n) {
        const action = nameOf(S.filter.emailActions, n.email);
        return `${action} ${n.template === null || n.template === undefined ? S.filter.text.anyTemplate : quoted(nameOf(S.templateNames, n.template))}`;
      }
      if ("event" in n) {
        const never = n.count && n.count.op === "eq" && n.count.value === 0;
        const what = n.event === "page" ? S.filter.text.page : n.event === S.filter.formEvent ? S.filter.text.form
          : quoted(n.event);
        return never ? fmt(T.neverWords, { what }) : what;
      }
      const f = fieldsByKey.get(n.field);
      const op = ((S.filter.kindOpLabels[f ? f.kind : ""] || {})[n.op]) || S.filter.opLabels[n.op] || n.op;
      return [f ? f.label : n.field, op, valueWords(n, f)].filter(Boolean).join(" ");
    };
    const conditionWords = (tree) => {
      const words = treeWords(tree, true);
      return words.length > 110 ? `${words.slice(0, 108)}…` : words;
    };
    const title = (node) => (node.label ? node.label : summary(node));
    const triggerSummary = (t) => {
      switch (t.type) {
        case "segment":
          return fmt(t.on === "exited" ? T.trLeaves : T.trEnters, { segment: quoted(nameOf(S.segments, t.segment)) });
        case "event": {
          const what = t.event === "page" ? T.trPage : fmt(T.trEvent, { event: quoted(t.event || "?") });
          const conds = (t.where || []).map((c) => {
            const f = String(c.field || "");
            const label = f.startsWith("properties.") ? fmt(T.property, { name: f.slice(11) }) : nameOf(S.filter.eventFields, f);
            return `${label} ${S.filter.opLabels[c.op] || c.op} ${quoted(c.value || "")}`;
          });
          return conds.length ? `${what} ${fmt(T.trWhere, { conditions: conds.join(T.and) })}` : what;
        }
        case "date": {
          const field = nameOf(S.dateFields, t.field);
          const days = Number(t.offset_days) || 0;
          const when = days < 0 ? fmt(plural(T.daysBefore, -days), { n: -days, field }) : days > 0 ? fmt(plural(T.daysAfter, days), { n: days, field })
            : fmt(T.onTheDay, { field });
          return fmt(T.trDate, { when, at: t.at || "09:00" });
        }
        case "schedule":
          return t.every === "week" ? fmt(T.trWeekly, { day: nameOf(S.weekdays, t.day), at: t.at || "10:00" })
            : fmt(T.trMonthly, { day: t.day || 1, at: t.at || "10:00" });
        default: return T.trManual;
      }
    };

    // --- changes -----------------------------------------------------------------------------
    const write = () => {
      if (!form) return;
      form.elements.graph.value = JSON.stringify(graph);
    };
    const markDirty = () => {
      dirty = true;
      write();
      const flag = document.querySelector("[data-unsaved]");
      if (flag) flag.hidden = false;
      const bar = document.querySelector(".save-bar");
      if (bar) bar.classList.add("floating");
    };
    // A value typed into a step: the model, its title, the JSON; the faults shown on it are cleared.
    const touched = (node) => {
      markDirty();
      const id = node ? node.id : "@trigger";
      const titleBox = app.querySelector(`[data-title="${CSS.escape(id)}"]`);
      if (titleBox) titleBox.textContent = node ? title(node) : triggerSummary(graph.trigger);
      const before = errors.length;
      errors = errors.filter((e) => !(node ? e.area === "node" && e.node === node.id : e.area === "trigger"));
      if (errors.length !== before) paintErrors();
    };
    // A change of shape (a step added, a way re-linked, another kind of wait): drawn again.
    const changed = () => {
      markDirty();
      draw();
    };

    // --- small controls ----------------------------------------------------------------------
    const field = (label, control, path, hint) => el("label", { class: "jd-field", "data-field": path || null },
      el("span", { class: "jd-field-label", text: label }), control, hint ? el("span", { class: "muted small", text: hint }) : null);
    const text = (value, oninput, props) => el("input", { type: "text", value: value === undefined || value === null ? "" : String(value),
      ...props, oninput: (ev) => oninput(ev.target.value) });
    const number = (value, oninput, props) => el("input", { type: "number", class: "jd-number",
      value: value === undefined || value === null ? "" : String(value), ...props,
      oninput: (ev) => oninput(ev.target.value === "" ? undefined : Number(ev.target.value)) });
    const select = (pairs, current, onchange, props) => {
      const known = pairs.some(([v]) => String(v) === String(current));
      const list = known || current === undefined || current === null || current === "" ? pairs
        : [...pairs, [current, nameOf([], current)]];
      const missing = current === undefined || current === null || current === "";
      return el("select", { ...props, onchange: (ev) => onchange(ev.target.value) },
        missing ? el("option", { value: "", selected: true, text: T.choose }) : null, options(list, current));
    };
    const button = (label, onclick, cls, props) => el("button", { type: "button", class: cls || "secondary small", onclick, ...props }, label);
    const setOrDelete = (obj, key, value) => { if (value === undefined || value === "") delete obj[key]; else obj[key] = value; };

    const durationInputs = (holder, key, node) => {
      const spec = holder[key] && typeof holder[key] === "object" ? holder[key] : {};
      holder[key] = spec;
      const unit = (name, label) => field(label, number(spec[name], (v) => { setOrDelete(spec, name, v); touched(node); },
        { min: "0", step: "1" }), `${key}.${name}`);
      return el("div", { class: "jd-row", "data-field": key }, unit("days", T.days), unit("hours", T.hours), unit("minutes", T.minutes));
    };

    // Conditions on an event (where its path or a property …), as in the segment builder.
    const whereRows = (spec, node) => {
      if (!Array.isArray(spec.where)) spec.where = [];
      const box = el("div", { class: "jd-wheres" });
      const fields = [...S.filter.eventFields, ["properties.", S.filter.text.property]];
      const redraw = () => {
        box.replaceChildren(...spec.where.map((cond, i) => {
          const isProperty = String(cond.field || "").startsWith("properties.");
          return el("div", { class: "seg-where", "data-field": `where[${i}]` },
            el("select", { "data-field": `where[${i}].field`, onchange: (ev) => {
              cond.field = ev.target.value === "properties." ? "properties." : ev.target.value;
              touched(node); redraw();
            } }, options(fields, isProperty ? "properties." : cond.field)),
            isProperty ? text(String(cond.field).slice(11), (v) => { cond.field = `properties.${v.trim()}`; touched(node); },
              { class: "seg-short", placeholder: S.filter.text.propertyName, "data-field": `where[${i}].field`,
                "aria-label": S.filter.text.propertyName }) : null,
            el("select", { "data-field": `where[${i}].op`, onchange: (ev) => { cond.op = ev.target.value; touched(node); } },
              options(S.filter.eventOps.map((op) => [op, S.filter.opLabels[op] || op]), cond.op)),
            text(cond.value, (v) => { cond.value = v; touched(node); }, { "data-field": `where[${i}].value`,
              "aria-label": T.value }),
            button("×", () => { spec.where.splice(i, 1); touched(node); redraw(); }, "secondary small", { "aria-label": T.remove }));
        }), button(S.filter.text.addWhere, () => {
          spec.where.push({ field: spec.event === "page" ? "path" : "properties.", op: "contains", value: "" });
          touched(node); redraw();
        }, "link small"));
        paintErrors();
      };
      redraw();
      return box;
    };
    const eventInput = (spec, node) => field(T.eventName, text(spec.event, (v) => { spec.event = v.trim(); touched(node); },
      { list: "jr-events", "data-field": "event" }), "event", T.eventHint);

    const filterBox = (where, tree, onchange, withCount) => {
      const holder = el("div", { class: "jd-filter" });
      const live = withCount ? el("output", { class: "live-count", "aria-live": "polite" }) : null;
      const b = window.KizunaFilters.mount(holder, { schema: S.filter, tree: tree || { all: [] }, onChange: onchange,
        countUrl: withCount && !readonly ? S.countUrl : null, csrf, live });
      builders.set(where, b);
      return el("div", { class: "jd-filter-box" }, live, holder);
    };

    // --- editors for each kind of step -------------------------------------------------------
    const valueControl = (node) => {
      const f = S.updatable.find((u) => u.key === node.field);
      const kind = f ? f.kind : "text";
      const set = (v) => { node.value = v; touched(node); };
      if (kind === "choice" || kind === "owner") {
        return select([["", T.empty], ...(f.choices || [])], node.value === null ? "" : node.value,
          (v) => set(v === "" ? (kind === "owner" ? null : "") : (kind === "owner" ? Number(v) : v)), { "data-field": "value" });
      }
      if (kind === "bool") {
        return select([["true", T.yesValue], ["false", T.noValue]], String(node.value), (v) => set(v === "true"),
          { "data-field": "value" });
      }
      if (kind === "multi") {
        const chosen = Array.isArray(node.value) ? node.value.map(String) : [];
        return el("span", { class: "seg-checks", "data-field": "value" }, (f.choices || []).map(([v, label]) => el("label", {},
          el("input", { type: "checkbox", value: String(v), checked: chosen.includes(String(v)), onchange: (ev) => {
            set(Array.from(ev.target.closest(".seg-checks").querySelectorAll("input:checked"), (o) => o.value));
          } }), String(label))));
      }
      if (kind === "number") return number(node.value, (v) => set(v === undefined ? null : v), { step: "any", "data-field": "value" });
      if (kind === "date") return el("input", { type: "date", value: node.value || "", "data-field": "value",
        oninput: (ev) => set(ev.target.value || null) });
      return text(node.value, set, { "data-field": "value" });
    };

    const waitEditor = (node) => {
      const mode = ["duration", "until", "business_days", "time_of_day"].find((k) => k in node) || "duration";
      const parts = [field(T.waitMode, select(S.waitModes, mode, (v) => {
        ["duration", "until", "time_of_day", "days", "business_days"].forEach((k) => delete node[k]);
        if (v === "duration") node.duration = { days: 1 };
        if (v === "until") node.until = "";
        if (v === "time_of_day") { node.time_of_day = "10:00"; node.days = 1; }
        if (v === "business_days") node.business_days = 3;
        changed();
      }, { "data-field": "mode" }))];
      if (mode === "duration") parts.push(durationInputs(node, "duration", node));
      if (mode === "until") {
        // A moment with its offset: the browser's own for what is typed here.
        const local = String(node.until || "").slice(0, 16);
        parts.push(field(T.until, el("input", { type: "datetime-local", value: local, "data-field": "until", oninput: (ev) => {
          const v = ev.target.value;
          if (!v) { node.until = ""; touched(node); return; }
          const offset = -new Date(v).getTimezoneOffset();
          const sign = offset >= 0 ? "+" : "-";
          const hh = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
          const mm = String(Math.abs(offset) % 60).padStart(2, "0");
          node.until = `${v}:00${sign}${hh}:${mm}`;
          touched(node);
        } }), "until", T.untilHint));
      }
      if (mode === "time_of_day") {
        parts.push(el("div", { class: "jd-row" },
          field(T.atTime, el("input", { type: "time", value: node.time_of_day || "", "data-field": "time_of_day",
            oninput: (ev) => { node.time_of_day = ev.target.value; touched(node); } }), "time_of_day"),
          field(T.daysLater, number(node.days, (v) => { node.days = v === undefined ? 0 : v; touched(node); },
            { min: "0", step: "1" }), "days")));
        parts.push(el("p", { class: "muted small", text: T.timeOfDayHint }));
      }
      if (mode === "business_days") {
        parts.push(el("div", { class: "jd-row" },
          field(T.businessDays, number(node.business_days, (v) => { node.business_days = v === undefined ? null : v; touched(node); },
            { min: "1", step: "1" }), "business_days"),
          field(T.atTimeOptional, el("input", { type: "time", value: node.time_of_day || "", "data-field": "time_of_day",
            oninput: (ev) => { setOrDelete(node, "time_of_day", ev.target.value); touched(node); } }), "time_of_day")));
        parts.push(el("p", { class: "muted small", text: T.businessHint }));
      }
      return parts;
    };

    const splitEditor = (node) => {
      if (!Array.isArray(node.branches)) node.branches = [];
      const total = () => node.branches.reduce((s, b) => s + (Number(b.percent) || 0), 0) + (Number(node.holdout) || 0);
      const sum = el("p", { class: "small jd-sum" });
      const showSum = () => {
        const t = total();
        sum.textContent = fmt(T.splitTotal, { n: t });
        sum.className = `small jd-sum ${t === 100 ? "ok" : "bad"}`;
      };
      const rows = node.branches.map((b, j) => el("div", { class: "jd-row jd-branch-row", "data-field": `branches[${j}]` },
        el("span", { class: "jd-letter", text: branchLetter(j) }),
        field(T.percent, number(b.percent, (v) => { b.percent = v === undefined ? null : v; showSum(); touched(node); redrawWays(node); },
          { min: "1", max: "100", step: "1" }), `branches[${j}].percent`),
        field(T.branchLabel, text(b.label, (v) => { b.label = v; touched(node); redrawWays(node); }, { maxlength: "100" }),
          `branches[${j}].label`),
        node.branches.length > 1 ? button("×", () => {
          node.branches.splice(j, 1);
          changed();
        }, "secondary small", { "aria-label": T.remove, title: T.removeBranch }) : null));
      showSum();
      return [el("div", { class: "jd-branch-rows", "data-field": "branches" }, rows),
        button(T.addBranch, () => { node.branches.push({ percent: 10, next: null, label: "" }); changed(); }, "link small"),
        field(T.holdout, number(node.holdout, (v) => { node.holdout = v === undefined ? 0 : v; showSum(); touched(node); },
          { min: "0", max: "99", step: "1" }), "holdout", T.holdoutHint), sum];
    };

    const EDITORS = {
      wait: waitEditor,
      wait_event: (node) => [eventInput(node, node), whereRows(node, node), el("div", { class: "jd-sub", text: T.timeout }),
        durationInputs(node, "timeout", node)],
      condition: (node) => [el("div", { "data-field": "if" }, filterBox(`node:${node.id}`, node.if, (t) => { node.if = t; touched(node); }, true))],
      split: splitEditor,
      send_email: (node) => [field(T.template, select(S.templates, node.template, (v) => { node.template = v ? Number(v) : null; touched(node); },
        { "data-field": "template" }), "template", S.templates.length ? T.templateHint : T.noTemplates)],
      update_field: (node) => [field(T.field, select(S.updatable.map((u) => [u.key, u.label]), node.field, (v) => {
        node.field = v;
        const f = S.updatable.find((u) => u.key === v);
        node.value = f && f.kind === "multi" ? [] : f && f.kind === "bool" ? true : f && (f.kind === "number" || f.kind === "owner") ? null : "";
        changed();
      }, { "data-field": "field" }), "field"), field(T.value, valueControl(node), "value")],
      add_tag: (node) => [field(T.tag, text(node.tag, (v) => { node.tag = v; touched(node); }, { list: "jr-tags", maxlength: "100", "data-field": "tag" }), "tag")],
      set_stage: (node) => [field(T.stage, select(S.stages, node.stage, (v) => { node.stage = v; touched(node); }, { "data-field": "stage" }), "stage")],
      score: (node) => [el("div", { class: "jd-row" },
        field(T.model, select(S.models, node.model, (v) => { node.model = v ? Number(v) : null; touched(node); }, { "data-field": "model" }), "model"),
        field(T.points, number(node.points, (v) => { node.points = v === undefined ? null : v; touched(node); },
          { step: "1", min: "-1000", max: "1000" }), "points", T.pointsHint))],
      add_to_list: (node) => [field(T.list, select(S.lists, node.list, (v) => { node.list = v ? Number(v) : null; touched(node); }, { "data-field": "list" }), "list")],
      alert_owner: (node) => [field(T.message, el("textarea", { rows: "3", maxlength: "1000", placeholder: T.alertDefault, "data-field": "message",
        oninput: (ev) => { node.message = ev.target.value; touched(node); } }, node.message || ""), "message", T.alertHint)],
      webhook: (node) => [field(T.webhook, select(S.webhooks, node.webhook, (v) => { node.webhook = v ? Number(v) : null; touched(node); },
        { "data-field": "webhook" }), "webhook", S.webhooks.length ? "" : T.noWebhooks)],
      enroll: (node) => [field(T.journey, select(S.journeys, node.journey, (v) => { node.journey = v ? Number(v) : null; touched(node); },
        { "data-field": "journey" }), "journey", T.enrollHint)],
      exit: () => [el("p", { class: "muted small", text: T.exitHint })],
      goal: (node) => [field(T.goalName, text(node.name, (v) => { node.name = v; touched(node); }, { maxlength: "100", "data-field": "name" }),
        "name", T.goalHint)],
    };
    EDITORS.remove_tag = EDITORS.add_tag;
    EDITORS.remove_from_list = EDITORS.add_to_list;

    // Where each way goes: the step drawn below it, another step ("go to"), or the end.
    const linkEditors = (node) => ways(node).filter((w) => !w.end).map((w) => {
      const pairs = [["", T.endHere], ...graph.nodes.map((n) => [n.id, `${title(n)} (${n.id})`])];
      return field(w.key === "next" ? T.continueWith : fmt(T.wayGoesTo, { way: w.label }),
        el("select", { "data-field": w.key, onchange: (ev) => { setLink(node, w.key, ev.target.value || null); changed(); } },
          options(pairs, getLink(node, w.key) || "")), w.key);
    });

    const editor = (node) => {
      const fs = el("fieldset", { class: "jd-editor", disabled: readonly });
      fs.append(field(T.label, text(node.label, (v) => { setOrDelete(node, "label", v); touched(node); },
        { maxlength: "200", placeholder: summary(node), "data-field": "label" }), "label", T.labelHint));
      fs.append(...(EDITORS[node.type] || (() => [el("p", { class: "muted", text: T.unknownType })]))(node));
      fs.append(...linkEditors(node));
      // The foot stays outside the fieldset: a viewer's fieldset is disabled, yet "Close" must work.
      return el("div", { class: "jd-editor-box" }, fs, el("div", { class: "jd-editor-foot" },
        readonly ? null : button(T.deleteStep, () => {
          const snapshot = JSON.stringify(graph);
          if (removeNode(node)) changed();
          else { graph = JSON.parse(snapshot); draw(); }
        }, "danger small", { "data-delete": "" }),
        el("span", { class: "spacer" }),
        button(readonly ? T.close : T.done, () => { open.delete(node.id); draw(); }, "secondary small", { "data-done": "" })));
    };

    // --- the trigger -------------------------------------------------------------------------
    const triggerEditor = () => {
      const t = graph.trigger;
      const fs = el("fieldset", { class: "jd-editor", disabled: readonly });
      fs.append(field(T.trType, select(S.triggerTypes, t.type, (v) => {
        graph.trigger = { ...JSON.parse(JSON.stringify(S.triggerDefaults[v] || {})), type: v };
        changed();
      }, { "data-field": "type" }), "type"));
      if (t.type === "segment") {
        fs.append(el("div", { class: "jd-row" },
          field(T.segment, select(S.segments, t.segment, (v) => { t.segment = v ? Number(v) : null; touched(null); },
            { "data-field": "segment" }), "segment", S.segments.length ? "" : T.noSegments),
          field(T.when, select([["entered", T.entered], ["exited", T.exited]], t.on || "entered",
            (v) => { t.on = v; touched(null); }, { "data-field": "on" }), "on")));
      }
      if (t.type === "event") fs.append(eventInput(t, null), whereRows(t, null));
      if (t.type === "date") {
        const days = Number(t.offset_days) || 0;
        const side = days < 0 ? "before" : days > 0 ? "after" : "on";
        const amount = el("input", { type: "number", class: "jd-number", min: "0", step: "1", value: String(Math.abs(days)),
          "data-field": "offset_days", disabled: side === "on" || readonly,
          oninput: (ev) => {
            const n = ev.target.value === "" ? 0 : Number(ev.target.value);
            t.offset_days = side === "before" ? -n : n;
            touched(null);
          } });
        fs.append(field(T.dateField, select(S.dateFields, t.field, (v) => { t.field = v; touched(null); }, { "data-field": "field" }), "field"),
          el("div", { class: "jd-row" }, field(T.days, amount, "offset_days"),
            field(T.when, select([["before", T.before], ["on", T.onDay], ["after", T.after]], side, (v) => {
              const n = Math.abs(Number(t.offset_days) || 0) || (v === "on" ? 0 : 30);
              t.offset_days = v === "before" ? -n : v === "after" ? n : 0;
              changed();
            }), "offset_days"),
            field(T.atTime, el("input", { type: "time", value: t.at || "09:00", "data-field": "at",
              oninput: (ev) => { t.at = ev.target.value; touched(null); } }), "at")));
      }
      if (t.type === "schedule") {
        fs.append(el("div", { class: "jd-row" },
          field(T.every, select([["month", T.month], ["week", T.week]], t.every, (v) => { t.every = v; t.day = v === "week" ? 0 : 1; changed(); },
            { "data-field": "every" }), "every"),
          t.every === "week"
            ? field(T.weekday, select(S.weekdays, t.day, (v) => { t.day = Number(v); touched(null); }, { "data-field": "day" }), "day")
            : field(T.dayOfMonth, number(t.day, (v) => { t.day = v === undefined ? null : v; touched(null); }, { min: "1", max: "28", step: "1" }),
              "day", T.dayOfMonthHint),
          field(T.atTime, el("input", { type: "time", value: t.at || "10:00", "data-field": "at",
            oninput: (ev) => { t.at = ev.target.value; touched(null); } }), "at")));
        fs.append(el("div", { class: "jd-sub", text: T.audience }),
          el("div", { "data-field": "audience" }, filterBox("trigger", t.audience, (tree) => { t.audience = tree; touched(null); }, true)));
      }
      if (t.type === "manual") fs.append(el("p", { class: "muted small", text: T.manualHint }));
      return el("div", { class: "jd-editor-box" }, fs, el("div", { class: "jd-editor-foot" }, el("span", { class: "spacer" }),
        button(readonly ? T.close : T.done, () => { open.delete("@trigger"); draw(); }, "secondary small", { "data-done": "" })));
    };

    const triggerCard = () => {
      const editing = open.has("@trigger");
      return el("div", { class: `jd-node jd-trigger${editing ? " editing" : ""}`, "data-node": "@trigger" },
        el("div", { class: "jd-node-head" }, el("span", { class: "jd-type", text: T.trigger }), el("span", { class: "spacer" }),
          editing ? null : button(readonly ? T.details : T.edit, () => { open.add("@trigger"); draw(); }, "secondary small", { "data-edit": "" })),
        el("div", { class: "jd-title", "data-title": "@trigger", text: triggerSummary(graph.trigger) }),
        el("ul", { class: "jd-errors", "data-errors": "@trigger" }),
        editing ? triggerEditor() : null);
    };

    // --- the diagram -------------------------------------------------------------------------
    const slotId = (owner, key) => `${owner ? owner.id : ""}|${key}`;
    const TYPE_GROUPS = [
      [T.groupWait, ["wait", "wait_event"]],
      [T.groupBranch, ["condition", "split"]],
      [T.groupAction, ["send_email", "update_field", "add_tag", "remove_tag", "set_stage", "score", "add_to_list",
        "remove_from_list", "alert_owner", "webhook", "enroll", "goal", "exit"]],
    ];
    const insert = (owner, key, type) => {
      const node = fresh(type);
      const after = getLink(owner, key);
      const primary = ways(node)[0];
      if (primary && after) setLink(node, primary.key, after);
      graph.nodes.push(node);
      setLink(owner, key, node.id);
      open.add(node.id);
      menu = null;
      changed();
      const box = app.querySelector(`[data-node="${CSS.escape(node.id)}"]`);
      if (box) box.scrollIntoView({ block: "nearest", inline: "nearest" });
    };
    const addMenu = (owner, key) => {
      const after = getLink(owner, key);
      const here = slotId(owner, key);
      return el("div", { class: "jd-menu", role: "menu" },
        TYPE_GROUPS.map(([group, types]) => el("div", { class: "jd-menu-group" }, el("div", { class: "jd-menu-title", text: group }),
          types.filter((t) => t !== "exit" || !after).map((t) => button(T.types[t], () => insert(owner, key, t),
            `secondary small jd-add-${t}`, { role: "menuitem", "data-add-type": t })))),
        el("div", { class: "jd-menu-foot" },
          !after && graph.nodes.length ? button(T.goToStep, () => { menu = { slot: here, kind: "goto" }; draw(); }, "link small",
            { "data-goto": here }) : null,
          el("span", { class: "spacer" }),
          button(T.cancel, () => { menu = null; draw(); }, "link small")));
    };
    const gotoMenu = (owner, key) => {
      const choice = el("select", { "aria-label": T.goToStep, "data-goto-select": "" },
        options(graph.nodes.filter((n) => !owner || n.id !== owner.id || owner.type === "wait" || owner.type === "wait_event")
          .map((n) => [n.id, `${title(n)} (${n.id})`]), ""));
      return el("div", { class: "jd-menu jd-goto-menu" }, el("span", { class: "small", text: T.goToStep }), choice,
        button(T.ok, () => { if (choice.value) { setLink(owner, key, choice.value); menu = null; changed(); } }, "small"),
        button(T.cancel, () => { menu = null; draw(); }, "link small"));
    };
    const linkEl = (owner, key) => {
      const here = slotId(owner, key);
      const showing = menu && menu.slot === here && menu.kind === "add";
      return el("div", { class: "jd-linkwrap" },
        el("div", { class: "jd-link" }, readonly ? null : button("+", () => { menu = { slot: here, kind: "add" }; draw(); },
          "jd-add", { title: T.addStep, "aria-label": T.addStep, "data-add": here })),
        showing ? addMenu(owner, key) : null);
    };
    const endEl = (owner, key, words) => {
      const here = slotId(owner, key);
      const showing = menu && menu.slot === here && menu.kind === "goto";
      return el("div", { class: "jd-end", "data-end": owner || key === "start" ? here : null },
        el("span", { class: "jd-end-dot", text: words || T.end }),
        showing ? gotoMenu(owner, key) : null);
    };
    const gotoEl = (owner, key, target, nodes) => {
      const node = nodes.get(target);
      return el("div", { class: "jd-goto", "data-goto-target": target },
        el("button", { type: "button", class: "link small", onclick: () => {
          const box = app.querySelector(`[data-node="${CSS.escape(target)}"]`);
          if (box) {
            box.scrollIntoView({ block: "center", inline: "center", behavior: "smooth" });
            box.classList.add("flash");
            setTimeout(() => box.classList.remove("flash"), 1200);
          }
        } }, fmt(node ? T.goesTo : T.goesToMissing, { step: node ? title(node) : target })),
        readonly ? null : button("×", () => { setLink(owner, key, null); changed(); }, "secondary small",
          { title: T.unlink, "aria-label": T.unlink }));
    };
    const moves = (node) => {
      // Up: swap with the single step above it, when both are plain steps (one way in, one way out).
      const linear = (n) => n && !BRANCHING.has(n.type) && n.type !== "exit";
      let parent = null;
      graph.nodes.forEach((n) => { if (ways(n).some((w) => getLink(n, w.key) === node.id)) parent = parent || n; });
      const up = linear(node) && linear(parent) && incoming(node.id) === 1 && incoming(parent.id) === 1 ? parent : null;
      const below = byId().get(getLink(node, "next"));
      const down = linear(node) && linear(below) && incoming(node.id) === 1 && incoming(below.id) === 1 ? below : null;
      return { up, down };
    };
    const swap = (upper, lower) => {
      // … → upper → lower → rest  becomes  … → lower → upper → rest
      eachLink((owner, key, target) => { if (target === upper.id) setLink(owner, key, lower.id); });
      const rest = getLink(lower, "next");
      setLink(lower, "next", upper.id);
      setLink(upper, "next", rest);
      changed();
    };
    const removeNode = (node) => {
      const before = reachable();
      const keep = ways(node).filter((w) => !w.end).map((w) => getLink(node, w.key))[0] || null;
      eachLink((owner, key, target) => { if (target === node.id && owner !== node) setLink(owner, key, keep === node.id ? null : keep); });
      graph.nodes = graph.nodes.filter((n) => n !== node);
      const after = reachable();
      const dropped = graph.nodes.filter((n) => before.has(n.id) && !after.has(n.id));
      if (dropped.length && !window.confirm(fmt(T.confirmDropBranches, { n: dropped.length }))) {
        return false;
      }
      graph.nodes = graph.nodes.filter((n) => !dropped.includes(n));
      open.delete(node.id);
      errors = errors.filter((e) => e.node !== node.id);
      return true;
    };
    const card = (node) => {
      const editing = open.has(node.id);
      const { up, down } = readonly ? {} : moves(node);
      return el("div", { class: `jd-node jd-${node.type}${editing ? " editing" : ""}`, "data-node": node.id, id: `step-${node.id}` },
        el("div", { class: "jd-node-head" },
          el("span", { class: "jd-type", text: T.types[node.type] || node.type }), el("span", { class: "spacer" }),
          up ? button("↑", () => swap(up, node), "secondary small", { title: T.moveUp, "aria-label": T.moveUp }) : null,
          down ? button("↓", () => swap(node, down), "secondary small", { title: T.moveDown, "aria-label": T.moveDown }) : null,
          editing ? null : button(readonly ? T.details : T.edit, () => { open.add(node.id); draw(); }, "secondary small",
            { "data-edit": "" })),
        el("div", { class: "jd-title", "data-title": node.id, text: title(node) }),
        el("div", { class: "jd-stats", "data-stats": node.id }),
        el("ul", { class: "jd-errors", "data-errors": node.id }),
        editing ? editor(node) : null);
    };
    const redrawWays = (node) => {
      ways(node).forEach((w) => {
        const head = app.querySelector(`[data-way="${CSS.escape(`${node.id}|${w.key}`)}"] .jd-way-label`);
        if (head) head.textContent = w.label;
      });
    };
    const branchRow = (node, list, nodes, placed) => el("div", { class: "jd-fork" },
      el("div", { class: "jd-stem" }),
      el("div", { class: "jd-branches" }, list.map((w) => el("div", { class: `jd-branch jd-col way-${w.cls}`, "data-way": `${node.id}|${w.key}` },
        el("div", { class: "jd-way" }, el("span", { class: "jd-way-label", text: w.label }),
          el("span", { class: "jd-way-count", "data-way-count": `${node.id}|${w.key}` })),
        w.end ? [el("div", { class: "jd-link short" }), endEl(null, null, T.holdoutEnd)] : chain(node, w.key, nodes, placed)))));
    function chain(owner, key, nodes, placed) {
      const target = getLink(owner, key);
      const out = [linkEl(owner, key)];
      if (!target) return [...out, endEl(owner, key)];
      if (placed.has(target) || !nodes.has(target)) return [...out, gotoEl(owner, key, target, nodes)];
      return [...out, ...follow(nodes.get(target), nodes, placed)];
    }
    function follow(node, nodes, placed) {
      placed.add(node.id);
      const out = [card(node)];
      const list = ways(node);
      if (!list.length) return [...out, el("div", { class: "jd-link short" }), endEl(null, null, T.leaves)];
      if (!BRANCHING.has(node.type)) return [...out, ...chain(node, list[0].key, nodes, placed)];
      return [...out, branchRow(node, list, nodes, placed)];
    }

    const diagram = el("div", { class: "jd", "data-diagram": "" });
    // Zoom: a wide journey (many ways side by side) can be seen whole, then read at 100%.
    let zoom = 1;
    const zoomText = el("span", { class: "jd-zoom-value", "aria-live": "polite" });
    const setZoom = (z) => {
      zoom = Math.min(1.25, Math.max(0.4, Math.round(z * 100) / 100));
      Array.from(diagram.children).forEach((c) => { c.style.zoom = String(zoom); });
      zoomText.textContent = `${Math.round(zoom * 100)}%`;
    };
    const fit = () => {
      setZoom(1);
      const wanted = diagram.clientWidth / Math.max(diagram.scrollWidth, 1);
      setZoom(Math.min(1, wanted));
    };
    const zoomBar = el("div", { class: "jd-zoom" },
      button("−", () => setZoom(zoom - 0.1), "secondary small", { title: T.zoomOut, "aria-label": T.zoomOut }),
      zoomText,
      button("+", () => setZoom(zoom + 0.1), "secondary small", { title: T.zoomIn, "aria-label": T.zoomIn }),
      button(T.zoomFit, fit, "secondary small", { "data-zoom-fit": "" }),
      button("100%", () => setZoom(1), "secondary small"));
    const banner = el("ul", { class: "errorlist nonfield jd-banner", hidden: true, role: "alert" });
    function draw() {
      builders.forEach((_b, where) => { if (where !== "exit_filter" && where !== "goal_filter") builders.delete(where); });
      const nodes = byId();
      const placed = new Set();
      const root = el("div", { class: "jd-col jd-root" }, triggerCard(), ...chain(null, "start", nodes, placed));
      const loose = graph.nodes.filter((n) => !placed.has(n.id));
      const parts = [root];
      if (loose.length) {
        const cols = [];
        loose.forEach((n) => { if (!placed.has(n.id)) cols.push(el("div", { class: "jd-col jd-loose" }, ...follow(n, nodes, placed))); });
        parts.push(el("div", { class: "jd-unconnected", "data-unconnected": "" }, el("h3", { text: T.unconnected }),
          el("p", { class: "muted small", text: T.unconnectedHelp }), el("div", { class: "jd-branches jd-loose-row" }, cols)));
      }
      diagram.replaceChildren(...parts);
      parts.forEach((c) => { if (zoom !== 1) c.style.zoom = String(zoom); });
      write();
      paintErrors();
      paintStats();
    }

    // --- faults ------------------------------------------------------------------------------
    const covers = (control, wanted) => control === wanted || wanted.startsWith(`${control}.`) || wanted.startsWith(`${control}[`)
      || control.startsWith(`${wanted}.`) || control.startsWith(`${wanted}[`);
    function paintErrors() {
      app.querySelectorAll(".has-error").forEach((n) => n.classList.remove("has-error"));
      app.querySelectorAll("[data-errors]").forEach((n) => n.replaceChildren());
      builders.forEach((b) => b.setError(null));
      const general = [];
      errors.forEach((e) => {
        const where = e.area === "node" ? e.node : e.area === "trigger" ? "@trigger" : null;
        const box = where ? app.querySelector(`[data-node="${CSS.escape(where)}"]`) : null;
        if (e.area === "exit_filter" || e.area === "goal_filter") {
          const b = builders.get(e.area);
          const details = document.querySelector(`[data-filter-for="${e.area}"]`);
          if (details) { details.open = true; details.classList.add("has-error"); }
          const list = document.querySelector(`[data-errors="${e.area}"]`);
          if (list) list.append(el("li", { text: `${e.path}: ${e.message}` }));
          if (b) b.setError(e.field, e.message);
          return;
        }
        if (!box) { general.push(e); return; }
        box.classList.add("has-error");
        box.querySelector("[data-errors]").append(el("li", { text: e.field ? `${e.field}: ${e.message}` : e.message }));
        const filterKey = e.area === "trigger" ? "audience" : "if";
        if (e.field === filterKey || e.field.startsWith(`${filterKey}.`)) {
          const b = builders.get(e.area === "trigger" ? "trigger" : `node:${e.node}`);
          if (b) b.setError(e.field.slice(filterKey.length + 1), e.message);
        }
        if (e.field) {
          box.querySelectorAll("[data-field]").forEach((c) => { if (covers(c.dataset.field, e.field)) c.classList.add("has-error"); });
        }
      });
      banner.replaceChildren(...general.map((e) => el("li", { text: `${e.path}: ${e.message}` })));
      banner.hidden = !general.length;
    }

    // --- live numbers ------------------------------------------------------------------------
    const chip = (cls, label, n, hint) => el("span", { class: `jd-chip ${cls}`, title: hint || null },
      el("b", { text: numbers.format(n) }), ` ${label}`);
    function paintStats() {
      if (!stats) return;
      const sc = stats[scope];
      app.querySelectorAll("[data-stats]").forEach((box) => {
        const n = sc.nodes[box.dataset.stats];
        box.replaceChildren();
        if (!n) return;
        box.append(chip("entered", T.statEntered, n.entered, T.statEnteredHint));
        if (n.waiting) box.append(chip("waiting", T.statWaiting, n.waiting, T.statWaitingHint));
        if (n.due) box.append(chip("due", T.statDue, n.due, T.statDueHint));
        if (n.skipped) box.append(chip("skipped", T.statSkipped, n.skipped, T.statSkippedHint));
      });
      app.querySelectorAll("[data-way-count]").forEach((box) => {
        const [id, key] = box.dataset.wayCount.split("|");
        const n = sc.nodes[id];
        const taken = n && n.ways ? n.ways[key] || 0 : 0;
        const base = n ? Object.values(n.ways || {}).reduce((a, b) => a + b, 0) : 0;
        box.textContent = n ? `${numbers.format(taken)}${base ? ` · ${Math.round((100 * taken) / base)}%` : ""}` : "";
      });
      document.querySelectorAll("[data-stat]").forEach((box) => {
        const key = box.dataset.stat;
        const value = key === "enrolled" ? sc.enrolled : key === "goals" ? sc.goals : key === "conversion" ? sc.conversion
          : sc.states[key];
        const none = value === null || value === undefined || (key === "conversion" && !S.hasGoal);
        box.textContent = none ? "—" : key === "conversion" ? `${numbers.format(value)}%` : numbers.format(value);
      });
      (stats.versions || []).forEach((v) => {
        const runs = document.querySelector(`[data-version-runs="${v.id}"]`);
        const openRuns = document.querySelector(`[data-version-open="${v.id}"]`);
        if (runs) runs.textContent = numbers.format(v.runs);
        if (openRuns) openRuns.textContent = numbers.format(v.open);
      });
      const at = document.querySelector("[data-stats-at]");
      if (at) at.textContent = fmt(T.statsAt, { time: new Date().toLocaleTimeString(document.documentElement.lang || undefined) });
    }
    const scopeSelect = document.querySelector("[data-stats-scope]");
    if (scopeSelect) scopeSelect.addEventListener("change", () => { scope = scopeSelect.value; paintStats(); });
    if (S.statsUrl) {
      const poll = () => {
        if (document.hidden) { setTimeout(poll, S.statsEvery); return; }
        fetch(S.statsUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
          .then((r) => (r.ok ? r.json() : null))
          .then((body) => { if (body) { stats = body; paintStats(); } })
          .catch(() => {})
          .finally(() => setTimeout(poll, S.statsEvery));
      };
      setTimeout(poll, S.statsEvery);
    }

    // --- exit and goal conditions (settings) --------------------------------------------------
    ["exit_filter", "goal_filter"].forEach((key) => {
      const holder = document.querySelector(`[data-filter-builder="${key}"]`);
      if (!holder || !form) return;
      const input = form.elements[key];
      let tree = null;
      try { tree = JSON.parse(input.value || "null"); } catch (err) { tree = null; }
      const words = document.querySelector(`[data-filter-words="${key}"]`);
      const fs = el("fieldset", { class: "jd-plain", disabled: readonly });
      holder.append(fs);
      const b = window.KizunaFilters.mount(fs, { schema: S.filter, tree: tree || { all: [] }, onChange: (t) => {
        input.value = JSON.stringify(t);
        if (words) words.hidden = true;
        markDirty();
      } });
      builders.set(key, b);
    });

    // --- the page ----------------------------------------------------------------------------
    app.append(zoomBar, banner,
      el("datalist", { id: "jr-events" }, S.events.map((e) => el("option", { value: e }))),
      el("datalist", { id: "jr-tags" }, S.filter.tags.map((t) => el("option", { value: t }))),
      diagram);
    app.hidden = false;
    draw();
    setZoom(1);
    if (!open.size && diagram.scrollWidth > diagram.clientWidth + 4) setZoom(Math.max(0.6, diagram.clientWidth / diagram.scrollWidth));
    if (form) {
      form.addEventListener("input", (ev) => { if (!app.contains(ev.target)) markDirty(); });
      form.addEventListener("submit", () => {
        write();
        form.elements.open_steps.value = Array.from(open).join(",");
        dirty = false;
      });
      window.addEventListener("beforeunload", (ev) => { if (dirty) { ev.preventDefault(); ev.returnValue = ""; } });
    }
    const firstError = app.querySelector(".has-error") || document.querySelector(".jd-banner:not([hidden])");
    if (firstError && errors.length) firstError.scrollIntoView({ block: "center" });
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
