"""Enrichment of tracked hits: browser and device, bots, country and network owner, and the
admin's IP range → company table ("visiting companies").

Everything here is offline (the user-agent rules, the crawler list and the GeoIP data ship in
installed packages), cached per process, and never raises on visitor input: a garbage user
agent or address gives an empty answer, never an error that would stop a processing batch.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import io
import ipaddress
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ingestion keeps 500 characters of a user agent; the cap here only bounds regex work for
# callers that pass something longer.
UA_LIMIT = 1000


def _address(ip: Any) -> IpAddress | None:
    """The address in `ip`, IPv4-mapped IPv6 (::ffff:a.b.c.d, as dual-stack servers report
    IPv4 clients) taken as the IPv4 address it is; None for anything else."""
    if not isinstance(ip, str) or not ip or len(ip) > 100:
        return None
    return _parse_address(ip)


@lru_cache(maxsize=20_000)
def _parse_address(ip: str) -> IpAddress | None:
    """Cached: one visitor's address comes back with each of their hits."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --- user agents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    browser: str
    browser_version: str
    os: str
    device: str  # desktop, mobile, tablet, bot, other


UNKNOWN_AGENT = UserAgentInfo("", "", "", "other")

# The device is read from a few well-known tokens rather than from ua-parser's device rules,
# which cost more than the browser and OS rules together and name models, not form factors.
# Android without "Mobile" is a tablet: that is the convention Google asks Android browsers to follow.
_NOT_A_COMPUTER = re.compile(
    r"Smart-?TV|HbbTV|AppleTV|CrKey|GoogleTV|Android TV|\bAFT[A-Z]|Roku|PlayStation|Xbox|Nintendo|Web0S"
    r"|Tizen.*\bTV\b|BRAVIA|AQUOS-TV|VIERA|REGZA",
    re.I,
)
_TABLET = re.compile(
    r"iPad|Tablet|PlayBook|Kindle|Silk/|\bKF[A-Z]{2,4}\b|Nexus (?:7|9|10)\b|SM-[TX]\d|Lenovo TB|Android(?!.*Mobi)",
    re.I,
)
_MOBILE = re.compile(
    r"Mobi|iPhone|iPod|Windows Phone|IEMobile|BlackBerry|BB10|Opera Mini"
    r"|DoCoMo/|KDDI-|SoftBank/|Vodafone/|J-PHONE/|WILLCOM|UP\.Browser",  # Japanese feature phones
    re.I,
)
_OS_NAMES = {"Mac OS X": "macOS"}

_parser_lock = threading.Lock()
_parser: Any = None


def _ua_parser() -> Any:
    """ua-parser's rules compiled once per process (about 0.3 s), without its own cache: ours
    sits in front of it."""
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                from ua_parser import BasicResolver, Parser, load_builtins

                _parser = Parser(BasicResolver(load_builtins()))
    return _parser


@lru_cache(maxsize=10_000)
def parse_user_agent(ua: str) -> UserAgentInfo:
    """Browser, its major version, OS and form factor of a user-agent string."""
    if not isinstance(ua, str) or not ua.strip():
        return UNKNOWN_AGENT
    ua = ua[:UA_LIMIT]
    browser = version = os_name = ""
    try:
        from ua_parser import Domain

        result = _ua_parser()(ua, Domain.USER_AGENT | Domain.OS)
        agent, system = result.user_agent, result.os
        if agent is not None and agent.family != "Other":
            browser, version = agent.family, agent.major or ""
        if system is not None and system.family != "Other":
            os_name = _OS_NAMES.get(system.family, system.family)
    except Exception:  # noqa: BLE001 - visitor input must never stop processing
        logger.debug("ua-parser failed on %r", ua, exc_info=True)
    if _crawler(ua):
        device = "bot"
    elif _NOT_A_COMPUTER.search(ua):
        device = "other"
    elif _TABLET.search(ua):
        device = "tablet"
    elif _MOBILE.search(ua):
        device = "mobile"
    elif browser or os_name:
        device = "desktop"
    else:
        device = "other"
    return UserAgentInfo(browser, version, os_name, device)


