"""Machine opens and clicks (kizuna.messaging.machine), on request patterns seen in tracking logs.

Addresses: 17.x is Apple's; 126.x (SoftBank), 153.156.x (NTT OCN), 60.70.x and 2400:4050:: (NTT) stand
for Japanese home connections; 40.92.x / 52.101.x are Microsoft Exchange Online Protection.
"""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kizuna.messaging import machine
from kizuna.messaging.machine import Hit, Verdict, classify, register_network

SENT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
          "Safari/537.36")
EDGE = CHROME + " Edg/131.0.0.0"
SAFARI_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/18.1 Mobile/15E148 Safari/604.1")
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Mobile/15E148")
MAC_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
LINKS = [f"https://www.example.co.jp/{page}" for page in ("seminar", "whitepaper", "pricing", "contact")]


@pytest.fixture(autouse=True)
def _networks():
    machine.reset_networks()
    yield
    machine.reset_networks()


def open_(ua: str, ip: str, *, after: timedelta = timedelta(minutes=20), **headers: str) -> Hit:
    return Hit(kind="open", method="GET", ip=ip, user_agent=ua, at=SENT + after, sent_at=SENT,
               headers={k.replace("_", "-"): v for k, v in headers.items()})


def click(ua: str, ip: str, *, after: timedelta = timedelta(minutes=3), url: str = LINKS[0], method: str = "GET",
          **headers: str) -> Hit:
    return Hit(kind="click", method=method, ip=ip, user_agent=ua, at=SENT + after, sent_at=SENT, url=url,
               headers={k.replace("_", "-"): v for k, v in headers.items()})


def reason(hit: Hit, **kwargs) -> str:
    verdict = classify(hit, **kwargs)
    assert verdict.machine == bool(verdict.reason), verdict  # a reason exactly when it is a machine
    assert verdict.label
    return verdict.reason


# --- Opens ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ua, ip", [
    ("Mozilla/5.0", "17.58.100.12"),  # iOS Mail with MPP: bare agent, Apple's network
    ("Mozilla/5.0", "17.253.12.4"),
    (IPHONE_MAIL, "17.58.100.12"),
    ("Mozilla/5.0", "104.28.86.110"),  # bare agent through Cloudflare's Private Relay egress
    ("Mozilla/5.0", "198.18.7.7"),  # bare agent anywhere: no browser or mail client sends it
    (MAC_MAIL, "172.226.44.10"),  # macOS Mail with MPP, through Akamai's relay egress
    (MAC_MAIL, "2a02:26f7:d6c0:4000::1"),
    (IPHONE_MAIL, "::ffff:17.58.100.12"),  # an IPv4-mapped address from a dual-stack socket
])
def test_apple_mail_privacy_protection_opens(ua, ip):
    verdict = classify(open_(ua, ip, after=timedelta(seconds=40)))
    assert verdict.machine and verdict.reason == "apple_mpp"
    assert "Apple" in verdict.label


@pytest.mark.parametrize("ua, ip", [
    (OUTLOOK, "60.70.80.12"),  # desktop Outlook fetches images itself (crawlerdetect calls it a bot)
    (THUNDERBIRD, "153.156.20.5"),
    (IPHONE_MAIL, "126.209.12.34"),  # iPhone Mail with MPP off
    (MAC_MAIL, "2400:4050:2a1:f00::17"),
    (SAFARI_IOS, "104.28.86.110"),  # Private Relay browsing, not Apple Mail's agent: a person
])
def test_mail_clients_on_home_connections_are_people(ua, ip):
    assert classify(open_(ua, ip)) == Verdict(False, "", "person")


def test_gmail_opens_through_google_image_proxy():
    assert reason(open_(GMAIL_PROXY, "66.249.84.71", after=timedelta(hours=2))) == "image_proxy_google"
    assert reason(open_(GMAIL_PROXY, "192.0.2.10")) == "image_proxy_google"  # the agent alone tells
    assert reason(open_(CHROME, "66.249.93.2")) == "image_proxy_google"  # and Google's proxy network
    assert reason(open_(CHROME, "192.0.2.10", via="1.1 ggpht.com GoogleImageProxy")) == "image_proxy_google"


