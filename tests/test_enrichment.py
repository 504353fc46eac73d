"""Enrichment and traffic sources: user agents, bots, GeoIP, the IP range → company table and
its CSV import, and the classification of referrers. Pure functions: no database."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.events import enrichment, referrers
from kizuna.events.enrichment import BotRules, IpCompanyTable, IpInfo, UserAgentInfo
from kizuna.events.referrers import TrafficSource, classify, utm_from_url

CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")
HEADLESS_CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "HeadlessChrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/18.1 Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1")
ANDROID_PHONE = ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/131.0.0.0 Mobile Safari/537.36")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/18.1 Safari/605.1.15")
LINE_IN_APP = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Mobile/15E148 Line/13.1.0")
SMART_TV = ("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 "
            "Chrome/76.0.3809.146 TV Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
                        "Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
                        "+http://www.google.com/bot.html)")
BINGBOT = ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
           "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36")
NO_RULES = BotRules()
PAGE = "https://www.example.co.jp/lp"


def percent(text: str, encoding: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode(encoding))


# --- user agents ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ua", "expected"), [
    (CHROME_WINDOWS, UserAgentInfo("Chrome", "131", "Windows", "desktop")),
    (SAFARI_MAC, UserAgentInfo("Safari", "18", "macOS", "desktop")),
    (IPHONE, UserAgentInfo("Mobile Safari", "18", "iOS", "mobile")),
    (IPAD, UserAgentInfo("Mobile Safari", "17", "iOS", "tablet")),
    (ANDROID_PHONE, UserAgentInfo("Chrome Mobile", "131", "Android", "mobile")),
    (ANDROID_TABLET, UserAgentInfo("Chrome", "131", "Android", "tablet")),
    (LINE_IN_APP, UserAgentInfo("LINE", "13", "iOS", "mobile")),
    (SMART_TV, UserAgentInfo("Samsung Internet", "4", "Tizen", "other")),
    (GOOGLEBOT, UserAgentInfo("Googlebot", "2", "", "bot")),
    (GOOGLEBOT_SMARTPHONE, UserAgentInfo("Googlebot", "2", "Android", "bot")),
    (HEADLESS_CHROME, UserAgentInfo("HeadlessChrome", "131", "Linux", "desktop")),
    ("DoCoMo/2.0 P903i(c100;TB;W24H12)", UserAgentInfo("", "", "", "mobile")),
    ("", UserAgentInfo("", "", "", "other")),
    ("   ", UserAgentInfo("", "", "", "other")),
    ("¯\\_(ツ)_/¯ \x00\udcff", UserAgentInfo("", "", "", "other")),
])
def test_parse_user_agent(ua, expected):
    assert enrichment.parse_user_agent(ua) == expected


def test_parse_user_agent_is_cached():
    ua = CHROME_WINDOWS + " Kizuna-cache-test"
    first = enrichment.parse_user_agent(ua)
    hits = enrichment.parse_user_agent.cache_info().hits
    assert enrichment.parse_user_agent(ua) is first
    assert enrichment.parse_user_agent.cache_info().hits == hits + 1
    assert enrichment.parse_user_agent.cache_info().maxsize == 10_000


# --- bots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ua", "reason"), [
    (GOOGLEBOT, "crawler:Googlebot"),
    (GOOGLEBOT_SMARTPHONE, "crawler:Googlebot"),
    (BINGBOT, "crawler:bingbot"),
    ("curl/8.5.0", "crawler:curl"),
    ("python-requests/2.32.3", "crawler:python-requests"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "crawler:facebookexternalhit"),
    (CHROME_WINDOWS, ""),
    (IPHONE, ""),
    (LINE_IN_APP, ""),
    (HEADLESS_CHROME, ""),  # the site's own browser tests and monitoring: people unless a rule says otherwise
    ("", "empty-ua"),
    ("  ", "empty-ua"),
])
def test_is_bot_by_crawler_list(ua, reason):
    assert enrichment.is_bot(ua, "198.51.100.7", NO_RULES) == reason


BROWSER_TOKENS = st.sampled_from([
    "Mozilla/5.0", "(Windows NT 10.0; Win64; x64)", "AppleWebKit/537.36", "(KHTML, like Gecko)", "Chrome/131.0.0.0",
    "Safari/537.36", "Mobile/15E148", "(iPhone; CPU iPhone OS 18_1 like Mac OS X)", "Version/18.1", "Linux", "Build/",
    "[FBAN/FBIOS;FBAV/489.0.0.35.107;FBLC/ja_JP]", "Line/13.1.0", "Edg/131.0", "rv:133.0", "compatible;", "Android 14;",
    # Near misses and the generic crawler words: phone models ending in "bot", words with "crawl" or "reader".
    "cubot", "; M bot", "; POWER BOT", "x-bot", "WebReader", "SiteMonitoring", "Cron", "my_spider",
    "Sitemaps Generator", "Yandex", "YandexSearch", "Java/1.8", "outbrain", "Y!J-ABC", "Ruby", "b0t",
])


def _crawler_words() -> list[str]:
    from crawlerdetect.providers.crawlers import data

    return sorted({p.strip("^$").replace("\\", "") for p in data})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(BROWSER_TOKENS, st.sampled_from(_crawler_words()), st.text(max_size=8)), max_size=8),
       st.sampled_from([" ", "", ";", "/", "-"]), st.booleans())
def test_crawler_check_agrees_with_crawlerdetect(tokens, separator, upper):
    """The fast search finds a crawler exactly when crawlerdetect's own does."""
    from crawlerdetect import CrawlerDetect

    ua = separator.join(tokens)
    ua = ua.upper() if upper else ua
    # Only the HeadlessChrome token is read differently, on purpose (see enrichment._HEADLESS).
    assert bool(enrichment._crawler(ua)) == CrawlerDetect().is_crawler(ua.replace("HeadlessChrome/", "Chrome/")), ua


