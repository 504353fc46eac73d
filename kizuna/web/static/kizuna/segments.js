// The segment filter builder. `KizunaFilters.mount(box, options)` draws a filter tree as nested
// groups and conditions inside `box` and reports every change through `onChange(tree)`; with a
// `countUrl` and a `live` element it also shows the live count (or the exact fault and its path)
// from POST /api/v1/segments/count. The segment page mounts one builder bound to its textarea,
// which stays the source of truth (and can be edited by hand); the journey builder mounts one per
// condition (exit, goal, audience, condition steps).
// Every word comes from the schema, translated on the server. Values are only ever set with
// textContent or .value, never as HTML. No inline scripts or styles (CSP).
(() => {
  "use strict";

  const mount = (box, opts) => {
    const S = opts.schema;
    const T = S.text;
    const live = opts.live || null;
    const csrf = opts.csrf || "";
    const segmentId = opts.segmentId || null;
    const onChange = opts.onChange || (() => {});
    const fields = new Map(S.fields.map((f) => [f.key, f]));
    const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);
    const root = document.createElement("div");
    let tree = opts.tree || { all: [] };
    let errorPath = opts.errorPath === undefined || opts.errorPath === "" ? null : opts.errorPath;
    let errorMessage = opts.errorMessage || "";

    // --- small DOM helpers -------------------------------------------------------------------
    const el = (tag, props, ...kids) => {
      const node = document.createElement(tag);
      Object.entries(props || {}).forEach(([k, v]) => {
        if (v === undefined || v === null || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else if (k === "part") node.dataset.part = v;
        else node.setAttribute(k, v === true ? "" : v);
      });
      kids.flat().forEach((kid) => { if (kid !== null && kid !== undefined && kid !== "") node.append(kid); });
      return node;
    };
    const options = (pairs, current) => pairs.map(([value, label]) =>
      el("option", { value: String(value), selected: String(value) === String(current) }, String(label)));
    const pick = (pairs, current, onchange, props) =>
      el("select", { ...props, onchange: (ev) => onchange(ev.target.value) }, options(pairs, current));
    const button = (label, onclick, cls) =>
      el("button", { type: "button", class: cls || "secondary small", onclick }, label);
    const datalist = (id, values) => el("datalist", { id }, values.map((v) => el("option", { value: v })));

    // --- the tree ----------------------------------------------------------------------------
    const isGroup = (n) => n && typeof n === "object" && ("all" in n || "any" in n);
    const opLabel = (kind, op) => ((S.kindOpLabels[kind] || {})[op]) || S.opLabels[op] || op;
    const kindOf = (name) => (fields.get(name) || {}).kind;
    const firstOp = { text: "contains", choice: "in", date: "in_last_days", number: "gte", bool: "is_true",
      owner: "in", multi: "has_any", tag: "has", list: "in", consent: "in", "score.engagement": "gte",
      "score.fit": "gte", "score.grade": "at_least" };

    const fieldNode = (key) => {
      const kind = kindOf(key);
      const node = { field: key, op: firstOp[kind] || S.ops[kind][0] };
      if (key.startsWith("score.") && S.models.length) node.model = S.models[0][0];
      if (kind === "list" && S.lists.length) node.value = S.lists[0][0];
      if (kind === "score.grade") node.value = "B";
      return node;
    };
    const fresh = (subject) => {
      const once = { op: "gte", value: 1 };
      if (subject === "page") {
        return { event: "page", where: [{ field: "path", op: "contains", value: "" }], count: once, within_days: 30 };
      }
      if (subject === "form") return { event: S.formEvent, where: [], count: once, within_days: null };
      if (subject === "event") {
        const name = S.events.find((e) => e !== S.formEvent) || "";
        return { event: name, where: [], count: once, within_days: null };
      }
      if (subject === "email") return { email: "opened", template: null, count: once, within_days: 30 };
      if (subject === "segment") return { segment: S.segments.length ? S.segments[0][0] : 0 };
      return fieldNode(subject.slice(6));
    };
    const subjectOf = (node) => {
      if ("field" in node) return `field:${node.field}`;
      if ("email" in node) return "email";
      if ("segment" in node) return "segment";
      if (node.event === "page") return "page";
      if (node.event === S.formEvent) return "form";
      return "event";
    };

    // --- writing back, counting --------------------------------------------------------------
    let timer = null;
    let sequence = 0;
    const changed = (redraw) => {
      onChange(tree);
      if (redraw) draw();
      if (!opts.countUrl || !live) return;
      clearTimeout(timer);
      timer = setTimeout(countNow, 400);
    };
    const showProblem = (path, message) => {
      errorPath = path;
      errorMessage = message;
      live.className = "live-count bad";
      live.textContent = `${T.errorAt.replace("%(path)s", path || "filter")} ${message}`;
      mark();
    };
    function countNow() {
      if (!opts.countUrl || !live) return;
      const mine = ++sequence;
      live.className = "live-count busy";
      live.textContent = T.counting;
      fetch(opts.countUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ filter: tree, segment: segmentId }),
      }).then((r) => r.json().then((body) => [r.status, body])).then(([status, body]) => {
        if (mine !== sequence) return;  // an older answer arriving late
        if (status === 200) {
          errorPath = null;
          if (opts.onCounted) opts.onCounted(body);
          live.className = "live-count ok";
          live.textContent = `${numbers.format(body.count)} ${T.contacts} · ${numbers.format(body.ms)} ${T.ms}`;
          live.dataset.count = String(body.count);
          mark();
          return;
        }
        const detail = (body.error && body.error.details && body.error.details[0]) || {};
        const path = (detail.path || "filter").replace(/^filter\.?/, "");
        showProblem(path, detail.message || (body.error && body.error.message) || T.countFailed);
      }).catch(() => {
        if (mine !== sequence) return;
        live.className = "live-count bad";
        live.textContent = T.countFailed;
      });
    }

    // Marks the condition (and the control within it) that an error path points at.
    const mark = () => {
      root.querySelectorAll(".has-error").forEach((n) => n.classList.remove("has-error"));
      root.querySelectorAll(".seg-error").forEach((n) => n.remove());
      if (errorPath === null) return;
      const within = (p) => errorPath === p || (p === "" ? errorPath !== "" :
        errorPath.startsWith(`${p}.`) || errorPath.startsWith(`${p}[`));
      let best = null;
      root.querySelectorAll("[data-path]").forEach((n) => {
        const p = n.dataset.path;
        if (within(p) && (best === null || p.length >= best.dataset.path.length)) best = n;
      });
      if (!best) return;
      best.classList.add("has-error");
      const base = best.dataset.path;
      const rest = base ? errorPath.slice(base.length + 1) : errorPath;
      const own = Array.from(best.querySelectorAll("[data-part]")).filter((c) => c.closest("[data-path]") === best);
      const control = own.find((c) => c.dataset.part === rest) || own.find((c) => rest.startsWith(`${c.dataset.part}.`));
      if (control) control.classList.add("has-error");
      const note = el("div", { class: "seg-error", role: "alert" }, `${errorPath || "filter"}: ${errorMessage}`);
      best.append(note);
    };

    // --- drawing -----------------------------------------------------------------------------
    const subjectSelect = (node, replace) => {
      const groups = new Map();
      S.fields.forEach((f) => {
        if (!groups.has(f.group)) groups.set(f.group, []);
        groups.get(f.group).push([`field:${f.key}`, f.label]);
      });
      const current = subjectOf(node);
      const select = el("select", { class: "seg-subject", part: "field", onchange: (ev) => replace(fresh(ev.target.value)) },
        Array.from(groups, ([group, pairs]) => el("optgroup", { label: group }, options(pairs, current))),
        el("optgroup", { label: T.behaviour }, options([["page", T.page], ["form", T.form], ["event", T.event],
          ["email", T.email], ["segment", T.segment]], current)));
      return select;
    };

    const numberInput = (value, oninput, props) => el("input", {
      type: "number", value: value === undefined || value === null ? "" : String(value), ...props,
      oninput: (ev) => oninput(ev.target.value === "" ? undefined : Number(ev.target.value)) });

    const valueControl = (node) => {
      const kind = kindOf(node.field);
      const op = node.op;
      const field = fields.get(node.field);
      if (S.valueless.includes(op)) return null;
      const set = (v) => {
        if (v === undefined) delete node.value; else node.value = v;
        changed(false);
      };
      // A few values: checkboxes anyone can tick; many (prefectures, industries): a list box.
      const many = (pairs, numeric) => (pairs.length <= 8 ? el("span", { class: "seg-checks", part: "value" },
        pairs.map(([v, label]) => el("label", {}, el("input", {
          type: "checkbox", value: String(v),
          checked: Array.isArray(node.value) && node.value.map(String).includes(String(v)),
          onchange: (ev) => set(Array.from(ev.target.closest(".seg-checks").querySelectorAll("input:checked"),
            (o) => (numeric ? Number(o.value) : o.value))),
        }), String(label)))) : el("span", { class: "seg-inline" }, el("select", {
        multiple: true, part: "value", size: String(Math.min(Math.max(pairs.length, 2), 6)),
        onchange: (ev) => set(Array.from(ev.target.selectedOptions, (o) => (numeric ? Number(o.value) : o.value))),
      }, pairs.map(([v, label]) => el("option", {
        value: String(v), selected: Array.isArray(node.value) && node.value.map(String).includes(String(v)),
      }, String(label)))), el("span", { class: "seg-hint", text: T.manyHint })));
      if (kind === "owner") return many(S.users, true);
      if (kind === "list") return pick(S.lists, node.value, (v) => set(Number(v)), { part: "value" });
      if (kind === "score.grade") {
        const grades = [["A", "A"], ["B", "B"], ["C", "C"], ["D", "D"]];
        return op === "in" ? many(grades, false) : pick(grades, node.value, set, { part: "value" });
      }
      if (["choice", "multi", "consent"].includes(kind)) return many(field.choices || [], false);
      if (kind === "date" && (op === "before" || op === "after")) {
        return el("input", { type: "date", part: "value", value: node.value || "",
          oninput: (ev) => set(ev.target.value || undefined) });
      }
      if (kind === "date" || kind === "number" || kind.startsWith("score.")) {
        const days = op === "in_last_days" || op === "not_in_last_days";
        const input = numberInput(node.value, set, { part: "value", step: days ? "1" : "any",
          min: days ? "1" : null, class: "seg-number" });
        return days ? el("span", { class: "seg-inline" }, input, el("span", { text: T.days })) : input;
      }
      return el("input", { type: "text", part: "value", value: node.value || "", list: kind === "tag" ? "seg-tags" : null,
        oninput: (ev) => set(ev.target.value) });
    };

    const fieldControls = (node) => {
      const kind = kindOf(node.field);
      if (!kind) return [el("span", { class: "muted", text: T.unknown })];
      const parts = [];
      if (node.field.startsWith("score.")) {
        parts.push(pick(S.models, node.model, (v) => { node.model = Number(v); changed(false); },
          { part: "model", "aria-label": T.model }));
      }
      parts.push(pick((S.ops[kind] || []).map((op) => [op, opLabel(kind, op)]), node.op, (op) => {
        const before = node.op;
        node.op = op;
        const days = (o) => o === "in_last_days" || o === "not_in_last_days";
        if (S.valueless.includes(op) || days(op) !== days(before) || (kind === "score.grade")) delete node.value;
        if (kind === "score.grade" && op === "at_least") node.value = "B";
        changed(true);
      }, { part: "op" }));
      parts.push(valueControl(node));
      return parts;
    };

    const countControls = (node) => {
      const never = node.count && node.count.op === "eq" && node.count.value === 0;
      const parts = [pick([["did", T.did], ["not", T.didNot]], never ? "not" : "did", (v) => {
        node.count = v === "not" ? { op: "eq", value: 0 } : { op: "gte", value: 1 };
        changed(true);
      }, { part: "count" })];
      if (!never) {
        parts.push(pick(S.countOps, node.count.op, (v) => { node.count.op = v; changed(false); }, { part: "count.op" }));
        parts.push(numberInput(node.count.value, (v) => { node.count.value = v === undefined ? 0 : v; changed(false); },
          { part: "count.value", min: "0", step: "1", class: "seg-number" }));
        parts.push(el("span", { text: T.times }));
      }
      const windowed = node.within_days !== null && node.within_days !== undefined;
      parts.push(pick([["ever", T.ever], ["within", T.withinLast]], windowed ? "within" : "ever", (v) => {
        node.within_days = v === "within" ? 30 : null;
        changed(true);
      }, { part: "within" }));
      if (windowed) {
        parts.push(numberInput(node.within_days, (v) => { node.within_days = v === undefined ? null : v; changed(false); },
          { part: "within_days", min: "1", max: String(S.maxDays), step: "1", class: "seg-number" }));
        parts.push(el("span", { text: T.days }));
      }
      return parts;
    };

    const whereRows = (node) => {
      const pairs = [...S.eventFields, ["properties.", T.property]];
      const rows = (node.where || []).map((cond, i) => {
        const isProperty = cond.field.startsWith("properties.");
        const row = el("div", { class: "seg-where" },
          pick(pairs, isProperty ? "properties." : cond.field, (v) => {
            cond.field = v === "properties." ? (isProperty ? cond.field : "properties.") : v;
            changed(true);
          }, { part: `where[${i}].field` }),
          isProperty ? el("input", { type: "text", part: `where[${i}].field`, placeholder: T.propertyName,
            value: cond.field.slice(11), class: "seg-short",
            oninput: (ev) => { cond.field = `properties.${ev.target.value.trim()}`; changed(false); } }) : null,
          pick(S.eventOps.map((op) => [op, opLabel("", op)]), cond.op, (v) => { cond.op = v; changed(false); },
            { part: `where[${i}].op` }),
          el("input", { type: "text", part: `where[${i}].value`, value: cond.value || "",
            oninput: (ev) => { cond.value = ev.target.value; changed(false); } }),
          button("×", () => { node.where.splice(i, 1); changed(true); }, "secondary small seg-remove"));
        return row;
      });
      return el("div", { class: "seg-wheres" }, rows.length ? el("span", { class: "muted small", text: T.where }) : null,
        rows, button(T.addWhere, () => {
          node.where = node.where || [];
          node.where.push({ field: node.event === "page" ? "path" : "properties.form", op: "contains", value: "" });
          changed(true);
        }, "link small"));
    };

    const leaf = (node, path, replace, remove) => {
      const line = el("div", { class: "seg-line" }, subjectSelect(node, replace));
      const extra = [];
      if ("field" in node) {
        line.append(...fieldControls(node).filter(Boolean));
      } else if ("event" in node) {
        if (subjectOf(node) === "event") {
          line.append(el("input", { type: "text", part: "event", list: "seg-events", value: node.event,
            placeholder: T.eventName, "aria-label": T.eventName,
            oninput: (ev) => { node.event = ev.target.value; changed(false); } }));
        }
        line.append(...countControls(node));
        extra.push(whereRows(node));
      } else if ("email" in node) {
        line.append(pick(S.emailActions, node.email, (v) => { node.email = v; changed(false); }, { part: "email" }));
        line.append(pick([["", T.anyTemplate], ...S.templates], node.template === null ? "" : node.template, (v) => {
          node.template = v === "" ? null : Number(v);
          changed(false);
        }, { part: "template" }));
        line.append(...countControls(node));
      } else if ("segment" in node) {
        line.append(S.segments.length ? pick(S.segments, node.segment, (v) => { node.segment = Number(v); changed(false); },
          { part: "segment" }) : el("span", { class: "muted", text: T.noSegments }));
      }
      line.append(el("span", { class: "spacer" }), button(T.negate, () => replace({ not: node })),
        button(T.remove, remove, "secondary small seg-remove"));
      return el("div", { class: "seg-cond", "data-path": path }, line, extra);
    };

    const group = (node, path, replace, remove, isRoot) => {
      const key = "all" in node ? "all" : "any";
      const at = path ? `${path}.` : "";
      const children = node[key];
      const list = el("div", { class: "seg-children" });
      children.forEach((child, i) => {
        list.append(render(child, `${at}${key}[${i}]`, (next) => { children[i] = next; changed(true); },
          () => { children.splice(i, 1); changed(true); }));
      });
      if (!children.length) list.append(el("p", { class: "muted small", text: key === "all" ? T.empty : T.emptyAny }));
      const head = el("div", { class: "seg-group-head" },
        pick([["all", T.all], ["any", T.any]], key, (v) => {
          if (v !== key) { node[v] = node[key]; delete node[key]; changed(true); }
        }, { part: key, class: "seg-mode" }),
        el("span", { class: "spacer" }),
        button(T.negate, () => replace({ not: node })),
        isRoot ? null : button(T.remove, remove, "secondary small seg-remove"));
      const foot = el("div", { class: "seg-group-foot" },
        button(T.addCondition, () => { children.push(fresh(`field:${S.fields[0].key}`)); changed(true); }),
        button(T.addGroup, () => { children.push({ any: [] }); changed(true); }));
      return el("div", { class: `seg-group seg-${key}`, "data-path": path }, head, list, foot);
    };

    const negation = (node, path, replace, remove) => {
      const at = path ? `${path}.` : "";
      const inner = render(node.not, `${at}not`, (next) => { node.not = next; changed(true); }, remove);
      return el("div", { class: "seg-not", "data-path": path },
        el("div", { class: "seg-not-head" }, el("span", { class: "badge bad", text: T.not }),
          el("span", { class: "spacer" }), button(T.unnegate, () => replace(node.not))),
        inner);
    };

    function render(node, path, replace, remove, isRoot) {
      if (node && typeof node === "object" && !Array.isArray(node)) {
        if (isGroup(node)) return group(node, path, replace, remove, isRoot);
        if ("not" in node) return negation(node, path, replace, remove);
        if ("field" in node || "event" in node || "email" in node || "segment" in node) {
          return leaf(node, path, replace, remove);
        }
      }
      return el("div", { class: "seg-cond", "data-path": path },
        el("div", { class: "seg-line" }, el("code", { text: JSON.stringify(node) }), el("span", { class: "spacer" }),
          button(T.remove, remove, "secondary small seg-remove")),
        el("p", { class: "muted small", text: T.unknown }));
    }

    function draw() {
      const setRoot = (next) => { tree = next; changed(true); };
      const clear = () => setRoot({ all: [] });
      root.replaceChildren(render(tree, "", setRoot, clear, true));
      if (!isGroup(tree)) {  // a single condition or NOT at the top: adding makes an "all" group around it
        root.append(el("div", { class: "seg-group-foot" },
          button(T.addCondition, () => setRoot({ all: [tree, fresh(`field:${S.fields[0].key}`)] })),
          button(T.addGroup, () => setRoot({ all: [tree, { any: [] }] }))));
      }
      mark();
    }

    // Datalists are shared by every builder on the page.
    if (!document.getElementById("seg-events")) document.body.append(datalist("seg-events", S.events));
    if (!document.getElementById("seg-tags")) document.body.append(datalist("seg-tags", S.tags));
    box.append(root);
    draw();
    if (opts.countUrl && live) countNow();
    return {
      get tree() { return tree; },
      setTree(next) { tree = next; draw(); if (opts.countUrl && live) countNow(); },
      setError(path, message) { errorPath = path === undefined ? null : path; errorMessage = message || ""; mark(); },
      count: countNow,
    };
  };

  window.KizunaFilters = { mount };

  // The segment page: one builder bound to the form's textarea.
  const start = () => {
    const box = document.querySelector("[data-segment-builder]");
    if (!box) return;
    const form = box.closest("form");
    const textarea = form.querySelector("[data-filter-json]");
    const jsonBox = form.querySelector("[data-filter-json-box]");
    const live = form.querySelector("[data-live-count]");
    const serverError = form.querySelector("[data-filter-error]");
    const schema = JSON.parse(box.dataset.schema);
    const parse = () => {
      try {
        return JSON.parse(textarea.value.trim() || '{"all": []}');
      } catch (err) {
        live.className = "live-count bad";
        live.textContent = `${schema.text.badJson} ${err.message}`;
        return undefined;
      }
    };
    let builder = null;
    const apply = (first) => {
      const tree = parse();
      if (tree === undefined) return;
      if (builder) {
        builder.setTree(tree);
        return;
      }
      builder = mount(box, {
        schema, tree, live,
        countUrl: box.dataset.countUrl,
        csrf: form.querySelector("input[name=csrfmiddlewaretoken]").value,
        segmentId: box.dataset.segmentId ? Number(box.dataset.segmentId) : null,
        errorPath: box.dataset.errorPath || null,
        errorMessage: serverError ? serverError.textContent : "",
        onChange: (next) => { textarea.value = JSON.stringify(next, null, 2); },
        onCounted: () => { if (serverError) serverError.hidden = true; },
      });
      if (first && jsonBox && !form.querySelector(".filter-json .errorlist")) jsonBox.open = false;
    };
    box.hidden = false;
    apply(true);
    let typing = null;
    textarea.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => apply(false), 500);
    });
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
