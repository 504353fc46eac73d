// The landing page block editor. The form posts the variants as JSON from its textarea, which
// stays the source of truth; this script draws each variant's blocks as small forms, writes
// every change back, and places the server's faults (paths such as variants[0].blocks[2].url)
// beside the field at fault. Values are only set with textContent or .value (never as HTML);
// no inline scripts or styles (CSP).
(() => {
  "use strict";

  const start = () => {
    const box = document.querySelector("[data-landing-editor]");
    if (!box) return;
    const T = box.dataset;
    const form = box.closest("form");
    const textarea = form.querySelector("[data-variants-json]");
    const errors = new Map(JSON.parse(document.getElementById("landing-errors").textContent || "[]"));
    const forms = JSON.parse(document.getElementById("landing-forms").textContent || "[]");
    const TYPES = ["heading", "text", "greeting", "image", "form", "cta"];
    const FRESH = {
      heading: () => ({type: "heading", text: "", level: 2}),
      text: () => ({type: "text", text: ""}),
      greeting: () => ({type: "greeting", known: "{name}", anonymous: ""}),
      image: () => ({type: "image", src: "", alt: ""}),
      form: () => ({type: "form", form: forms.length ? forms[0].id : null}),
      cta: () => ({type: "cta", text: "", url: "", style: "primary"}),
    };
    let variants;
    try {
      variants = JSON.parse(textarea.value || "[]");
      if (!Array.isArray(variants) || !variants.every((v) => v && Array.isArray(v.blocks))) throw new Error();
    } catch {
      return; // not something the editor can draw: the JSON box stays the way to fix it
    }
    if (!variants.length) variants = [{key: "A", weight: 100, blocks: []}];

    const el = (tag, props, ...kids) => {
      const node = document.createElement(tag);
      Object.entries(props || {}).forEach(([k, v]) => {
        if (v === undefined || v === null || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : v);
      });
      kids.flat().forEach((kid) => { if (kid !== null && kid !== undefined && kid !== "") node.append(kid); });
      return node;
    };
    const save = () => { textarea.value = JSON.stringify(variants, null, 2); };
    const fault = (path) => (errors.has(path) ? el("p", {class: "errorlist field-error", text: errors.get(path)}) : null);

    const input = (label, block, key, path, opts = {}) => {
      const id = `lp-${path.replace(/[^a-z0-9]/gi, "-")}-${key}`;
      const field = opts.multiline
        ? el("textarea", {id, rows: opts.rows || 4})
        : el("input", {id, type: opts.type || "text"});
      field.value = block[key] ?? "";
      field.addEventListener("input", () => { block[key] = field.value; save(); });
      if (errors.has(`${path}.${key}`)) field.setAttribute("aria-invalid", "true");
      return el("div", {class: "lp-field"}, el("label", {for: id, text: label}), field, fault(`${path}.${key}`));
    };
    const select = (label, block, key, path, choices, cast = (v) => v) => {
      const id = `lp-${path.replace(/[^a-z0-9]/gi, "-")}-${key}`;
      const field = el("select", {id});
      choices.forEach(([value, text]) => {
        const option = el("option", {value: String(value), text});
        if (String(block[key]) === String(value)) option.selected = true;
        field.append(option);
      });
      field.addEventListener("change", () => { block[key] = cast(field.value); save(); });
      return el("div", {class: "lp-field"}, el("label", {for: id, text: label}), field, fault(`${path}.${key}`));
    };

    const blockFields = (block, path) => {
      switch (block.type) {
        case "heading":
          return [input(T.tHeading, block, "text", path),
            select(T.tLevel, block, "level", path, [[1, "H1"], [2, "H2"], [3, "H3"]], Number)];
        case "text":
          return [input(T.tText, block, "text", path, {multiline: true, rows: 5})];
        case "greeting":
          return [input(T.tKnown, block, "known", path), input(T.tAnonymous, block, "anonymous", path)];
        case "image":
          return [input(T.tSrc, block, "src", path, {type: "url"}), input(T.tAlt, block, "alt", path)];
        case "form":
          if (!forms.length) return [el("p", {class: "muted", text: T.tNoForms}), fault(`${path}.form`)];
          return [select(T.tForm, block, "form", path, forms.map((f) => [f.id, f.name]), Number)];
        case "cta":
          return [input(T.tLabel, block, "text", path), input(T.tUrl, block, "url", path),
            select(T.tStyle, block, "style", path, [["primary", T.tPrimary], ["secondary", T.tSecondary]])];
        default:
          return [];
      }
    };

    const draw = () => {
      box.replaceChildren();
      variants.forEach((variant, vi) => {
        const vpath = `variants[${vi}]`;
        const card = el("section", {class: "lp-variant", "data-variant": variant.key});
        const weight = el("input", {type: "number", min: "0", max: "100", id: `lp-weight-${vi}`, class: "narrow"});
        weight.value = variant.weight;
        weight.addEventListener("input", () => { variant.weight = Number(weight.value); save(); });
        card.append(el("div", {class: "toolbar"},
          el("h3", {text: `${T.tVariant} ${variant.key}`}),
          el("label", {for: `lp-weight-${vi}`, class: "muted", text: T.tShare}), weight,
          el("span", {class: "spacer"}),
          variants.length > 1 ? el("button", {type: "button", class: "link danger", text: T.tRemoveVariant, onclick: () => {
            variants.splice(vi, 1);
            rebalance(); save(); draw();
          }}) : null));
        [fault(`${vpath}.key`), fault(`${vpath}.weight`)].forEach((f) => { if (f) card.append(f); });
        const list = el("ol", {class: "lp-blocks"});
        if (!variant.blocks.length) list.append(el("li", {class: "muted", text: T.tEmpty}));
        variant.blocks.forEach((block, bi) => {
          const path = `${vpath}.blocks[${bi}]`;
          const move = (delta) => {
            const [b] = variant.blocks.splice(bi, 1);
            variant.blocks.splice(bi + delta, 0, b);
            save(); draw();
          };
          list.append(el("li", {class: "lp-block", "data-block": block.type},
            el("div", {class: "toolbar"}, el("strong", {text: T[`t${block.type[0].toUpperCase()}${block.type.slice(1)}`] || block.type}),
              el("span", {class: "spacer"}),
              bi > 0 ? el("button", {type: "button", class: "link", text: "↑", title: T.tUp, "aria-label": T.tUp, onclick: () => move(-1)}) : null,
              bi < variant.blocks.length - 1 ? el("button", {type: "button", class: "link", text: "↓", title: T.tDown, "aria-label": T.tDown, onclick: () => move(1)}) : null,
              el("button", {type: "button", class: "link danger", text: T.tRemove, onclick: () => {
                variant.blocks.splice(bi, 1); save(); draw();
              }})),
            fault(`${path}.type`), ...blockFields(block, path)));
        });
        card.append(list);
        const kind = el("select", {"aria-label": T.tAddBlock, "data-add-block": ""},
          el("option", {value: "", text: `${T.tAddBlock}…`}),
          ...TYPES.map((t) => el("option", {value: t, text: T[`t${t[0].toUpperCase()}${t.slice(1)}`]})));
        kind.addEventListener("change", () => {
          if (!kind.value) return;
          variant.blocks.push(FRESH[kind.value]());
          save(); draw();
        });
        card.append(el("div", {class: "lp-add"}, kind));
        box.append(card);
      });
      if (variants.length < 5) {
        box.append(el("button", {type: "button", class: "secondary", "data-add-variant": "", text: T.tAddVariant, onclick: () => {
          const used = new Set(variants.map((v) => v.key));
          const key = "ABCDE".split("").find((k) => !used.has(k));
          // A new variant starts as a copy of A: an A/B test changes one thing.
          variants.push({key, weight: 0, blocks: JSON.parse(JSON.stringify(variants[0].blocks))});
          rebalance(); save(); draw();
        }}));
      }
      const top = errors.has("variants") ? el("p", {class: "errorlist field-error", text: errors.get("variants")}) : null;
      if (top) box.prepend(top);
    };
    // Equal shares after adding or removing a variant; the marketer can change them.
    const rebalance = () => {
      const share = Math.floor(100 / variants.length);
      variants.forEach((v, i) => { v.weight = i === 0 ? 100 - share * (variants.length - 1) : share; });
    };

    box.hidden = false;
    save();
    draw();
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