def test_bot_rules_from_settings_text():
    ua_text = "# automation\nHeadlessChrome\n\n([unclosed\n.*\nKizunaMonitor/\\d+\n"
    ip_text = "203.0.113.0/24   # office network\nnot-an-ip\n2001:db8:beef::/48\n0.0.0.0/0\n１９８．５１．１００．９\n"
    rules, errors = enrichment.compile_bot_rules(ua_text, ip_text)
    assert errors == [
        "line 4: invalid regular expression: unterminated character set at position 1",
        "line 5: .* matches every user agent",
        "line 2: not-an-ip is not an IP address or CIDR network",
        "line 4: 0.0.0.0/0 matches every IP address",
    ]
    assert [p.pattern for p in rules.ua_patterns] == ["HeadlessChrome", "KizunaMonitor/\\d+"]
    assert [str(n) for n in rules.networks] == ["203.0.113.0/24", "2001:db8:beef::/48", "198.51.100.9/32"]

    assert enrichment.is_bot(HEADLESS_CHROME, None, rules) == "rule:ua:HeadlessChrome"
    assert enrichment.is_bot(HEADLESS_CHROME.lower(), None, rules) == "rule:ua:HeadlessChrome"  # case-insensitive
    assert enrichment.is_bot("Mozilla/5.0 KizunaMonitor/2", None, rules) == "rule:ua:KizunaMonitor/\\d+"
    assert enrichment.is_bot(CHROME_WINDOWS, "203.0.113.77", rules) == "rule:ip:203.0.113.0/24"
    assert enrichment.is_bot(CHROME_WINDOWS, "::ffff:203.0.113.77", rules) == "rule:ip:203.0.113.0/24"
    assert enrichment.is_bot(CHROME_WINDOWS, "2001:db8:beef:1::5", rules) == "rule:ip:2001:db8:beef::/48"
    assert enrichment.is_bot(CHROME_WINDOWS, "198.51.100.9", rules) == "rule:ip:198.51.100.9/32"
    assert enrichment.is_bot(CHROME_WINDOWS, "198.51.100.10", rules) == ""
    assert enrichment.is_bot(CHROME_WINDOWS, "2001:db8:bef0::1", rules) == ""
    assert enrichment.is_bot(CHROME_WINDOWS, None, rules) == ""
    assert enrichment.is_bot(CHROME_WINDOWS, "garbage", rules) == ""
    # Admin rules come before the crawler list, so the reason names the admin's rule.
    rules, _errors = enrichment.compile_bot_rules("googlebot", "")
    assert enrichment.is_bot(GOOGLEBOT, None, rules) == "rule:ua:googlebot"
    # Empty settings: no rules, no errors.
    assert enrichment.compile_bot_rules("", "") == (BotRules(), [])


def test_bot_rules_compare_by_value():
    """The settings are re-read periodically; equal texts give equal (and hashable) rules."""
    first, _ = enrichment.compile_bot_rules("HeadlessChrome", "203.0.113.0/24")
    again, _ = enrichment.compile_bot_rules("HeadlessChrome\n", "203.0.113.0/24\n")
    assert first == again and hash(first) == hash(again)
    assert first != enrichment.compile_bot_rules("HeadlessChrome", "")[0]


# --- IP addresses ---------------------------------------------------------------------------


