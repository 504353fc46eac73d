"""The copy-paste tracking code a site owner puts before </head>, and the no-JS pixel URL.

The snippet defines a queue stub, so `kizuna(...)` calls made before the tracker arrives are
kept and replayed; the tracker itself loads async and never blocks the page.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import urlencode, urlsplit

WRITE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")

_LOADER = (
    "<script>\n"
    "window.kizuna=window.kizuna||function(){{(window.kizuna.q=window.kizuna.q||[]).push(arguments)}};\n"
    "(function(d){{var s=d.createElement('script');s.async=true;s.src={src};"
    "(d.head||d.documentElement).appendChild(s)}})(document);\n"
    "</script>\n"
    '<noscript><img src="{pixel}" width="1" height="1" alt="" style="display:none"></noscript>\n'
)


def _check(base_url: str, write_key: str) -> str:
    """Refuses what cannot be a Kizuna address or key, so nothing odd ever reaches a page."""
    if not isinstance(write_key, str) or not WRITE_KEY_RE.fullmatch(write_key):
        raise ValueError("A write key contains only letters, digits, '_' and '-'.")
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("The tracking base URL must be an http(s) URL without query or fragment.")
    return base_url.rstrip("/")


def _js_string(value: str) -> str:
    """A JS string literal that is also safe inside an inline <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def pixel_url(base_url: str, write_key: str, *, event: str = "page", url: str = "", title: str = "",
              anonymous_id: str = "") -> str:
    """The /t.gif address that records a page view (or `event`) without JavaScript, e.g. in email
    or in the snippet's <noscript>."""
    base = _check(base_url, write_key)
    params = [("k", write_key)]
    if event and event != "page":
        params.append(("e", event))
    if url:
        params.append(("url", url))
    if title:
        params.append(("title", title))
    if anonymous_id:
        params.append(("aid", anonymous_id))
    return f"{base}/t.gif?{urlencode(params)}"


def tracker_snippet(base_url: str, write_key: str) -> str:
    """The HTML to paste before </head> on every page of the tracked site."""
    base = _check(base_url, write_key)
    src = f"{base}/kz.js?{urlencode([('k', write_key)])}"
    return _LOADER.format(src=_js_string(src), pixel=html.escape(pixel_url(base, write_key), quote=True))
