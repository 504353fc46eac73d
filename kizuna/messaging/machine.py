"""Machine opens and clicks: who fetched the pixel or followed the link, a person or a program?

Since Apple Mail Privacy Protection (2021) and the image proxies of Gmail and Yahoo, many "opens"
are a proxy fetching images, with or without the person reading, and corporate security gateways
follow every link in a message before the person sees it. Counting those as interest inflates open
rates and lead scores, so each hit gets a verdict with a reason code; the caller keeps the hit
either way. Plain functions, no models: tracking.py decides what to store.

Rules, in the order they are tried (first match wins):

- head_request: HEAD on a tracked link. Browsers follow a link with GET; link checkers (Office,
  gateways) use HEAD to see where it leads without fetching it.
- prefetch: Purpose / Sec-Purpose / X-Purpose / X-Moz: prefetch|prerender|preview headers, sent by
  browsers on speculative loads (Chrome's Sec-Purpose, Safari's X-Purpose, Firefox's X-Moz), and
  Microsoft Office's link checks ("ms-office", "Microsoft Office Existence/Protocol Discovery").
- apple_mpp (opens only): Apple's proxy fetches every image on delivery through the iCloud Private
  Relay infrastructure with the bare agent "Mozilla/5.0" (iOS) or Apple Mail's WebKit agent (no
  Safari token). Apple's own 17.0.0.0/8 counts alone; the relay egress networks Apple lists
  (https://mask-api.icloud.com/egress-ip-ranges.csv, run by Akamai, Cloudflare, Fastly) are shared
  with Private Relay browsing, so they count only with Apple Mail's agent.
- image_proxy_google / image_proxy_yahoo / image_proxy_other: GoogleImageProxy (Gmail, "via
  ggpht.com"), YahooMailProxy (Yahoo and Yahoo! JAPAN mail), other agents naming a proxy. Such a
  fetch may stand for a real open, but it also happens on delivery or on a preview: not reliable.
- scanner_agent: agents of security gateways, HTTP libraries, headless browsers and link
  unfurlers (Slack, LinkedIn, ...): no person reads mail with those.
- bot_agent: no agent, a bare "Mozilla/x.y" (but MPP's on an open), or a crawler per crawlerdetect.
- scanner_network (and the image proxies' networks): a small table of gateway and cloud networks,
  examples to extend with `register_network`.
- all_links: every tracked link of the message (two or more) clicked within ALL_LINKS_WINDOW:
  gateways follow all links at once, people pick one.
- too_fast: a click within TOO_FAST of handing the message to the transport (or before that
  returned: inline gateways fetch links during the SMTP transaction).

Known limit: a hit is judged when it arrives, so the first clicks of a burst are only caught by
too_fast or an agent/network rule; all_links flags the click that completes the set.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

TOO_FAST = timedelta(seconds=10)
ALL_LINKS_WINDOW = timedelta(seconds=5)
UA_LIMIT = 1000  # longer agents are cut before matching and caching

LABELS = {
    "": "person",
    "apple_mpp": "Apple Mail Privacy Protection",
    "image_proxy_google": "Gmail image proxy",
    "image_proxy_yahoo": "Yahoo Mail image proxy",
    "image_proxy_other": "image proxy",
    "scanner_agent": "security scanner or HTTP client",
    "scanner_network": "security scanner network",
    "head_request": "HEAD request (link checker)",
    "too_fast": "clicked within seconds of delivery",
    "all_links": "every link clicked at once",
    "prefetch": "prefetch",
    "bot_agent": "bot",
}
NETWORK_REASONS = frozenset({"apple_mpp", "image_proxy_google", "image_proxy_yahoo", "image_proxy_other",
                             "scanner_network"})


@dataclass(frozen=True)
class Hit:
    kind: str  # "open" | "click"
    method: str  # "GET" | "HEAD"
    ip: str
    user_agent: str
    at: datetime  # aware
    sent_at: datetime | None = None  # when the message was handed to the transport
    url: str = ""  # clicks: the destination
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str = ""
    label: str = ""


HUMAN = Verdict(False, "", LABELS[""])


def _machine(reason: str, label: str = "") -> Verdict:
    return Verdict(True, reason, label or LABELS[reason])


# --- Networks ------------------------------------------------------------------------------------


class Network(NamedTuple):
    cidr: str
    reason: str
    label: str
    shared: bool = False  # also carries people (relay, VPN): counts only with a matching agent


# Examples, not complete lists: each operator publishes far more, and changes them. Sources:
# - Apple owns 17.0.0.0/8 and 2620:149::/32 (ARIN). MPP fetches through iCloud Private Relay, whose
#   egress list (mask-api.icloud.com/egress-ip-ranges.csv) is run by Akamai (172.224.0.0/12,
#   2a02:26f7::/32), Cloudflare (104.28.0.0/16, 2a09:bac0::/29) and Fastly (2a04:4e41::/32).
# - Gmail's GoogleImageProxy fetches from 66.249.80.0/20 (Google, googleusercontent).
# - Microsoft Exchange Online Protection (Safe Links, ATP detonation), "URLs and IP address ranges
#   for Microsoft 365" and spf.protection.outlook.com: 40.92.0.0/15, 40.107.0.0/16, 52.100.0.0/14,
#   104.47.0.0/17, 2a01:111:f400::/48.
# - Gateways' published egress: Proofpoint 148.163.128.0/19, 67.231.144.0/20; Mimecast (US)
#   205.139.110.0/24, 207.211.30.0/24; Barracuda Email Security Service (US) 209.222.80.0/21.
# - Cloud, where scanners detonate links (AWS ip-ranges.json, Google Cloud cloud.json): AWS
#   us-east-1 3.80.0.0/12, 44.192.0.0/11; Google Cloud 34.64.0.0/10, 35.184.0.0/13.
NETWORKS: tuple[Network, ...] = (
    Network("17.0.0.0/8", "apple_mpp", "Apple Mail Privacy Protection (Apple network)"),
    Network("2620:149::/32", "apple_mpp", "Apple Mail Privacy Protection (Apple network)"),
    Network("172.224.0.0/12", "apple_mpp", "Apple Mail Privacy Protection (Akamai relay)", True),
    Network("2a02:26f7::/32", "apple_mpp", "Apple Mail Privacy Protection (Akamai relay)", True),
    Network("104.28.0.0/16", "apple_mpp", "Apple Mail Privacy Protection (Cloudflare relay)", True),
    Network("2a09:bac0::/29", "apple_mpp", "Apple Mail Privacy Protection (Cloudflare relay)", True),
    Network("2a04:4e41::/32", "apple_mpp", "Apple Mail Privacy Protection (Fastly relay)", True),
    Network("66.249.80.0/20", "image_proxy_google", "Gmail image proxy (Google network)"),
    Network("40.92.0.0/15", "scanner_network", "Microsoft Exchange Online Protection"),
    Network("40.107.0.0/16", "scanner_network", "Microsoft Exchange Online Protection"),
    Network("52.100.0.0/14", "scanner_network", "Microsoft Exchange Online Protection"),
    Network("104.47.0.0/17", "scanner_network", "Microsoft Exchange Online Protection"),
    Network("2a01:111:f400::/48", "scanner_network", "Microsoft Exchange Online Protection"),
    Network("148.163.128.0/19", "scanner_network", "Proofpoint"),
    Network("67.231.144.0/20", "scanner_network", "Proofpoint"),
    Network("205.139.110.0/24", "scanner_network", "Mimecast"),
    Network("207.211.30.0/24", "scanner_network", "Mimecast"),
    Network("209.222.80.0/21", "scanner_network", "Barracuda"),
    Network("3.80.0.0/12", "scanner_network", "cloud network (AWS)"),
    Network("44.192.0.0/11", "scanner_network", "cloud network (AWS)"),
    Network("34.64.0.0/10", "scanner_network", "cloud network (Google Cloud)"),
    Network("35.184.0.0/13", "scanner_network", "cloud network (Google Cloud)"),
)
extra_networks: list[Network] = []  # added by register_network; a later entry wins for the same CIDR

# Per IP version: segment starts (sorted) and (end, network). CIDRs nest or are disjoint, so they
# flatten into disjoint segments owned by the most specific network: a lookup is one bisect.
_index: dict[int, tuple[list[int], list[tuple[int, Network]]]] = {}
_index_lock = threading.Lock()
_generation = 0  # part of the cache keys: a lookup racing a rebuild cannot leave a stale entry


def _flatten(ranges: list[tuple[int, int, Network]]) -> tuple[list[int], list[tuple[int, Network]]]:
    starts: list[int] = []
    owners: list[tuple[int, Network]] = []

    def emit(start: int, end: int, network: Network) -> None:
        if start <= end:
            starts.append(start)
            owners.append((end, network))

    stack: list[tuple[int, int, Network]] = []
    position = 0
    # Outer before inner at the same start; equal ranges keep their order, so the later is on top.
    for start, end, network in sorted(ranges, key=lambda r: (r[0], -r[1])):
        while stack and stack[-1][1] < start:
            _s, top_end, top = stack.pop()
            emit(position, top_end, top)
            position = max(position, top_end + 1)
        if stack:
            emit(position, start - 1, stack[-1][2])
        stack.append((start, end, network))
        position = start
    while stack:
        _s, top_end, top = stack.pop()
        emit(position, top_end, top)
        position = max(position, top_end + 1)
    return starts, owners


def _rebuild() -> None:
    by_version: dict[int, list[tuple[int, int, Network]]] = {4: [], 6: []}
    for network in (*NETWORKS, *extra_networks):
        net = ipaddress.ip_network(network.cidr, strict=False)
        by_version[net.version].append((int(net.network_address), int(net.broadcast_address), network))
    global _index, _generation
    _index = {version: _flatten(ranges) for version, ranges in by_version.items()}
    _generation += 1
    _network.cache_clear()
    _identity.cache_clear()


def register_network(cidr: str, reason: str = "scanner_network", label: str = "", *, shared: bool = False) -> None:
    """Adds a network whose hits are machine activity, e.g. a customer's own mail gateway or more of
    Apple's relay egress; the most specific network containing an address decides."""
    if reason not in NETWORK_REASONS:
        raise ValueError(f"reason must be one of {sorted(NETWORK_REASONS)}, not {reason!r}")
    ipaddress.ip_network(cidr, strict=False)  # ValueError on a bad CIDR, before it is stored
    with _index_lock:
        extra_networks.append(Network(cidr, reason, label or LABELS[reason], shared))
        _rebuild()