def test_lookup_ip_country_and_network_owner():
    google = enrichment.lookup_ip("8.8.8.8")
    assert google.country == "US"
    assert "GOOGLE" in google.org.upper()
    assert google.asn is None  # the shipped data names owners without AS numbers
    assert enrichment.lookup_ip("2001:4860:4860::8888").country == "US"  # IPv6 data is loaded too
    assert enrichment.lookup_ip("::ffff:8.8.8.8") == google
    assert enrichment.lookup_ip("1.1.1.1").country == "AU"


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.0.10", "172.16.5.4", "127.0.0.1", "100.64.0.1", "169.254.1.1",
                                "::1", "fe80::1", "fd00::1", "2001:db8::1", "203.0.113.5", "", None, "not an ip",
                                "8.8.8.8.8", "[", "\x00"])
def test_lookup_ip_empty_for_private_and_invalid(ip):
    assert enrichment.lookup_ip(ip) == IpInfo("", None, "")


@pytest.mark.parametrize(("ip", "anonymous"), [
    ("198.51.100.77", "198.51.100.0"),
    ("8.8.8.8", "8.8.8.0"),
    ("2001:db8:1234:5678:9abc::1", "2001:db8:1234::"),
    ("2404:6800:4004:80a::200e", "2404:6800:4004::"),
    ("::ffff:203.0.113.9", "203.0.113.0"),
    (" 198.51.100.77 ", "198.51.100.0"),
    ("198.51.100", ""),
    ("", ""),
    ("example.com", ""),
    (None, ""),
])
def test_anonymize_ip(ip, anonymous):
    assert enrichment.anonymize_ip(ip) == anonymous


def test_ip_company_table_most_specific_range_wins():
    table = IpCompanyTable([
        ("10.0.0.0/8", 1, "丸商事グループ"),
        ("10.1.0.0/16", 2, "丸商事株式会社"),
        *[(f"10.2.{i}.0/24", None, f"支店 {i}") for i in range(200)],
        ("10.1.5.0 - 10.1.5.20", 3, "丸商事 大阪営業所"),
        ("192.0.2.10 - 192.0.2.20", None, "範囲商事"),
        ("192.0.2.0/28", None, "Overlap KK"),  # 192.0.2.0-15 (16 addresses) is smaller than nothing above
        ("198.51.100.7", 4, "一台だけ"),
        ("2001:db8::/32", None, "IPv6 全体"),
        ("2001:db8:aa::/48", 5, "IPv6 支社"),
        ("garbage", None, "ignored"),
        ("10.9.0.0 - 10.8.0.0", None, "reversed, ignored"),
    ])
    assert table.lookup("10.1.2.3") == (2, "丸商事株式会社")
    assert table.lookup("10.1.5.0") == (3, "丸商事 大阪営業所")
    assert table.lookup("10.1.5.20") == (3, "丸商事 大阪営業所")
    assert table.lookup("10.1.5.21") == (2, "丸商事株式会社")
    assert table.lookup("10.2.7.9") == (None, "支店 7")
    assert table.lookup("10.250.0.1") == (1, "丸商事グループ")  # behind 200 smaller ranges
    assert table.lookup("10.0.0.0") == (1, "丸商事グループ") and table.lookup("10.255.255.255") == (1, "丸商事グループ")
    assert table.lookup("11.0.0.0") is None and table.lookup("9.255.255.255") is None
    assert table.lookup("192.0.2.12") == (None, "範囲商事")  # 11 addresses beat 16
    assert table.lookup("192.0.2.5") == (None, "Overlap KK")
    assert table.lookup("192.0.2.20") == (None, "範囲商事")
    assert table.lookup("192.0.2.21") is None
    assert table.lookup("198.51.100.7") == (4, "一台だけ") and table.lookup("198.51.100.8") is None
    assert table.lookup("::ffff:198.51.100.7") == (4, "一台だけ")
    assert table.lookup("2001:db8::5") == (None, "IPv6 全体")
    assert table.lookup("2001:db8:aa:1::5") == (5, "IPv6 支社")
    assert table.lookup("2001:db9::1") is None
    assert table.lookup("bad") is None and table.lookup(None) is None and table.lookup("") is None
    assert IpCompanyTable([]).lookup("10.0.0.1") is None


def test_ip_company_table_equal_ranges_first_wins():
    table = IpCompanyTable([("203.0.113.0/24", 1, "First"), ("203.0.113.0 - 203.0.113.255", 2, "Second")])
    assert table.lookup("203.0.113.9") == (1, "First")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=25), st.lists(st.integers(0, 255),
                                                                                           max_size=30))
def test_ip_company_table_matches_a_brute_force_search(bounds, probes):
    """Against the definition: the smallest range holding the address, the first given among equals."""
    ranges = [(min(a, b), max(a, b)) for a, b in bounds]
    table = IpCompanyTable((f"192.0.2.{first} - 192.0.2.{last}", i, f"c{i}") for i, (first, last) in enumerate(ranges))
    for probe in probes + [first for first, _ in ranges] + [last for _, last in ranges]:
        holding = [(last - first, i) for i, (first, last) in enumerate(ranges) if first <= probe <= last]
        expected = (min(holding)[1], f"c{min(holding)[1]}") if holding else None
        assert table.lookup(f"192.0.2.{probe}") == expected