# --- bots -----------------------------------------------------------------------------------

# Headless Chromium is what Kizuna's own browser tests and many site owners' monitoring run;
# it is a bot only when an admin rule says so. Only the "Headless" prefix is hidden from the
# crawler list: Lighthouse, PhantomJS and the like stay bots.
_HEADLESS = re.compile(r"HeadlessChrome/")


_LITERAL = re.compile(r"(?:[A-Za-z0-9 _\-,;:'!@%&=<>~`\"#]|\\[^A-Za-z0-9])+")
_UNESCAPE = re.compile(r"\\(.)")


def _trie(words: Iterable[str]) -> str:
    """One regular expression for many literal words, shared prefixes factored out, so the
    regex engine tries a handful of branches per position instead of every word."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and "" not in node else "(?:" + "|".join(branches) + ")"
        return body + "?" if "" in node else body

    return emit(root)


class _CrawlerList:
    """crawlerdetect's list, searched as CrawlerDetect.is_crawler does (drop the tokens real
    browsers share, then search what is left, ignoring case), but fast enough for every user
    agent a process has not seen yet (a long in-app browser's: 0.15 ms instead of 6 ms):

    - the text is lower-cased once instead of every pattern being case-insensitive;
    - its 1,400 literal names form one prefix tree;
    - a pattern starting with "[class]*" only tries where a run of that class begins (a match
      starting inside the run also matches from its start, so the leftmost match is the same).
    """

    _RUN = re.compile(r"^(\[[^\]]+\])\*")

    def __init__(self) -> None:
        from crawlerdetect.providers.crawlers import data as crawlers
        from crawlerdetect.providers.exclusions import data as exclusions

        # An escape such as \S changes meaning when lower-cased: then keep the original patterns.
        self.exclusions_in_lower_case = not any(re.search(r"\\[A-Z]", p) for p in exclusions)
        if self.exclusions_in_lower_case:
            self.exclusions = re.compile("|".join(p.lower() for p in exclusions))
        else:
            self.exclusions = re.compile("|".join(exclusions), re.IGNORECASE)
        anywhere, starts, whole, ends, patterns, cased = [], [], [], [], [], []
        for pattern in crawlers:
            at_start = pattern.startswith("^")
            at_end = pattern.endswith("$") and not pattern.endswith("\\$")
            body = pattern[1 if at_start else 0: -1 if at_end else None]
            if _LITERAL.fullmatch(body):
                word = _UNESCAPE.sub(r"\1", body).lower()
                (whole if at_start and at_end else starts if at_start else ends if at_end else anywhere).append(word)
            elif re.search(r"\\[A-Z]", pattern):
                cased.append(pattern)
            else:
                pattern = pattern.lower()
                run = self._RUN.match(pattern)
                patterns.append(f"(?<!{run.group(1)}){pattern}" if run else pattern)
        alternatives = [_trie(anywhere)]
        alternatives += [f"^{_trie(starts)}"] if starts else []
        alternatives += [f"^{_trie(whole)}$"] if whole else []
        alternatives += [f"{_trie(ends)}$"] if ends else []
        alternatives += patterns
        self.lower = re.compile("|".join(f"(?:{a})" for a in alternatives))
        self.cased = re.compile("|".join(f"(?:{p})" for p in cased), re.IGNORECASE) if cased else None

    def search(self, ua: str) -> str:
        ua = ua.strip()
        lowered = ua.lower()
        if len(lowered) != len(ua):  # a few non-ASCII letters grow when lower-cased
            ua = lowered
        kept, position = [], 0
        for match in self.exclusions.finditer(lowered if self.exclusions_in_lower_case else ua):
            kept.append((position, match.start()))
            position = match.end()
        kept.append((position, len(lowered)))
        agent_lower = "".join(lowered[a:b] for a, b in kept)
        if not agent_lower:
            return ""
        agent = "".join(ua[a:b] for a, b in kept)
        found = [m for m in (self.lower.search(agent_lower), self.cased and self.cased.search(agent)) if m]
        if not found:
            return ""
        first = min(found, key=lambda m: m.start())  # the leftmost, as one alternation finds it
        return agent[first.start():first.end()].strip()[:60] or "crawler"


_crawler_list_lock = threading.Lock()
_crawler_list: _CrawlerList | None = None


@lru_cache(maxsize=10_000)
def _crawler(ua: str) -> str:
    """The crawler-list entry a user agent matches, or ""."""
    global _crawler_list
    try:
        if _crawler_list is None:
            with _crawler_list_lock:
                if _crawler_list is None:
                    _crawler_list = _CrawlerList()
        return _crawler_list.search(_HEADLESS.sub("Chrome/", ua[:UA_LIMIT]))
    except Exception:  # noqa: BLE001 - visitor input must never stop processing
        logger.debug("crawler check failed on %r", ua, exc_info=True)
        return ""


class _RangeIndex:
    """Integer address ranges flattened into disjoint segments, each owned by the smallest
    range covering it (the earliest given among equals), so a lookup is one bisect: O(log n)
    however the ranges nest or overlap. Building is O(n log n)."""

    __slots__ = ("_tables",)

    def __init__(self, ranges: Iterable[tuple[int, int, int, Any]]) -> None:
        by_version: dict[int, list[tuple[int, int, int, Any]]] = {4: [], 6: []}
        for order, (version, first, last, value) in enumerate(ranges):
            by_version[version].append((first, last, order, value))
        self._tables = {version: self._flatten(items) for version, items in by_version.items()}

    @staticmethod
    def _flatten(items: list[tuple[int, int, int, Any]]) -> tuple[list[int], list[int], list[Any]]:
        items.sort(key=lambda item: item[0])
        points = sorted({item[0] for item in items} | {item[1] + 1 for item in items})
        starts: list[int] = []
        ends: list[int] = []
        values: list[Any] = []
        owners: list[int] = []
        active: list[tuple[int, int, int, Any]] = []  # heap of (size, order, last, value)
        position = 0
        for index, point in enumerate(points[:-1]):
            while position < len(items) and items[position][0] == point:
                first, last, order, value = items[position]
                heapq.heappush(active, (last - first, order, last, value))
                position += 1
            while active and active[0][2] < point:
                heapq.heappop(active)
            if not active:
                continue
            _size, order, _last, value = active[0]
            end = points[index + 1] - 1
            if owners and owners[-1] == order and ends[-1] + 1 == point:
                ends[-1] = end  # the same range continues after a smaller one ended
                continue
            starts.append(point)
            ends.append(end)
            values.append(value)
            owners.append(order)
        return starts, ends, values

    def get(self, address: IpAddress) -> Any:
        starts, ends, values = self._tables[address.version]
        value = int(address)
        index = bisect.bisect_right(starts, value) - 1
        if index >= 0 and value <= ends[index]:
            return values[index]
        return None

    def __len__(self) -> int:
        return sum(len(table[0]) for table in self._tables.values())


@dataclass(frozen=True)
class BotRules:
    """The admin's bot rules: user-agent regular expressions and IP addresses or networks."""

    ua_patterns: tuple[re.Pattern, ...] = ()
    networks: tuple[IpNetwork, ...] = ()
    _index: _RangeIndex = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = _RangeIndex(
            (n.version, int(n.network_address), int(n.broadcast_address), n) for n in self.networks
        )
        object.__setattr__(self, "_index", index)

    def network_of(self, ip: str | None) -> IpNetwork | None:
        if not self.networks:
            return None
        address = _address(ip)
        return self._index.get(address) if address is not None else None


PATTERN_LIMIT = 500


def compile_bot_rules(ua_text: str, ip_text: str) -> tuple[BotRules, list[str]]:
    """Bot rules from the two settings texts: one regular expression (case-insensitive) or one
    IP address / CIDR network per line. Lines starting with '#' and blank lines are ignored;
    IP lines may also end with a '# comment' ('#' can be part of a regular expression, so
    pattern lines cannot). Bad lines are reported ("line 3: invalid regular expression: ...")
    and skipped; the good ones still apply. A form that shows errors under each field calls
    this once per text."""
    patterns: list[re.Pattern] = []
    networks: list[IpNetwork] = []
    errors: list[str] = []
    for number, line in enumerate((ua_text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > PATTERN_LIMIT:
            errors.append(_("line %(line)d: the pattern is longer than %(limit)d characters")
                          % {"line": number, "limit": PATTERN_LIMIT})
            continue
        try:
            pattern = re.compile(line, re.IGNORECASE)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            errors.append(_("line %(line)d: invalid regular expression: %(error)s")
                          % {"line": number, "error": exc})
            continue
        if pattern.search("") is not None:
            errors.append(_("line %(line)d: %(pattern)s matches every user agent")
                          % {"line": number, "pattern": line})
            continue
        patterns.append(pattern)
    for number, line in enumerate((ip_text or "").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            network = ipaddress.ip_network(_ascii(line), strict=False)
        except ValueError:
            errors.append(_("line %(line)d: %(text)s is not an IP address or CIDR network")
                          % {"line": number, "text": line[:100]})
            continue
        if network.prefixlen == 0:
            errors.append(_("line %(line)d: %(text)s matches every IP address")
                          % {"line": number, "text": line})
            continue
        networks.append(network)
    return BotRules(tuple(patterns), tuple(networks)), errors


@lru_cache(maxsize=10_000)
def _matching_pattern(patterns: tuple[re.Pattern, ...], ua: str) -> str:
    """The first admin pattern matching a user agent; cached per rule set and user agent, as
    a case-insensitive search costs microseconds per pattern and the same browsers return."""
    return next((pattern.pattern for pattern in patterns if pattern.search(ua)), "")


def is_bot(ua: str, ip: str | None, rules: BotRules) -> str:
    """Why a hit is not a person ("" when it is one): an admin rule first, then the crawler list.

    Reasons look like "rule:ua:HeadlessChrome", "rule:ip:203.0.113.0/24", "crawler:Googlebot"
    or "empty-ua" (every browser sends a user agent; scripts often do not)."""
    if not isinstance(ua, str) or not ua.strip():
        return "empty-ua"
    ua = ua[:UA_LIMIT]
    try:
        if rules.ua_patterns:
            pattern = _matching_pattern(rules.ua_patterns, ua)
            if pattern:
                return f"rule:ua:{pattern[:80]}"
        network = rules.network_of(ip)
        if network is not None:
            return f"rule:ip:{network}"
    except Exception:  # noqa: BLE001 - a rule must not stop processing
        logger.warning("bot rules failed on %r", ua, exc_info=True)
    name = _crawler(ua)
    return f"crawler:{name}" if name else ""


# --- IP addresses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpInfo:
    country: str  # ISO 3166 alpha-2, or ""
    asn: int | None  # the data shipped with geoip2fast names networks but carries no AS numbers
    org: str


NO_IP_INFO = IpInfo("", None, "")

# Country and network owner for IPv4 and IPv6 in one file: about 0.4 s and 100 MB per process
# (IPv4 alone would save 30 MB, but a large share of Japanese visitors arrive over IPv6).
# geoip2fast keeps its data in module globals, so a process holds one data file: this one.
GEOIP_FILE = "geoip2fast-asn-ipv6.dat.gz"
_NOT_OWNERS = {"", "<unknown>", "IANA.ORG"}
_geo_lock = threading.Lock()
_geo: Any = None
_geo_failed = False


def _geo_db() -> Any:
    """The GeoIP data, loaded on first use. An absolute path, because geoip2fast would first
    look for a bare file name in the working directory, and its data files are pickles."""
    global _geo, _geo_failed
    if _geo is None and not _geo_failed:
        with _geo_lock:
            if _geo is None and not _geo_failed:
                try:
                    import geoip2fast
                    from geoip2fast import GeoIP2Fast

                    path = os.path.join(os.path.dirname(geoip2fast.__file__), GEOIP_FILE)
                    _geo = GeoIP2Fast(geoip2fast_data_file=path)
                except Exception:  # noqa: BLE001 - without the data, hits simply have no country
                    _geo_failed = True
                    logger.exception("cannot load the GeoIP data file %s", GEOIP_FILE)
    return _geo


@lru_cache(maxsize=20_000)
def lookup_ip(ip: str | None) -> IpInfo:
    """Country and network owner of a public address, from data shipped with geoip2fast;
    empty for private, reserved and invalid addresses."""
    address = _address(ip)
    if address is None or not address.is_global:
        return NO_IP_INFO
    geo = _geo_db()
    if geo is None:
        return NO_IP_INFO
    try:
        result = geo.lookup(str(address))
        country = result.country_code if isinstance(result.country_code, str) else ""
        org = result.asn_name if isinstance(result.asn_name, str) else ""
    except Exception:  # noqa: BLE001
        return NO_IP_INFO
    country = country if len(country) == 2 and country.isalpha() and country.isupper() else ""
    org = "" if org in _NOT_OWNERS else org.strip()
    return IpInfo(country, None, org)


def anonymize_ip(ip: str) -> str:
    """The address with its host part zeroed: IPv4 keeps its /24, IPv6 its /48 — enough for
    country and company, not for a household. "" for anything that is not an address."""
    address = _address(ip)
    if address is None:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((int(address), prefix), strict=False).network_address)


_RANGE_SEPARATOR = re.compile(r"\s*[-~〜–—−‐]\s*")


def _ascii(text: str) -> str:
    """Full-width digits, dots, slashes and dashes (typed with a Japanese IME) made ASCII."""
    return unicodedata.normalize("NFKC", text).strip().strip("[]")


def parse_network(text: str) -> tuple[int, int, int]:
    """(IP version, first, last) of a CIDR network, a single address or a "start - end" range;
    ValueError with a readable reason otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(_("the network is empty"))
    if len(text) > 100:
        raise ValueError(_("the text is too long for an IP address or range"))
    text = _ascii(text)
    parts = _RANGE_SEPARATOR.split(text)
    if len(parts) == 2:
        try:
            start, end = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[1])
        except ValueError as exc:
            raise ValueError(_("%(text)s is not a range of two IP addresses") % {"text": text}) from exc
        if start.version != end.version:
            raise ValueError(_("the range mixes IPv4 and IPv6"))
        if int(start) > int(end):
            raise ValueError(_("the range ends before it starts"))
        return start.version, int(start), int(end)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(_("%(text)s is not an IP address, CIDR network or range (start - end)")
                         % {"text": text}) from exc
    return network.version, int(network.network_address), int(network.broadcast_address)


def format_network(version: int, first: int, last: int) -> str:
    """The canonical text of a range: an address, a CIDR network when the range is exactly one,
    or "start - end"."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if first == last:
        return str(make(first))
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        bits = 32 if version == 4 else 128
        return f"{make(first)}/{bits - size.bit_length() + 1}"
    return f"{make(first)} - {make(last)}"


class IpCompanyTable:
    """The admin's IP range → company table. It takes precedence over the network owner from
    GeoIP; the most specific (smallest) range containing an address wins."""

    def __init__(self, ranges: Iterable[tuple[str, int | None, str]]) -> None:
        entries = []
        for text, company_id, company_name in ranges:
            try:
                version, first, last = parse_network(text)
            except ValueError:
                logger.warning("IP range %r is not a network; skipped", text)
                continue
            entries.append((version, first, last, (company_id, company_name)))
        self._index = _RangeIndex(entries)

    def lookup(self, ip: str | None) -> tuple[int | None, str] | None:
        """(company id or None, company name) for an address, or None when no range holds it."""
        address = _address(ip)
        return self._index.get(address) if address is not None else None

    def __len__(self) -> int:
        return len(self._index)


# --- IP range CSV ---------------------------------------------------------------------------


def _header_key(text: str) -> str:
    return re.sub(r"[\s_\-・]", "", unicodedata.normalize("NFKC", text).lower())


HEADERS = {
    **dict.fromkeys(
        ["network", "networks", "ip", "ips", "ipaddress", "ipaddr", "address", "cidr", "range", "iprange",
         "ネットワーク", "ネットワークアドレス", "ipアドレス", "アドレス", "ipレンジ", "ip範囲", "ipアドレス範囲",
         "範囲"],
        "network",
    ),
    **dict.fromkeys(
        ["company", "companyname", "organization", "organisation", "org", "会社名", "企業名", "会社", "企業",
         "社名", "法人名", "組織", "組織名"],
        "company",
    ),
    **dict.fromkeys(["note", "notes", "memo", "comment", "comments", "description", "メモ", "備考", "コメント", "説明"],
                    "note"),
}
TEXT_LIMIT = 255


def _decode_csv(data: bytes) -> str:
    """UTF-8 (with or without BOM), CP932 (Shift_JIS, as Excel saves in Japan), EUC-JP or
    UTF-16 with BOM. Undecodable bytes become U+FFFD, and lines holding one are reported."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8", "cp932", "euc_jp"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    candidates = [data.decode(encoding, errors="replace") for encoding in ("utf-8", "cp932")]
    return min(candidates, key=lambda text: text.count("\ufffd"))


def parse_ip_ranges_csv(data: bytes) -> tuple[list[dict], list[dict]]:
    """Rows for the IP range table from an uploaded CSV with a header line.

    Columns: network (CIDR, single address or "start - end" range), company, and an optional
    note; Japanese headers (IPアドレス, 会社名, メモ, ...) work too, and tab-separated files as
    well. Returns (good rows as {"network", "company", "note", "line"}, errors as {"line",
    "message"}): every bad line is reported by its line number and the good ones are kept.
    """
    rows: list[dict] = []
    errors: list[dict] = []
    text = _decode_csv(data or b"")
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns: dict[str, int] | None = None
    seen: dict[tuple[int, int, int], int] = {}
    line = 1
    try:
        for record in reader:
            start, line = line, reader.line_num + 1
            cells = [cell.strip() for cell in record]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if columns is None:
                columns = {}
                for index, cell in enumerate(cells):
                    columns.setdefault(HEADERS.get(_header_key(cell), ""), index)
                if "network" not in columns or "company" not in columns:
                    errors.append({"line": start, "message": _(
                        "The first line must name the columns, with at least a network and a company column "
                        "(for example “network,company,note” or “IPアドレス,会社名,メモ”).")})
                    return rows, errors
                continue
            network, company, note = (
                cells[columns[name]] if name in columns and columns[name] < len(cells) else ""
                for name in ("network", "company", "note")
            )
            checked = _check_row(network, company, note)
            if isinstance(checked, str):
                errors.append({"line": start, "message": checked})
                continue
            if checked in seen:
                errors.append({"line": start, "message": _("the same network as line %(line)d")
                               % {"line": seen[checked]}})
                continue
            seen[checked] = start
            rows.append({"network": format_network(*checked), "company": company, "note": note, "line": start})
    except csv.Error as exc:
        errors.append({"line": line, "message": _("the file cannot be read as CSV from here on: %(error)s")
                       % {"error": exc}})
    if columns is None:
        errors.append({"line": 1, "message": _("The file is empty.")})
    return rows, errors


def _check_row(network: str, company: str, note: str) -> tuple[int, int, int] | str:
    """The parsed network of a good row, or the reason the row is bad."""
    if "\ufffd" in network + company + note:
        return _("the line holds characters that are neither UTF-8 nor Shift_JIS")
    try:
        key = parse_network(network)
    except ValueError as exc:
        return str(exc)
    if not company:
        return _("the company name is empty")
    if len(company) > TEXT_LIMIT:
        return _("the company name is longer than %(limit)d characters") % {"limit": TEXT_LIMIT}
    if len(note) > TEXT_LIMIT:
        return _("the note is longer than %(limit)d characters") % {"limit": TEXT_LIMIT}
    return key