def reset_networks() -> None:
    """Drops the registered networks (tests, reconfiguration)."""
    with _index_lock:
        extra_networks.clear()
        _rebuild()


@lru_cache(maxsize=8192)
def _network(ip: str, generation: int) -> Network | None:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    starts, owners = _index[address.version]
    value = int(address)
    index = bisect.bisect_right(starts, value) - 1
    if index >= 0 and value <= owners[index][0]:
        return owners[index][1]
    return None


# --- Agents --------------------------------------------------------------------------------------

MPP_AGENT = "Mozilla/5.0"  # the whole agent Apple's MPP proxy sends for iOS Mail
_BARE = re.compile(r"Mozilla/\d(?:\.\d+)?")  # the whole agent: no browser or mail client sends that
# Apple Mail (macOS, iOS): WebKit with no Safari/Version token and nothing after Mobile/...
_APPLE_MAIL = re.compile(r"Mozilla/5\.0 \((?:Macintosh|iPhone|iPad|iPod)[^)]*\) AppleWebKit/[\d.]+ "
                         r"\(KHTML, like Gecko\)(?: Mobile/\w+)?")
# Office asks where a link leads before handing it to the browser; the browser's GET follows.
_OFFICE_CHECK = re.compile(r"\bms-office\b|\bMSOffice \d|Microsoft Office (?:Existence|Protocol) Discovery", re.I)
# Mail clients crawlerdetect lists (it matches "Microsoft Office"): desktop Outlook fetches images
# itself, from the reader's machine.
_MAIL_CLIENT = re.compile(r"^Microsoft Office/[\d.]+ \([^)]*Microsoft Outlook")