# --- IP range CSV ---------------------------------------------------------------------------


def test_ip_ranges_csv_cp932_with_japanese_headers():
    text = (
        "IPアドレス,会社名,メモ\r\n"
        "203.0.113.0/24,丸商事株式会社,本社\r\n"
        "999.1.1.1,壊れた行,\r\n"
        "198.51.100.5,,名前なし\r\n"
        "203.0.113.0 - 203.0.113.255,重複,同じ範囲\r\n"
        "\r\n"
        "192.0.2.1 〜 192.0.2.9,範囲商事,\"複数行の\r\nメモ\"\r\n"
        "２０３．０．１１４．５,全角商事,\r\n"
        "192.0.2.50 - 192.0.2.40,逆順,\r\n"
        "2001:db8::1 - 198.51.100.1,混在,\r\n"
        "198.51.100.64/26,最後の会社\r\n"
    )
    rows, errors = enrichment.parse_ip_ranges_csv(text.encode("cp932"))
    assert rows == [
        {"network": "203.0.113.0/24", "company": "丸商事株式会社", "note": "本社", "line": 2},
        {"network": "192.0.2.1 - 192.0.2.9", "company": "範囲商事", "note": "複数行の\r\nメモ", "line": 7},
        {"network": "203.0.114.5", "company": "全角商事", "note": "", "line": 9},
        {"network": "198.51.100.64/26", "company": "最後の会社", "note": "", "line": 12},
    ]
    assert [(e["line"], e["message"]) for e in errors] == [
        (3, "999.1.1.1 is not an IP address, CIDR network or range (start - end)"),
        (4, "the company name is empty"),
        (5, "the same network as line 2"),
        (10, "the range ends before it starts"),
        (11, "the range mixes IPv4 and IPv6"),
    ]


def test_ip_ranges_csv_utf8_with_and_without_bom():
    text = ("network,company,note\n2001:db8::/48,IPv6 KK,\n203.0.113.7/32,Single KK,one host\n"
            "198.51.100.9/24,Host bits,\n")
    for data in (text.encode("utf-8"), b"\xef\xbb\xbf" + text.encode("utf-8")):
        rows, errors = enrichment.parse_ip_ranges_csv(data)
        assert errors == []
        assert [(r["network"], r["company"], r["note"]) for r in rows] == [
            ("2001:db8::/48", "IPv6 KK", ""), ("203.0.113.7", "Single KK", "one host"),
            ("198.51.100.0/24", "Host bits", "")]


def test_ip_ranges_csv_other_headers_and_tabs():
    rows, errors = enrichment.parse_ip_ranges_csv("企業名\tネットワーク\t備考\n丸商事\t203.0.113.0/24\t本社\n".encode())
    assert errors == [] and rows == [{"network": "203.0.113.0/24", "company": "丸商事", "note": "本社", "line": 2}]
    rows, errors = enrichment.parse_ip_ranges_csv("Company Name,IP Address\n丸商事,203.0.113.0/24\n".encode("utf-16"))
    assert errors == [] and rows[0]["company"] == "丸商事"


@pytest.mark.parametrize("data", [b"foo,bar\n203.0.113.0/24,x\n", b"203.0.113.0/24,Company\n",
                                  "会社名\n丸商事\n".encode("cp932")])
def test_ip_ranges_csv_needs_a_header(data):
    rows, errors = enrichment.parse_ip_ranges_csv(data)
    assert rows == [] and len(errors) == 1 and errors[0]["line"] == 1
    assert "network" in errors[0]["message"]


def test_ip_ranges_csv_empty_file():
    assert enrichment.parse_ip_ranges_csv(b"") == ([], [{"line": 1, "message": "The file is empty."}])
    assert enrichment.parse_ip_ranges_csv(b"\n\n")[1][0]["line"] == 1


def test_ip_ranges_csv_rows_fit_the_table():
    """Every good row can be loaded back into IpCompanyTable, which is what the import stores."""
    rows, _errors = enrichment.parse_ip_ranges_csv(
        b"network,company\n203.0.113.0/24,A\n192.0.2.1 - 192.0.2.9,B\n2001:db8::/48,C\n")
    table = IpCompanyTable((r["network"], None, r["company"]) for r in rows)
    assert [table.lookup(ip) for ip in ("203.0.113.5", "192.0.2.9", "2001:db8::1")] == [
        (None, "A"), (None, "B"), (None, "C")]


# --- traffic sources ------------------------------------------------------------------------


