/* Kizuna web tracker, served as /kz.js after `window.kizuna_config={...};`. Batches go to
 * {host}/v1/batch as text/plain: a CORS simple request, so no preflight. */
(() => {
  'use strict';
  const w = window, d = document, nav = navigator, loc = location;
  const C = w.kizuna_config || {};
  const prev = w.kizuna;
  if (prev?.kz) return; // loaded twice
  const queue = prev?.q || [];
  const dnt = C.respectDnt && (nav.doNotTrack === '1' || w.doNotTrack === '1' || nav.globalPrivacyControl === true);
  if (dnt) {
    const off = () => {};
    off.kz = 1;
    w.kizuna = off;
    return;
  }

  const EP = String(C.host || '').replace(/\/+$/, '') + '/v1/batch';
  const TYPE = 'text/plain;charset=UTF-8';
  const AID = '_kz_aid', UID = '_kz_uid', CONSENT = '_kz_consent', AGE = 63072000; // 2 years
  const FILES = /^(pdf|zip|docx?|xlsx?|pptx?|csv|txt|dmg|exe|msi|mp[34]|key|numbers|pages)$/;
  const LIMIT = 60000, MAX_EVENT = 32000; // keepalive bodies must stay under 64 KB
  const TRAITS = {
    name: 'name', fullname: 'name', yourname: 'name', 氏名: 'name',
    firstname: 'first_name', fname: 'first_name', givenname: 'first_name', mei: 'first_name',
    lastname: 'last_name', lname: 'last_name', familyname: 'last_name', surname: 'last_name', sei: 'last_name',
    company: 'company', companyname: 'company', organization: 'company', 会社名: 'company',
    phone: 'phone', tel: 'phone', telephone: 'phone', phonenumber: 'phone',
    title: 'title', jobtitle: 'title', organizationtitle: 'title',
  };
  const SECRET = /pass|card|^cc|cvc|cvv|csc|secur|iban|pin$|token|secret/i;

  // state: 1 sending, 2 waiting for consent (memory only), 0 stopped
  let state = C.consent === 'required' && cookie(CONSENT) !== 'granted' ? 2 : 1;
  let aid = null, uid = null, pv = null, buf = [], held = [], retry = [], timer = 0, hb = 0, frozen = false;
  let lastUrl = '', inflight = 0;

  function cookie(k) {
    const m = d.cookie.match(new RegExp('(?:^|; )' + k + '=([^;]*)'));
    return m ? decodeURIComponent(m[1]) : null;
  }
  const setCookie = (k, v, age) => {
    d.cookie = k + '=' + encodeURIComponent(v) + '; Max-Age=' + age + '; Path=/; SameSite=Lax' +
      (loc.protocol === 'https:' ? '; Secure' : '') + (C.cookieDomain ? '; Domain=' + C.cookieDomain : '');
  };
  // localStorage may be blocked: then the cookie alone keeps the id
  const store = (k, v) => { try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch {} };
  const stored = k => { try { return localStorage.getItem(k); } catch { return null; } };
  const cr = w.crypto; // randomUUID exists only in secure contexts
  const uuid = () => cr.randomUUID ? cr.randomUUID() : '10000000-1000-4000-8000-100000000000'
    .replace(/[018]/g, x => (x ^ (cr.getRandomValues(new Uint8Array(1))[0] & (15 >> (x / 4)))).toString(16));
  const iso = () => new Date().toISOString();
  const obj = x => (x && typeof x === 'object' ? x : null);

  // The ids are written only while sending is allowed; the cookie is restored from storage.
  const persist = () => {
    aid = aid || cookie(AID) || stored(AID) || uuid();
    setCookie(AID, aid, AGE);
    store(AID, aid);
    if (uid) store(UID, uid);
  };

  const pageInfo = () => ({
    url: loc.href, path: loc.pathname, title: d.title, referrer: lastUrl || d.referrer, search: loc.search,
  });
  const context = page => {
    const c = {
      library: {name: 'kizuna.js', version: '1'}, page, userAgent: nav.userAgent, locale: nav.language,
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone, screen: {width: screen.width, height: screen.height},
    };
    const p = new URLSearchParams(loc.search), cp = {};
    for (const k of ['source', 'medium', 'campaign', 'term', 'content']) {
      if (p.get('utm_' + k)) cp[k === 'campaign' ? 'name' : k] = p.get('utm_' + k);
    }
    if (Object.keys(cp).length) c.campaign = cp;
    return c;
  };
  const message = (type, extra, page) => {
    const m = Object.assign({type, messageId: uuid(), timestamp: iso(), context: context(page || pageInfo())}, extra);
    if (aid) m.anonymousId = aid;
    if (uid) m.userId = uid;
    return m;
  };

  // --- sending
  // how: 0 coalesce ~500 ms, 1 now with fetch, 2 now with sendBeacon (the page is going away)
  const enqueue = (m, how) => {
    if (state === 2) {
      if (held.length < 500) held.push(m);
    } else if (state) {
      buf.push(m);
      if (how) flush(how > 1);
      else if (!timer) timer = setTimeout(flush, 500);
    }
  };
  // Browsers allow 64 KB of keepalive bodies in flight; beyond that a send goes as a plain fetch.
  const post = (chunk, beacon, again, size) => {
    const body = '{"writeKey":' + JSON.stringify(C.writeKey || '') + ',"sentAt":"' + iso() + '","batch":[' +
      chunk.join(',') + ']}';
    const fail = () => {
      if (again) return;
      retry.push(...chunk);
      timer = timer || setTimeout(flush, 5000);
    };
    try {
      if (beacon && nav.sendBeacon && nav.sendBeacon(EP, new Blob([body], {type: TYPE}))) return;
      const keepalive = inflight + size < LIMIT, done = () => keepalive && (inflight -= size);
      if (keepalive) inflight += size;
      fetch(EP, {method: 'POST', body, keepalive, credentials: 'omit'})
        .then(r => { done(); if (r.status > 499) fail(); }, () => { done(); fail(); });
    } catch {
      fail();
    }
  };
  const send = (list, beacon, again) => {
    let chunk = [], size = 0;
    for (const s of list) {
      const n = new Blob([s]).size;
      if (n > MAX_EVENT) continue; // the collector refuses such an event anyway
      if (chunk.length && size + n > LIMIT - 1000) { // room for writeKey and sentAt
        post(chunk, beacon, again, size);
        chunk = [];
        size = 0;
      }
      chunk.push(s);
      size += n + 1;
    }
    if (chunk.length) post(chunk, beacon, again, size);
  };
  function flush(beacon) {
    clearTimeout(timer);
    timer = 0;
    const again = retry;
    retry = [];
    send(again, beacon === true, 1);
    send(buf.splice(0).map(m => JSON.stringify(m)), beacon === true, 0);
  }

  // --- page views and visible time
  const now = () => performance.now();
  const visible = () => d.visibilityState === 'visible' && !frozen;
  const visMs = () => Math.round(pv.v + (pv.s ? now() - pv.s : 0));
  const depth = () => {
    const e = d.documentElement, h = Math.max(e.scrollHeight, d.body ? d.body.scrollHeight : 0);
    return h ? Math.min(100, Math.round((w.scrollY + w.innerHeight) / h * 100)) : 0;
  };
  const beat = () => {
    clearTimeout(hb);
    hb = pv && pv.s ? setTimeout(() => {
      engage(false, 0);
      beat();
    }, 15000 - (visMs() % 15000)) : 0;
  };
  // Page Engaged: cumulative visible time and scroll depth of the current page view.
  const engage = (final, how) => {
    if (!pv) return;
    pv.d = Math.max(pv.d, depth());
    const p = {page_view_id: pv.id, visible_ms: visMs(), scroll_depth: pv.d, final};
    const key = p.visible_ms + ',' + p.scroll_depth + ',' + final;
    if (key === pv.k) return;
    pv.k = key;
    enqueue(message('track', {event: 'Page Engaged', properties: p}, pv.page), how);
  };
  const pause = () => {
    if (pv && pv.s) pv.v += now() - pv.s;
    if (pv) pv.s = 0;
    beat();
  };
  const onVisibility = () => {
    if (!pv) return;
    if (visible() && !pv.s) {
      pv.s = now();
      beat();
    } else if (!visible() && pv.s) {
      pause();
      engage(false, 2);
    }
  };

  const page = (name, props) => {
    if (obj(name)) [name, props] = ['', name];
    if (pv) {
      engage(true, 0);
      lastUrl = pv.page.url;
    }
    const info = pageInfo(), m = message('page', {name: typeof name === 'string' && name ? name : d.title});
    m.properties = Object.assign({}, info, obj(props), {page_view_id: m.messageId});
    pv = {id: m.messageId, page: info, v: 0, s: visible() ? now() : 0, d: depth(), k: ''};
    beat();
    enqueue(m, 0);
  };
  const track = (event, props, how) => {
    if (typeof event !== 'string' || !event.trim()) return;
    enqueue(message('track', {event, properties: obj(props) || {}}), how);
  };
  const identify = (id, traits, how) => {
    if (obj(id)) [id, traits] = ['', id];
    if (id || id === 0) {
      uid = String(id);
      if (state === 1) store(UID, uid);
    }
    enqueue(message('identify', {traits: obj(traits) || {}}), how || 1);
  };
  const consent = answer => {
    if (answer === 'granted') {
      if (state === 1) return;
      state = 1;
      if (C.consent === 'required') setCookie(CONSENT, 'granted', AGE);
      persist();
      for (const m of held) {
        m.anonymousId = aid;
        if (uid && !m.userId) m.userId = uid;
      }
      buf = held.concat(buf);
      held = [];
      flush();
    } else if (answer === 'denied') {
      state = 0;
      held = [];
      buf = [];
      retry = [];
      clearTimeout(timer);
      setCookie(AID, '', 0);
      setCookie(CONSENT, '', 0);
      store(AID, null);
      store(UID, null);
    }
  };
  const reset = () => {
    uid = null;
    aid = uuid();
    if (state === 1) {
      store(UID, null);
      persist();
    }
  };

  // --- automatic events
  const onClick = e => {
    if (e.type === 'auxclick' && e.button !== 1) return;
    const a = e.target.closest?.('a[href]');
    if (!a) return;
    const u = new URL(a.getAttribute('href'), d.baseURI);
    if (!/^https?:$/.test(u.protocol)) return;
    const ext = (u.pathname.match(/\.([a-z0-9]+)$/i) || [])[1], own = (C.cookieDomain || '').replace(/^\./, '');
    if (ext && FILES.test(ext.toLowerCase())) {
      track('File Downloaded', {url: u.href, file_type: ext.toLowerCase()}, 2);
    } else if (u.hostname !== loc.hostname && !(own && (u.hostname === own || u.hostname.endsWith('.' + own)))) {
      const text = (a.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 100);
      track('Outbound Link Clicked', {url: u.href, text}, 2);
    }
  };
  // A form with a plausible email identifies the visitor; secrets are never read. Kizuna's own
  // forms (data-kz-form) identify through their submission, after the spam checks and opt-in.
  const onSubmit = e => {
    const f = e.target;
    if (!C.identifyForms || !(f instanceof HTMLFormElement) || f.hasAttribute('data-kz-form')) return;
    const traits = {};
    for (const el of f.elements) {
      if (!(el instanceof HTMLInputElement) || !/^(text|email|tel|search|)$/.test(el.type)) continue;
      const names = [el.autocomplete, el.name, el.id].map(s => String(s || '').replace(/.*\[|\]/g, ''));
      if (names.some(s => SECRET.test(s))) continue;
      const v = el.value.trim();
      if (!v || /^(\d[ -]?){13,19}$/.test(v)) continue; // a card number under an innocent name
      if (el.type === 'email' || names.some(s => /e-?mail|メール/i.test(s))) {
        if (!traits.email && /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/.test(v)) traits.email = v;
        continue;
      }
      for (const s of names) {
        const t = TRAITS[s.toLowerCase().replace(/[\s_-]/g, '')];
        if (t) {
          traits[t] = traits[t] || v.slice(0, 200);
          break;
        }
      }
    }
    if (traits.email) identify('', traits, 2);
  };

  const guard = fn => function () { try { return fn.apply(this, arguments); } catch {} }; // never break the page
  const calls = {page, track, identify, consent, reset};
  const api = guard((cmd, x, y) => calls.hasOwnProperty(cmd) && calls[cmd](x, y));
  api.kz = 1;
  w.kizuna = api;

  guard(() => {
    uid = stored(UID);
    if (state === 1) persist();
    const on = (t, ev, fn, opts) => t.addEventListener(ev, guard(fn), opts || true);
    on(d, 'click', onClick);
    on(d, 'auxclick', onClick);
    on(d, 'submit', onSubmit);
    on(d, 'visibilitychange', onVisibility);
    on(d, 'freeze', () => onVisibility(frozen = true));
    on(d, 'resume', () => onVisibility(frozen = false));
    on(w, 'scroll', () => pv && (pv.d = Math.max(pv.d, depth())), {passive: true});
    on(w, 'pagehide', () => {
      pause();
      engage(true, 2);
      flush(true);
    });
    on(w, 'pageshow', e => {
      if (e.persisted && C.autoPage !== false) page(); // back from the back/forward cache
      else onVisibility();
    });
    // Consent and identity calls made before loading apply first, so the page view carries them.
    const early = a => /^(consent|identify|reset)$/.test(a[0]);
    for (const a of queue) if (early(a)) api(...a);
    if (C.autoPage !== false && !queue.some(a => a[0] === 'page')) page();
    for (const a of queue) if (!early(a)) api(...a);
  })();
})();
