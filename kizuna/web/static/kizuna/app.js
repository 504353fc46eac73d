// Kizuna's small behaviours: auto-submit selects, copy buttons, progress polling.
// No inline scripts anywhere (the CSP forbids them), so pages mark elements with data-*.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-autosubmit]").forEach((el) => {
    el.addEventListener("change", () => el.form.submit());
  });
  document.querySelectorAll("[data-copy]").forEach((btn) => {
    btn.addEventListener("click", () => {
      const target = document.getElementById(btn.dataset.copy);
      navigator.clipboard.writeText(target.textContent.trim()).then(() => {
        btn.textContent = btn.dataset.copied || "Copied";
      });
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });
  // A [data-progress-url] element polls a JSON endpoint {done, percent, text, html?}
  // and reloads the page when the job is finished.
  document.querySelectorAll("[data-progress-url]").forEach((box) => {
    const bar = box.querySelector("progress");
    const text = box.querySelector("[data-progress-text]");
    const tick = () => {
      fetch(box.dataset.progressUrl, { headers: { Accept: "application/json" } })
        .then((r) => r.json())
        .then((data) => {
          if (bar && data.percent !== null && data.percent !== undefined) bar.value = data.percent;
          if (text) text.textContent = data.text;
          if (data.done) window.location.reload();
          else setTimeout(tick, 700);
        })
        .catch(() => setTimeout(tick, 2000));
    };
    tick();
  });
});

// A [data-live-url] box refreshes its [data-live-rows] body and status counters every 3 s.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live-url]").forEach((box) => {
    const rows = box.querySelector("[data-live-rows]");
    const set = (name, value) => {
      const el = box.querySelector(`[data-${name}]`);
      if (el) el.textContent = value;
    };
    const tick = () => {
      fetch(box.dataset.liveUrl, { headers: { Accept: "application/json" } })
        .then((r) => r.json())
        .then((data) => {
          if (rows) rows.innerHTML = data.rows;  // rendered and escaped by the server
          set("pending", data.status.pending);
          set("lag", data.status.lag_seconds);
          set("failed", data.status.failed);
        })
        .finally(() => setTimeout(tick, 3000));
    };
    setTimeout(tick, 3000);
  });
});

// Email template preview: follows the editor as you type (posted into the frame, which has its
// own strict CSP), as which contact, at which width, HTML or plain text.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-preview-controls]").forEach((controls) => {
    const frame = document.querySelector("[data-preview-frame]");
    const editor = document.querySelector("[data-template-form]");
    if (!frame || !editor) return;
    const fields = ["subject", "html", "text", "is_mjml", "kind", "sender"];
    const refresh = () => {
      controls.querySelectorAll("input[data-copied-field]").forEach((el) => el.remove());
      fields.forEach((name) => {
        const source = editor.elements[name];
        if (!source) return;
        if (source.type === "checkbox" && !source.checked) return;
        const copy = document.createElement("input");
        copy.type = "hidden";
        copy.name = name;
        copy.value = source.type === "checkbox" ? "on" : source.value;
        copy.dataset.copiedField = "1";
        controls.appendChild(copy);
      });
      controls.submit();
    };
    let timer = null;
    const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 600); };
    editor.addEventListener("input", later);
    controls.querySelector("[data-preview-contact]").addEventListener("change", refresh);
    controls.querySelector("[data-preview-part]").addEventListener("change", refresh);
    const width = controls.querySelector("[data-preview-width]");
    width.addEventListener("change", () => { frame.style.width = width.value; });
    if (!frame.getAttribute("src")) refresh();
  });
});

// A [data-png] link (its href the chart's SVG download) turns that SVG into a PNG in the browser (twice the size,
// for slides): fetch the standalone SVG, draw it on a canvas, save the canvas. The SVG goes in as a
// data: URL, which the CSP's img-src allows and which leaves the canvas readable.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("a[data-png]").forEach((link) => {
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      fetch(link.href)
        .then((r) => r.text())
        .then((svg) => new Promise((resolve, reject) => {
          const img = new Image();
          img.onload = () => resolve(img);
          img.onerror = reject;
          img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
        }))
        .then((img) => {
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth * 2;
          canvas.height = img.naturalHeight * 2;
          const ctx = canvas.getContext("2d");
          ctx.scale(2, 2);
          ctx.drawImage(img, 0, 0);
          const save = document.createElement("a");
          save.href = canvas.toDataURL("image/png");
          save.download = link.dataset.filename || "chart.png";
          document.body.appendChild(save);
          save.click();
          save.remove();
        });
    });
  });
});