YAHOO_UTF8 = ("https://search.yahoo.co.jp/search?p=%E3%83%9E%E3%83%BC%E3%82%B1%E3%83%86%E3%82%A3%E3%83%B3%E3%82%B0"
              "+%E8%87%AA%E5%8B%95%E5%8C%96&fr=top_ga1_sa&ei=UTF-8")


@pytest.mark.parametrize(("referrer", "engine", "keyword"), [
    (YAHOO_UTF8, "Yahoo! JAPAN", "マーケティング 自動化"),
    (f"http://search.yahoo.co.jp/search?p={percent('名刺管理 ソフト', 'shift_jis')}&ei=Shift_JIS", "Yahoo! JAPAN",
     "名刺管理 ソフト"),
    (f"http://search.yahoo.co.jp/search?ei=SJIS&p={percent('営業支援', 'cp932')}", "Yahoo! JAPAN", "営業支援"),
    # No charset parameter: not UTF-8, so Shift_JIS or EUC-JP, whichever reads as Japanese.
    (f"http://search.yahoo.co.jp/search?p={percent('見込み客', 'cp932')}", "Yahoo! JAPAN", "見込み客"),
    (f"http://search.yahoo.co.jp/search?p={percent('マーケティング', 'euc_jp')}", "Yahoo! JAPAN", "マーケティング"),
    (f"http://search.yahoo.co.jp/search?p={percent('顧客管理', 'euc_jp')}&ei=EUC-JP", "Yahoo! JAPAN", "顧客管理"),
    ("https://www.google.co.jp/", "Google", ""),
    ("https://www.google.com/", "Google", ""),
    ("https://www.google.com.au/search?q=kizuna+crm", "Google", "kizuna crm"),
    ("https://google.de/url?q=x", "Google", "x"),
    ("https://www.bing.com/search?q=%E5%90%8D%E5%88%BA%E7%AE%A1%E7%90%86&form=QBLH", "Bing", "名刺管理"),
    ("https://search.yahoo.com/search?p=marketing+automation", "Yahoo", "marketing automation"),
    ("https://duckduckgo.com/?q=open+source+MA", "DuckDuckGo", "open source MA"),
    ("https://www.baidu.com/s?wd=%E8%90%A5%E9%94%80", "Baidu", "营销"),
    ("https://m.baidu.com/s?word=%E8%90%A5%E9%94%80", "Baidu", "营销"),
    ("https://search.naver.com/search.naver?query=%EB%A7%88%EC%BC%80%ED%8C%85", "Naver", "마케팅"),
    ("https://yandex.ru/search/?text=crm", "Yandex", "crm"),
    ("https://search.goo.ne.jp/web.jsp?MT=%E3%83%A1%E3%83%AB%E3%83%9E%E3%82%AC&IE=UTF-8", "goo", "メルマガ"),
    ("https://cgi.search.biglobe.ne.jp/cgi-bin/search2-b?q=%E5%B1%95%E7%A4%BA%E4%BC%9A", "BIGLOBE", "展示会"),
    ("https://www.ecosia.org/search?q=crm", "Ecosia", "crm"),
    ("https://search.brave.com/search?q=crm&source=web", "Brave", "crm"),
    ("https://www.startpage.com/do/search?query=crm", "Startpage", "crm"),
    ("https://www.startpage.com/", "Startpage", ""),
    ("android-app://com.google.android.googlequicksearchbox/", "Google", ""),
    # Keywords are normalised: full-width letters, ideographic spaces.
    ("https://search.yahoo.co.jp/search?p=%EF%BC%AD%EF%BC%A1%E3%80%80%E3%83%84%E3%83%BC%E3%83%AB", "Yahoo! JAPAN",
     "MA ツール"),
    # Broken percent-encoding keeps what can be read.
    ("https://search.yahoo.co.jp/search?p=%ZZ%E3%83", "Yahoo! JAPAN", "%ZZ"),
])
def test_search_engines_and_keywords(referrer, engine, keyword):
    source = classify(referrer, PAGE)
    assert (source.kind, source.engine, source.keyword, source.click_id) == ("search", engine, keyword, "")