def test_yahoo_and_other_image_proxies():
    assert reason(open_(YAHOO_PROXY, "98.136.155.40")) == "image_proxy_yahoo"
    assert reason(open_(CHROME, "192.0.2.10", via="http/1.1 YahooMailProxy")) == "image_proxy_yahoo"
    assert reason(open_("Mozilla/5.0 (compatible; SomeMailImageProxy/1.0)", "192.0.2.10")) == "image_proxy_other"
    # A corporate Squid in front of a person adds Via too: only known proxy names count.
    assert not classify(open_(CHROME, "126.33.10.4", via="1.1 proxy.example.co.jp (squid/5.7)")).machine


def test_gateways_fetching_the_pixel_are_machine_opens():
    assert reason(open_(CHROME, "40.92.88.17", after=timedelta(seconds=3))) == "scanner_network"
    assert reason(open_("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "126.33.10.4")) == "scanner_agent"
    assert reason(open_("", "126.33.10.4")) == "bot_agent"


# --- Clicks --------------------------------------------------------------------------------------

def test_chrome_click_from_a_japanese_home_three_minutes_after_delivery_is_a_person():
    assert classify(click(CHROME, "126.209.12.34", after=timedelta(minutes=3))) == machine.HUMAN
    assert not classify(click(SAFARI_IOS, "2400:4050:2a1:f00::17", after=timedelta(hours=5))).machine
    # Clicks from Apple's network or Private Relay are people: MPP preloads images, never follows links.
    assert not classify(click(SAFARI_IOS, "104.28.86.110")).machine
    assert not classify(click(SAFARI_IOS, "17.58.100.12")).machine


def test_scanner_click_two_seconds_after_delivery():
    assert reason(click(CHROME, "198.18.40.2", after=timedelta(seconds=2))) == "too_fast"
    assert reason(click(CHROME, "198.18.40.2", after=timedelta(seconds=-1))) == "too_fast"  # before send returned
    assert reason(click(CHROME, "198.18.40.2", after=machine.TOO_FAST)) == ""
    assert not classify(Hit("click", "GET", "198.18.40.2", CHROME, SENT, None, LINKS[0])).machine  # no send time


def test_head_request_on_a_link():
    assert reason(click(CHROME, "126.209.12.34", method="HEAD", after=timedelta(minutes=5))) == "head_request"
    assert reason(click(CHROME, "126.209.12.34", method="head")) == "head_request"


def test_all_four_links_clicked_within_a_second():
    done: list[tuple[datetime, str]] = []
    reasons = []
    for n, url in enumerate(LINKS):
        hit = click(CHROME, "198.18.40.2", after=timedelta(seconds=3, milliseconds=300 * n), url=url)
        reasons.append(reason(hit, earlier_clicks=list(done), link_count=len(LINKS)))
        done.append((hit.at, url))
    assert reasons == ["too_fast", "too_fast", "too_fast", "all_links"]


def test_all_links_burst_long_after_delivery():
    base = timedelta(hours=6)
    earlier = [(SENT + base + timedelta(milliseconds=200 * n), url) for n, url in enumerate(LINKS[:3])]
    last = click(CHROME, "198.18.40.2", after=base + timedelta(milliseconds=700), url=LINKS[3])
    assert reason(last, earlier_clicks=earlier, link_count=4) == "all_links"
    # The same links over ten minutes, or only three of four at once: a person reading.
    spread = [(at - timedelta(minutes=10), url) for at, url in earlier]
    assert reason(last, earlier_clicks=spread, link_count=4) == ""
    assert reason(last, earlier_clicks=earlier[1:], link_count=4) == ""
    # One link clicked twice is not "all links".
    assert reason(click(CHROME, "198.18.40.2", after=base, url=LINKS[0]),
                  earlier_clicks=[(SENT + base - timedelta(seconds=1), LINKS[0])], link_count=1) == ""


def test_microsoft_safe_links_click():
    # Safe Links detonates the URL from Exchange Online Protection with an ordinary Edge agent.
    assert reason(click(EDGE, "40.93.31.200", after=timedelta(seconds=45))) == "scanner_network"
    assert reason(click(EDGE, "52.101.8.12")) == "scanner_network"
    assert reason(click(EDGE, "2a01:111:f400:fe1e::5")) == "scanner_network"
    assert reason(click(CHROME, "66.249.84.71")) == "scanner_network"  # Google's proxy network does not click
    bing = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b"
    assert reason(click(bing, "126.209.12.34")) == "scanner_agent"


@pytest.mark.parametrize("ua", [
    "curl/8.5.0", "Wget/1.21.4", "python-requests/2.32.3", "Go-http-client/2.0", "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Proofpoint URL Defense",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
])
def test_scanner_and_library_agents(ua):
    assert reason(click(ua, "126.209.12.34", after=timedelta(hours=1))) == "scanner_agent"


def test_curl_click():
    verdict = classify(click("curl/8.5.0", "126.209.12.34", after=timedelta(hours=1)))
    assert verdict == Verdict(True, "scanner_agent", "HTTP library")


def test_crawlers_known_only_to_crawlerdetect():
    ahrefs = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
    assert reason(click(ahrefs, "126.209.12.34", after=timedelta(hours=1))) == "bot_agent"
    assert reason(click("Mozilla/5.0", "126.209.12.34", after=timedelta(hours=1))) == "bot_agent"
    assert reason(open_("Mozilla/4.0", "126.209.12.34")) == "bot_agent"  # only MPP's exact agent is Apple's


@pytest.mark.parametrize("header, value", [
    ("sec_purpose", "prefetch"), ("sec_purpose", "prefetch;prerender"), ("purpose", "prefetch"),
    ("x_purpose", "preview"), ("x_moz", "prefetch"),
])
def test_prefetch_headers(header, value):
    assert reason(click(CHROME, "126.209.12.34", **{header: value})) == "prefetch"
    assert reason(click(CHROME, "126.209.12.34", **{header: "navigate"})) == ""


def test_office_link_checks_are_prefetch_not_the_click():
    for ua in ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "Microsoft Office Existence Discovery",
               "Microsoft Office Protocol Discovery"):
        assert reason(click(ua, "126.209.12.34")) == "prefetch"


# --- Networks ------------------------------------------------------------------------------------

def test_registered_networks_win_where_more_specific_and_can_be_reset():
    gateway = "126.209.12.34"
    assert not classify(click(CHROME, gateway)).machine  # cached as a person first…
    register_network("126.209.0.0/16", label="customer gateway")
    verdict = classify(click(CHROME, gateway))
    assert verdict == Verdict(True, "scanner_network", "customer gateway")  # …and the cache follows
    register_network("17.58.0.0/16", "scanner_network", "Apple corporate proxy")
    assert reason(open_(CHROME, "17.58.100.12")) == "scanner_network"
    assert reason(open_("Mozilla/5.0", "17.58.100.12")) == "apple_mpp"  # the bare agent still tells
    assert reason(open_(CHROME, "17.1.2.3")) == "apple_mpp"  # the rest of 17/8 is unchanged
    machine.reset_networks()
    assert not classify(click(CHROME, gateway)).machine


def test_register_network_refuses_bad_input():
    with pytest.raises(ValueError):
        register_network("300.1.0.0/16")
    with pytest.raises(ValueError):
        register_network("198.18.0.0/15", "too_fast")
    assert machine.extra_networks == []


def _most_specific(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> machine.Network | None:
    found = [n for n in (*machine.NETWORKS, *machine.extra_networks)
             if address in ipaddress.ip_network(n.cidr, strict=False)]
    return max(found, key=lambda n: ipaddress.ip_network(n.cidr).prefixlen, default=None)


NESTED = [("17.58.0.0/16", "scanner_network"), ("17.58.100.0/24", "image_proxy_other"),
          ("40.93.0.0/16", "image_proxy_yahoo"), ("40.93.0.0/25", "scanner_network"), ("10.0.0.0/8", "scanner_network")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["17.58.100.0", "17.58.0.0", "40.93.0.0", "40.92.0.0", "52.100.0.0", "10.0.0.0",
                        "104.28.0.0", "148.163.128.0", "209.222.80.0", "0.0.0.0", "255.255.0.0"]),
       st.integers(min_value=-70_000, max_value=70_000))
def test_lookup_matches_the_most_specific_network(anchor, offset):
    machine.reset_networks()
    for cidr, why in NESTED:
        register_network(cidr, why)
    value = min(max(int(ipaddress.IPv4Address(anchor)) + offset, 0), 2**32 - 1)
    address = ipaddress.IPv4Address(value)
    network = _most_specific(address)
    verdict = classify(open_(MAC_MAIL, str(address)))
    if network is None:
        assert not verdict.machine
    else:
        assert (verdict.reason, verdict.label) == (network.reason, network.label)


def test_garbage_addresses_and_huge_agents_do_not_fail():
    assert not classify(click(CHROME, "unknown")).machine
    assert not classify(click(CHROME, "")).machine
    assert reason(click("curl/8.5.0 " + "x" * 50_000, "126.209.12.34")) == "scanner_agent"
