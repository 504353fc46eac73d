"""SPF/DKIM/DMARC checks (kizuna.messaging.dnscheck) against a tiny DNS server on 127.0.0.1.

Nothing here queries real DNS: every resolver is built with configure=False and points at the fake.
"""

import base64
import socket
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver
import dns.rrset
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kizuna.messaging.dnscheck import check_domain, public_record_for

DOMAIN = "example.com"
SELECTOR = "kz1"


class FakeDNS:
    """Answers TXT queries from `records` (name -> list of values). A name absent from the dict is
    NXDOMAIN; a name mapped to [] exists without TXT records. silent=True drops every query."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.silent = False
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.queries.append(name)
            if self.silent:
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT and self.records[name]:
                rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TXT)
                for value in self.records[name]:
                    raw = value.encode()
                    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
                    rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks), ttl=300)
                response.answer.append(rrset)
            self.sock.sendto(response.to_wire(max_size=65535), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def server():
    fake = FakeDNS()
    yield fake
    fake.close()


@pytest.fixture
def resolver(server):
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = server.port
    res.timeout = res.lifetime = 2.0
    return res


@pytest.fixture(scope="module")
def dkim_value():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    value = public_record_for(pem)
    assert value.startswith("v=DKIM1; k=rsa; p=MII")
    return value


def other_key_value(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def good_zone(dkim_value: str) -> dict[str, list[str]]:
    return {
        DOMAIN: ["google-site-verification=abc123", "v=spf1 ip4:192.0.2.0/24 include:_spf.google.com ~all"],
        "_spf.google.com": ["v=spf1 ip4:203.0.113.0/24 ~all"],
        f"{SELECTOR}._domainkey.{DOMAIN}": [dkim_value],
        f"_dmarc.{DOMAIN}": [f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"],
    }


def run(resolver, dkim_value=None, **kwargs):
    kwargs.setdefault("dkim_selector", SELECTOR)
    report = check_domain(DOMAIN, dkim_public_key=dkim_value, resolver=resolver, **kwargs)
    assert [check.name for check in report.checks] == ["SPF", "DKIM", "DMARC"]
    return report


def test_all_good(server, resolver, dkim_value):
    server.records = good_zone(dkim_value)
    report = run(resolver, dkim_value, sending_ips=["192.0.2.10"])
    assert [check.status for check in report.checks] == ["ok", "ok", "ok"], report
    assert report.ok
    spf = report["SPF"]
    assert spf.found == "v=spf1 ip4:192.0.2.0/24 include:_spf.google.com ~all"
    assert "Google Workspace" in spf.message
    assert "1 of 10" in spf.message  # the include; the record it points to has only ip4:
    assert report["DKIM"].found == dkim_value
    assert "matches" in report["DKIM"].message
    assert report["DMARC"].found.startswith("v=DMARC1; p=reject")
    assert all(not check.fix for check in report.checks)


def test_spf_missing(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[DOMAIN] = ["google-site-verification=abc123"]
    server.records = zone
    report = run(resolver, dkim_value, sending_ips=["192.0.2.10"])
    spf = report["SPF"]
    assert spf.status == "missing"
    assert "v=spf1 ip4:192.0.2.10 mx ~all" in spf.fix
    assert report["DKIM"].status == "ok"


def test_two_spf_records_are_a_permerror(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[DOMAIN] = ["v=spf1 include:_spf.google.com ~all", "v=spf1 include:sendgrid.net ~all"]
    server.records = zone
    spf = run(resolver, dkim_value)["SPF"]
    assert spf.status == "error"
    assert "permerror" in spf.message
    assert "Merge" in spf.fix


def test_plus_all(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[DOMAIN] = ["v=spf1 include:sendgrid.net +all"]
    server.records = zone
    spf = run(resolver, dkim_value)["SPF"]
    assert spf.status == "error"
    assert "+all" in spf.message
    assert "SendGrid" in spf.message
    assert "~all" in spf.fix


def test_per_customer_esp_include_is_recognised(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[DOMAIN] = ["v=spf1 include:u1234.wl.sendgrid.net include:spf.protection.outlook.com -all"]
    server.records = zone
    spf = run(resolver, dkim_value)["SPF"]
    assert spf.status == "ok"
    assert "SendGrid" in spf.message
    assert "Microsoft 365" in spf.message


def test_too_many_spf_lookups(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    includes = [f"_spf{i}.example.net" for i in range(6)]
    zone[DOMAIN] = ["v=spf1 a mx " + " ".join(f"include:{name}" for name in includes) + " ~all"]
    for name in includes:
        zone[name] = ["v=spf1 a ~all"]  # one more lookup each: 2 + 6 + 6 = 14
    server.records = zone
    spf = run(resolver, dkim_value)["SPF"]
    assert spf.status == "error"
    assert "14 DNS lookups" in spf.message


def test_sending_ip_not_listed(server, resolver, dkim_value):
    server.records = good_zone(dkim_value)
    spf = run(resolver, dkim_value, sending_ips=["198.51.100.7"])["SPF"]
    assert spf.status == "warning"
    assert "198.51.100.7" in spf.message
    assert "ip4:198.51.100.7" in spf.fix


def test_sending_ip_covered_through_an_include(server, resolver, dkim_value):
    server.records = good_zone(dkim_value)
    assert run(resolver, dkim_value, sending_ips=["203.0.113.5"])["SPF"].status == "ok"


def test_dkim_missing_tells_the_record_to_publish(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    del zone[f"{SELECTOR}._domainkey.{DOMAIN}"]
    server.records = zone
    dkim = run(resolver, dkim_value)["DKIM"]
    assert dkim.status == "missing"
    assert f"{SELECTOR}._domainkey.{DOMAIN}" in dkim.fix
    assert dkim_value in dkim.fix


def test_dkim_key_mismatch(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[f"{SELECTOR}._domainkey.{DOMAIN}"] = [other_key_value()]
    server.records = zone
    dkim = run(resolver, dkim_value)["DKIM"]
    assert dkim.status == "error"
    assert "does not match" in dkim.message
    assert dkim_value in dkim.fix


def test_dkim_bare_key_and_split_record_match(server, resolver, dkim_value):
    # Published with a space after the semicolon split differently; the key compared is p= only.
    zone = good_zone(dkim_value)
    zone[f"{SELECTOR}._domainkey.{DOMAIN}"] = [dkim_value.replace("v=DKIM1; k=rsa; ", "v=DKIM1;k=rsa;")]
    server.records = zone
    bare = dkim_value.split("p=", 1)[1]
    assert run(resolver, bare)["DKIM"].status == "ok"


def test_dkim_short_key_is_a_warning(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[f"{SELECTOR}._domainkey.{DOMAIN}"] = [other_key_value(1024)]
    server.records = zone
    dkim = run(resolver, None)["DKIM"]
    assert dkim.status == "warning"
    assert "1024" in dkim.message


def test_no_selector(server, resolver, dkim_value):
    server.records = good_zone(dkim_value)
    dkim = run(resolver, dkim_selector=None)["DKIM"]
    assert dkim.status == "warning"
    assert dkim.fix


def test_dmarc_p_none_is_a_warning(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    zone[f"_dmarc.{DOMAIN}"] = [f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}"]
    server.records = zone
    dmarc = run(resolver, dkim_value)["DMARC"]
    assert dmarc.status == "warning"
    assert "p=none" in dmarc.message
    assert "quarantine" in dmarc.fix


def test_dmarc_missing(server, resolver, dkim_value):
    zone = good_zone(dkim_value)
    del zone[f"_dmarc.{DOMAIN}"]
    server.records = zone
    dmarc = run(resolver, dkim_value)["DMARC"]
    assert dmarc.status == "missing"
    assert f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}" in dmarc.fix
    assert f"_dmarc.{DOMAIN}" in dmarc.fix
    assert "5,000" in dmarc.message


def test_dmarc_inherited_by_a_subdomain(server, resolver, dkim_value):
    server.records = {
        f"news.{DOMAIN}": ["v=spf1 include:amazonses.com -all"],
        f"_dmarc.{DOMAIN}": ["v=DMARC1; p=reject; sp=quarantine"],
    }
    report = check_domain(f"news.{DOMAIN}", dkim_selector=None, resolver=resolver)
    assert report["SPF"].status == "ok"
    assert "Amazon SES" in report["SPF"].message
    dmarc = report["DMARC"]
    assert dmarc.status == "ok"
    assert "p=quarantine" in dmarc.message
    assert f"_dmarc.{DOMAIN}" in dmarc.message


def test_nxdomain(server, resolver):
    server.records = {}
    report = check_domain("no-such-domain.example", dkim_selector=SELECTOR, resolver=resolver)
    assert [check.status for check in report.checks] == ["error", "error", "error"]
    assert "does not exist" in report.checks[0].message
    assert "NXDOMAIN" in report.checks[0].message


def test_invalid_domain(resolver):
    report = check_domain("not a domain", dkim_selector=SELECTOR, resolver=resolver)
    assert {check.status for check in report.checks} == {"error"}


def test_server_not_answering(server, resolver):
    server.silent = True
    started = time.monotonic()
    report = check_domain(DOMAIN, dkim_selector=SELECTOR, resolver=resolver)
    elapsed = time.monotonic() - started
    assert [check.status for check in report.checks] == ["error", "error", "error"]
    assert "did not answer within 2 seconds" in report.checks[0].message
    assert elapsed < 4  # one 2 s timeout, not one per record
    assert server.queries  # it was asked


def test_timeout_is_configurable(server, resolver):
    server.silent = True
    started = time.monotonic()
    report = check_domain(DOMAIN, dkim_selector=SELECTOR, resolver=resolver, timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert report.checks[0].status == "error"