@pytest.mark.parametrize(("referrer", "page", "expected"), [
    # Ad click ids in the page URL; utm_term is the keyword.
    ("https://www.google.com/", PAGE + "?gclid=EAIaIQ&utm_term=%E5%90%8D%E5%88%BA",
     TrafficSource("paid", "google.com", "Google", "名刺", "gclid")),
    ("", PAGE + "?gbraid=0AAAAA", TrafficSource("paid", "", "Google", "", "gbraid")),
    ("https://search.yahoo.co.jp/", PAGE + "?yclid=YSS.1000", TrafficSource("paid", "search.yahoo.co.jp",
                                                                            "Yahoo! JAPAN", "", "yclid")),
    ("https://yandex.ru/", PAGE + "?yclid=123", TrafficSource("paid", "yandex.ru", "Yandex", "", "yclid")),
    ("https://www.bing.com/", PAGE + "?msclkid=abc", TrafficSource("paid", "bing.com", "Microsoft Advertising", "",
                                                                   "msclkid")),
    ("", PAGE + "?ldtag_cl=abc", TrafficSource("paid", "", "LINE", "", "ldtag_cl")),
    ("https://t.co/x", PAGE + "?twclid=abc", TrafficSource("paid", "t.co", "X", "", "twclid")),
    ("", PAGE + "?li_fat_id=abc", TrafficSource("paid", "", "LinkedIn", "", "li_fat_id")),
    ("", PAGE + "?ttclid=abc", TrafficSource("paid", "", "TikTok", "", "ttclid")),
    ("", PAGE + "?wbraid=abc", TrafficSource("paid", "", "Google", "", "wbraid")),
    ("https://www.google.com/", PAGE + "?fbclid=a&gclid=b", TrafficSource("paid", "google.com", "Google", "", "gclid")),
    # Paid by utm_medium alone.
    ("", PAGE + "?utm_source=google&utm_medium=cpc&utm_term=crm", TrafficSource("paid", "", "Google", "crm", "")),
    ("", PAGE + "?utm_source=facebook&utm_medium=paid-social", TrafficSource("paid", "", "Facebook", "", "")),
    ("", PAGE + "?utm_source=asp&utm_medium=affiliate", TrafficSource("paid", "", "asp", "", "")),
    ("", PAGE + "?utm_source=gdn&utm_medium=Display", TrafficSource("paid", "", "gdn", "", "")),
    ("", PAGE + "?utm_source=yahoo&utm_medium=cpc_yahoo", TrafficSource("paid", "", "Yahoo", "", "")),
    ("https://googleads.g.doubleclick.net/", PAGE, TrafficSource("paid", "googleads.g.doubleclick.net", "Google", "",
                                                                 "")),
    # fbclid is on every link Facebook sends out: social unless a paid medium says otherwise.
    ("https://l.facebook.com/", PAGE + "?fbclid=IwAR0", TrafficSource("social", "l.facebook.com", "Facebook", "",
                                                                     "fbclid")),
    ("", PAGE + "?fbclid=IwAR0", TrafficSource("social", "", "Facebook", "", "fbclid")),
    ("https://l.instagram.com/", PAGE + "?fbclid=a&utm_source=instagram&utm_medium=paid_social",
     TrafficSource("paid", "l.instagram.com", "Instagram", "", "fbclid")),
    # Email.
    ("", PAGE + "?utm_source=newsletter&utm_medium=email&utm_campaign=2024-11",
     TrafficSource("email", "", "newsletter", "", "")),
    ("", PAGE + "?utm_source=kizuna&utm_medium=%E3%83%A1%E3%83%BC%E3%83%AB", TrafficSource("email", "", "kizuna", "",
                                                                                         "")),
    ("", PAGE + "?utm_source=nl&utm_medium=E-Mail", TrafficSource("email", "", "nl", "", "")),
    ("https://mail.google.com/mail/u/0/", PAGE, TrafficSource("email", "mail.google.com", "Gmail", "", "")),
    ("https://outlook.live.com/", PAGE, TrafficSource("email", "outlook.live.com", "Outlook", "", "")),
    ("https://mail.yahoo.co.jp/", PAGE, TrafficSource("email", "mail.yahoo.co.jp", "Yahoo!メール", "", "")),
    ("android-app://com.google.android.gm/", PAGE, TrafficSource("email", "com.google.android.gm", "Gmail", "", "")),
    ("", PAGE + "?mc_cid=abc&mc_eid=def", TrafficSource("email", "", "", "", "")),
    # Social networks.
    ("https://t.co/AbC", PAGE, TrafficSource("social", "t.co", "X", "", "")),
    ("https://x.com/", PAGE, TrafficSource("social", "x.com", "X", "", "")),
    ("https://m.facebook.com/", PAGE, TrafficSource("social", "m.facebook.com", "Facebook", "", "")),
    ("https://www.linkedin.com/feed/", PAGE, TrafficSource("social", "linkedin.com", "LinkedIn", "", "")),
    ("https://lnkd.in/abc", PAGE, TrafficSource("social", "lnkd.in", "LinkedIn", "", "")),
    ("https://www.youtube.com/", PAGE, TrafficSource("social", "youtube.com", "YouTube", "", "")),
    ("https://note.com/kizuna/n/n1", PAGE, TrafficSource("social", "note.com", "note", "", "")),
    ("https://b.hatena.ne.jp/entry/s/example.co.jp/", PAGE, TrafficSource("social", "b.hatena.ne.jp",
                                                                          "Hatena Bookmark", "", "")),
    ("https://line.me/R/", PAGE, TrafficSource("social", "line.me", "LINE", "", "")),
    ("android-app://jp.naver.line.android/", PAGE, TrafficSource("social", "jp.naver.line.android", "LINE", "", "")),
    ("https://www.tiktok.com/", PAGE, TrafficSource("social", "tiktok.com", "TikTok", "", "")),
    ("https://www.pinterest.jp/", PAGE, TrafficSource("social", "pinterest.jp", "Pinterest", "", "")),
    ("https://old.reddit.com/r/x", PAGE, TrafficSource("social", "old.reddit.com", "Reddit", "", "")),
    ("https://qiita.com/items/1", PAGE, TrafficSource("social", "qiita.com", "Qiita", "", "")),
    ("https://zenn.dev/articles/1", PAGE, TrafficSource("social", "zenn.dev", "Zenn", "", "")),
    ("https://www.instagram.com/", PAGE, TrafficSource("social", "instagram.com", "Instagram", "", "")),
    # utm without a referrer (apps, PDFs, QR codes).
    ("", PAGE + "?utm_source=twitter&utm_medium=social", TrafficSource("social", "", "X", "", "")),
    ("", PAGE + "?utm_source=line", TrafficSource("social", "", "LINE", "", "")),
    ("", PAGE + "?utm_source=google&utm_medium=organic", TrafficSource("search", "", "Google", "", "")),
    ("", PAGE + "?utm_source=newsletter", TrafficSource("email", "", "newsletter", "", "")),
    ("", PAGE + "?utm_source=partner.example&utm_medium=referral", TrafficSource("referral", "", "partner.example",
                                                                                 "", "")),
    ("", PAGE + "?utm_source=qr&utm_medium=offline", TrafficSource("referral", "", "qr", "", "")),
    ("", PAGE + "?utm_campaign=only", TrafficSource("direct", "", "", "", "")),
    # An explicit social medium beats an unknown referrer.
    ("https://hub.example.net/", PAGE + "?utm_source=facebook&utm_medium=social",
     TrafficSource("social", "hub.example.net", "Facebook", "", "")),
    # Internal: the same host (without "www.") or one of the site's own hosts.
    ("https://example.co.jp/features", PAGE, TrafficSource("internal", "example.co.jp", "", "", "")),
    ("https://WWW.Example.co.jp:443/x", PAGE, TrafficSource("internal", "example.co.jp", "", "", "")),
    ("https://www.example.co.jp/lp", PAGE + "?gclid=abc", TrafficSource("internal", "example.co.jp", "", "",
                                                                       "gclid")),
    # Others.
    ("https://blog.example.com/post?id=1", PAGE, TrafficSource("referral", "blog.example.com", "", "", "")),
    ("https://news.google.com/articles/1", PAGE, TrafficSource("referral", "news.google.com", "", "", "")),
    ("https://google.example.com/", PAGE, TrafficSource("referral", "google.example.com", "", "", "")),
    ("https://news.yahoo.co.jp/articles/1", PAGE, TrafficSource("referral", "news.yahoo.co.jp", "", "", "")),
    ("https://tieba.baidu.com/", PAGE, TrafficSource("referral", "tieba.baidu.com", "", "", "")),
    ("https://hatenablog.com/", PAGE, TrafficSource("referral", "hatenablog.com", "", "", "")),
    ("www.partner.example/page", PAGE, TrafficSource("referral", "partner.example", "", "", "")),
    ("", PAGE, TrafficSource("direct", "", "", "", "")),
    ("about:blank", PAGE, TrafficSource("direct", "", "", "", "")),
    ("javascript:alert(1)", PAGE, TrafficSource("direct", "", "", "", "")),
    ("http://[::1", PAGE, TrafficSource("direct", "", "", "", "")),
    ("http://example.com:99999/", PAGE, TrafficSource("direct", "", "", "", "")),
    ("not a url at all", "also not a url", TrafficSource("direct", "", "", "", "")),
])
def test_classify(referrer, page, expected):
    assert classify(referrer, page) == expected