_AGENTS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"GoogleImageProxy|ggpht\.com", re.I), "image_proxy_google", ""),
    (re.compile(r"YahooMailProxy", re.I), "image_proxy_yahoo", ""),
    (re.compile(r"[A-Za-z]*proxy\b", re.I), "image_proxy_other", ""),
    (re.compile(r"\b(?:Barracuda|Mimecast|Proofpoint|urldefense|Symantec|MessageLabs|Trend ?Micro|IronPort|Cisco|"
                r"Forcepoint|Sophos|Forti(?:Guard|net)|Check ?Point|Zscaler|Cloudmark|AppRiver|Vade ?Secure|"
                r"Hornetsecurity|Safe ?Links|BingPreview|MicrosoftPreview)\b", re.I),
     "scanner_agent", "security scanner"),
    (re.compile(r"^(?:curl|Wget|python-requests|python-urllib|Python/|aiohttp|python-httpx|Go-http-client|okhttp|"
                r"Apache-HttpClient|Java/|libwww-perl|PHP|Ruby|axios|node-fetch|undici)\b", re.I),
     "scanner_agent", "HTTP library"),
    (re.compile(r"HeadlessChrome|PhantomJS|Puppeteer|Playwright", re.I), "scanner_agent", "headless browser"),
    (re.compile(r"Slackbot|LinkedInBot|facebookexternalhit|Twitterbot|Discordbot|TelegramBot|^WhatsApp/|"
                r"SkypeUriPreview", re.I), "scanner_agent", "link preview"),
)

