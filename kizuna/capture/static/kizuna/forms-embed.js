/* Kizuna form embed: fills every <div data-kizuna-form="slug"> with the form from the Kizuna that
 * serves this script, and sends it with fetch, showing errors beside the fields. The form's HTML
 * is rendered and escaped by Kizuna; messages from the answer are set as text, never as HTML.
 * The request is a CORS "simple" one (form-encoded body, Accept header), so no preflight. */
(() => {
  'use strict';
  const me = document.currentScript;
  if (!me) return;
  const host = new URL(me.src).origin;

  const anonymousId = () => {
    const m = document.cookie.match(/(?:^|; )_kz_aid=([^;]*)/);
    if (m) return decodeURIComponent(m[1]);
    try { return localStorage.getItem('_kz_aid') || ''; } catch { return ''; }
  };

  const hideTrap = root => {
    // The honeypot is off screen by the stylesheet; set it here too in case the site blocks it.
    for (const el of root.querySelectorAll('.kz-hp')) {
      Object.assign(el.style, {position: 'absolute', left: '-10000px', width: '1px', height: '1px', overflow: 'hidden'});
    }
  };

  const show = (form, data) => {
    const message = form.querySelector('[data-kz-message]');
    for (const el of form.querySelectorAll('[data-kz-error-for]')) el.textContent = '';
    for (const el of form.querySelectorAll('.kz-invalid')) el.classList.remove('kz-invalid');
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const errors = data.errors || {};
    let first = null;
    for (const [name, text] of Object.entries(errors)) {
      const box = form.querySelector(`[data-kz-field="${CSS.escape(name)}"]`);
      const slot = form.querySelector(`[data-kz-error-for="${CSS.escape(name)}"]`);
      if (slot) slot.textContent = text;
      if (box) {
        box.classList.add('kz-invalid');
        const input = box.querySelector('input, select, textarea');
        if (input) {
          input.setAttribute('aria-invalid', 'true');
          first = first || input;
        }
      }
    }
    if (message) {
      message.textContent = (data.error && data.error.message) || '';
      message.classList.toggle('kz-empty', !message.textContent);
    }
    if (data.token) form.elements.kz_token.value = data.token; // the form had expired: a fresh one
    if (first) first.focus();
  };

  const wire = (box, form) => {
    const button = form.querySelector('button[type=submit]');
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      if (button) button.disabled = true;
      fetch(form.action, {
        method: 'POST', body: new URLSearchParams(new FormData(form)), credentials: 'omit',
        headers: {Accept: 'application/json'},
      })
        .then(r => r.json())
        .then(data => {
          if (data.ok) {
            if (data.redirect) {
              location.href = data.redirect;
              return;
            }
            const done = document.createElement('div');
            done.className = 'kz-thanks';
            done.setAttribute('role', 'status');
            done.textContent = data.message || '';
            box.replaceChildren(done);
          } else {
            show(form, data);
          }
        })
        .catch(() => show(form, {error: {message: box.dataset.kizunaOffline || 'Could not send the form. Please try again.'}}))
        .finally(() => { if (button) button.disabled = false; });
    });
  };

  const load = box => {
    if (box.dataset.kizunaLoaded) return;
    box.dataset.kizunaLoaded = '1';
    const params = new URLSearchParams({page: location.href, ref: document.referrer, aid: anonymousId()});
    fetch(`${host}/f/${encodeURIComponent(box.dataset.kizunaForm)}/embed?${params}`, {credentials: 'omit'})
      .then(r => r.json())
      .then(data => {
        if (!data.html) {
          box.textContent = (data.error && data.error.message) || '';
          return;
        }
        box.innerHTML = data.html; // rendered and escaped by Kizuna
        hideTrap(box);
        const form = box.querySelector('form.kz-form');
        if (form) wire(box, form);
      })
      .catch(() => {});
  };

  const start = () => document.querySelectorAll('[data-kizuna-form]').forEach(load);
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