def test_classify_own_hosts():
    shop = "https://shop.example.co.jp/cart"
    assert classify(shop, PAGE).kind == "referral"
    assert classify(shop, PAGE, own_hosts=["shop.example.co.jp"]).kind == "internal"
    assert classify(shop, PAGE, own_hosts=("*.example.co.jp",)).kind == "internal"  # subdomains too
    assert classify(shop, PAGE, own_hosts=["https://www.shop.example.co.jp:8443/"]).kind == "internal"
    assert classify("https://example.com/", PAGE, own_hosts=["example.co.jp"]).kind == "referral"
    assert classify("https://notexample.co.jp/", PAGE, own_hosts=["example.co.jp"]).kind == "referral"


def test_classify_utm_given_by_the_caller():
    """Stored events pass their utm fields; those win over the page URL's."""
    source = classify("", PAGE + "?utm_medium=email", utm={"utm_source": "google", "utm_medium": "cpc",
                                                          "utm_term": "ＭＡ　ツール"})
    assert source == TrafficSource("paid", "", "Google", "MA ツール", "")
    assert classify("", PAGE + "?utm_medium=email", utm={}).kind == "direct"
    assert classify("", PAGE + "?utm_medium=email").kind == "email"


def test_host_lookups_are_cached():
    classify("https://search.yahoo.co.jp/search?p=a", PAGE)
    hits = referrers.host_source.cache_info().hits
    classify("https://search.yahoo.co.jp/search?p=b", PAGE)
    assert referrers.host_source.cache_info().hits == hits + 1