_crawler_detect: Any = None
_crawler_lock = threading.Lock()


def _is_crawler(user_agent: str) -> bool:
    """crawlerdetect's verdict; one instance, built on first use (it compiles a large pattern)."""
    global _crawler_detect
    if _crawler_detect is None:
        with _crawler_lock:
            if _crawler_detect is None:
                from crawlerdetect import CrawlerDetect

                _crawler_detect = CrawlerDetect()
    return bool(_crawler_detect.is_crawler(user_agent))  # is_crawler's result is per call: thread-safe


class _Agent(NamedTuple):
    kind: str  # "mpp" (bare agent), "apple_mail", "office_check", "client", "machine", "" (a browser)
    reason: str = ""
    label: str = ""


@lru_cache(maxsize=8192)
def _agent(user_agent: str) -> _Agent:
    ua = user_agent.strip()
    if not ua:
        return _Agent("machine", "bot_agent", "no user agent")
    if ua == MPP_AGENT:
        return _Agent("mpp")
    if _BARE.fullmatch(ua):
        return _Agent("machine", "bot_agent", "bare user agent")
    if _APPLE_MAIL.fullmatch(ua):
        return _Agent("apple_mail")
    if _OFFICE_CHECK.search(ua):
        return _Agent("office_check")
    if _MAIL_CLIENT.search(ua):
        return _Agent("client")
    for pattern, reason, label in _AGENTS:
        if pattern.search(ua):
            return _Agent("machine", reason, label)
    if _is_crawler(ua):
        return _Agent("machine", "bot_agent", "crawler")
    return _Agent("")


@lru_cache(maxsize=16384)
def _identity(kind: str, ip: str, user_agent: str, generation: int) -> Verdict | None:
    """What the agent and the address alone say; the same for every hit with this (ip, agent)."""
    agent = _agent(user_agent)
    network = _network(ip, generation)
    if agent.kind == "office_check":
        return _machine("prefetch" if kind == "click" else "image_proxy_other", "Microsoft Office link check")
    if kind == "open":
        # MPP preloads images only; clicks from Apple's networks are people (Apple staff, Private Relay).
        if network is not None and network.reason == "apple_mpp":
            if not network.shared or agent.kind in ("mpp", "apple_mail"):
                return _machine("apple_mpp", network.label)
        if agent.kind == "mpp":
            return _machine("apple_mpp")  # no browser or mail client sends the bare agent
    elif agent.kind == "mpp":
        return _machine("bot_agent", "bare user agent")
    if agent.kind == "machine":
        return _machine(agent.reason, agent.label)
    if network is not None and network.reason != "apple_mpp":
        reason = network.reason if kind == "open" else "scanner_network"  # a proxy's network clicking scans
        return _machine(reason, network.label)
    return None


# --- Requests ------------------------------------------------------------------------------------

_PREFETCH = re.compile(r"\b(?:prefetch|prerender|preview)\b", re.I)
_PURPOSE_HEADERS = ("purpose", "sec-purpose", "x-purpose", "x-moz")
_VIA_PROXIES = (("googleimageproxy", "image_proxy_google"), ("yahoomailproxy", "image_proxy_yahoo"))  # lower case


def classify(hit: Hit, *, earlier_clicks: Sequence[tuple[datetime, str]] = (), link_count: int = 0) -> Verdict:
    """Is this open or click a machine's? `earlier_clicks` are (time, url) of the message's other
    clicks by anyone; `link_count` the number of distinct tracked links in the message."""
    if hit.method.upper() == "HEAD":
        return _machine("head_request")
    headers = hit.headers
    for name in _PURPOSE_HEADERS:
        value = headers.get(name)
        if value and _PREFETCH.search(value):
            return _machine("prefetch", f"prefetch ({name} header)")
    via = headers.get("via")
    if via:
        via = via.lower()
        for marker, reason in _VIA_PROXIES:
            if marker in via:
                return _machine(reason)
    found = _identity(hit.kind, hit.ip or "", (hit.user_agent or "")[:UA_LIMIT], _generation)
    if found is not None:
        return found
    if hit.kind != "click":
        return HUMAN
    if link_count >= 2 and earlier_clicks:
        together = {url for at, url in earlier_clicks if abs(hit.at - at) <= ALL_LINKS_WINDOW}
        together.add(hit.url)
        if len(together) >= link_count:
            return _machine("all_links")
    if hit.sent_at is not None and hit.at - hit.sent_at < TOO_FAST:
        return _machine("too_fast")
    return HUMAN


_rebuild()