@pytest.mark.parametrize(("url", "utm"), [
    ("https://a.jp/?utm_source=x&utm_campaign=%E7%A7%8B%E3%81%AE%E3%82%BB%E3%83%9F%E3%83%8A%E3%83%BC&q=1",
     {"utm_source": "x", "utm_campaign": "秋のセミナー"}),
    ("https://a.jp/?utm_source=mail+magazine&utm_medium=email&utm_campaign=nov&utm_term=crm&utm_content=top",
     {"utm_source": "mail magazine", "utm_medium": "email", "utm_campaign": "nov", "utm_term": "crm",
      "utm_content": "top"}),
    ("https://a.jp/?utm_source=first&utm_source=second&utm_medium=", {"utm_source": "first"}),
    ("https://a.jp/?UTM_SOURCE=Upper", {"utm_source": "Upper"}),
    (f"https://a.jp/?utm_campaign={percent('新春', 'cp932')}", {"utm_campaign": "新春"}),
    ("https://a.jp/#utm_source=fragment", {}),
    ("https://a.jp/", {}),
    ("", {}),
    ("http://[bad/?utm_source=x", {}),
])
def test_utm_from_url(url, utm):
    assert utm_from_url(url) == utm


# --- garbage in -----------------------------------------------------------------------------

URL_PIECES = st.sampled_from([
    "https://", "http://", "android-app://", "//", "www.", "google.", "co.jp", "search.yahoo.co.jp", "/search",
    "?", "&", "=", "p=", "q=", "ei=", "Shift_JIS", "EUC-JP", "utf-16", "gclid=", "utm_medium=", "cpc", "email",
    "%", "%E3", "%82%A0", "%ZZ", "+", "[", "]", ":", "@", "#", "..", "\x00", "\udcff", "ＭＡ", "　", "x" * 3000,
])
URLS = st.lists(st.one_of(URL_PIECES, st.text(max_size=20)), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(URLS, URLS, st.text(max_size=300), st.lists(st.text(max_size=30), max_size=3))
def test_never_raises_on_garbage(referrer, page, text, hosts):
    source = classify(referrer, page, own_hosts=hosts)
    assert source.kind in ("search", "paid", "social", "email", "referral", "internal", "direct")
    assert isinstance(classify(text, text, utm={"utm_medium": text, "utm_source": text}), TrafficSource)
    assert all(isinstance(v, str) for v in utm_from_url(page).values())
    ua = enrichment.parse_user_agent(text)
    assert ua.device in ("desktop", "mobile", "tablet", "bot", "other")
    assert isinstance(enrichment.is_bot(text, text, NO_RULES), str)
    anonymous = enrichment.anonymize_ip(text)
    assert anonymous == "" or ipaddress.ip_address(anonymous)
    assert isinstance(enrichment.lookup_ip(text), IpInfo)
    assert enrichment.compile_bot_rules(text, text)[0] is not None
    assert IpCompanyTable([(text, None, "x")]).lookup(text) in (None, (None, "x"))
    for encoding in ("utf-8", "cp932", "utf-16"):
        rows, errors = enrichment.parse_ip_ranges_csv(("network,company\n" + text).encode(encoding, "replace"))
        assert all(set(r) == {"network", "company", "note", "line"} for r in rows)
        assert all(isinstance(e["line"], int) and e["message"] for e in errors)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_ip_ranges_csv_never_raises_on_bytes(data):
    rows, errors = enrichment.parse_ip_ranges_csv(data)
    assert isinstance(rows, list) and isinstance(errors, list)


def test_japanese_keyword_survives_quote_round_trip():
    """What a browser sends for a typed Japanese query, read back as typed."""
    keyword = "マーケティング オートメーション 比較"
    referrer = "https://search.yahoo.co.jp/search?p=" + quote(keyword.replace(" ", "+"), safe="+")
    assert classify(referrer, PAGE).keyword == keyword
