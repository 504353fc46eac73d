"""SPF, DKIM and DMARC checks for a sending domain, with the exact record to publish when one is wrong.

Mailbox providers (Gmail and Yahoo first) reject or spam-folder bulk mail without these, and a marketer
usually cannot tell why; the report says what was found, what it means, and what to change. Lookups
never raise: a timeout or a missing domain becomes an "error" check with a plain explanation.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from django.utils.translation import gettext as _

TIMEOUT = 2.0
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: more DNS-querying terms than this is a permerror
OK, WARNING, MISSING, ERROR = "ok", "warning", "missing", "error"

# include: domains of well-known mail services, so the report can say who is allowed to send.
KNOWN_SPF_INCLUDES = {
    "_spf.google.com": "Google Workspace",
    "spf.protection.outlook.com": "Microsoft 365",
    "amazonses.com": "Amazon SES",
    "sendgrid.net": "SendGrid",
    "mailgun.org": "Mailgun",
    "spf.mailgun.org": "Mailgun",
    "servers.mcsv.net": "Mailchimp",
    "spf.mandrillapp.com": "Mailchimp Transactional (Mandrill)",
    "spf.mtasv.net": "Postmark",
    "sparkpostmail.com": "SparkPost",
    "_spf.sparkpostmail.com": "SparkPost",
    "spf.sendinblue.com": "Brevo (Sendinblue)",
    "spf.brevo.com": "Brevo",
    "_spf.salesforce.com": "Salesforce",
    "mail.zendesk.com": "Zendesk",
    "_spf.mlsend.com": "MailerLite",
    "spf.messagingengine.com": "Fastmail",
    "zoho.com": "Zoho Mail",
    "zohomail.com": "Zoho Mail",
    "_spf.elasticemail.com": "Elastic Email",
    "spf.smtp2go.com": "SMTP2GO",
    "mktomail.com": "Marketo",
    "_spf.psm.knowbe4.com": "KnowBe4",
}
_LOOKUP_TERMS = {"include", "a", "mx", "ptr", "exists", "redirect"}
_MAX_FETCHES = 20  # includes read while counting lookups: enough to see a limit broken, bounded for the page


@dataclass
class Check:
    """One verdict: what was found in DNS, what it means, and what to publish instead."""

    name: str  # SPF | DKIM | DMARC
    status: str  # ok | warning | missing | error
    found: str = ""
    message: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class DomainReport:
    domain: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check is ok; a warning still deserves a look, so it is not ok."""
        return all(check.ok for check in self.checks)

    def get(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def __getitem__(self, name: str) -> Check:
        check = self.get(name)
        if check is None:
            raise KeyError(name)
        return check


# --- DNS access -------------------------------------------------------------------------------------------------
@dataclass
class _Answer:
    records: list[str] = field(default_factory=list)
    problem: str = ""  # "" | nxdomain | timeout | error
    detail: str = ""


class _Lookups:
    """TXT lookups with one time budget per query and a cache; after one timeout the server is taken as
    unreachable, so a page showing the report waits for it once, not once per record."""

    def __init__(self, resolver: dns.resolver.Resolver, timeout: float) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.cache: dict[str, _Answer] = {}
        self.unreachable = False

    def txt(self, name: str) -> _Answer:
        key = name.lower().rstrip(".")
        if key not in self.cache:
            self.cache[key] = self._query(key)
        return self.cache[key]

    def _query(self, name: str) -> _Answer:
        if self.unreachable:
            return _Answer(problem="timeout")
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(name), dns.rdatatype.TXT, raise_on_no_answer=False, lifetime=self.timeout,
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            return _Answer(problem="nxdomain")
        except (dns.resolver.LifetimeTimeout, dns.exception.Timeout):
            self.unreachable = True
            return _Answer(problem="timeout")
        except dns.resolver.NoNameservers as exc:
            return _Answer(problem="error", detail=_short_error(exc))
        except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
            return _Answer(problem="error", detail=_short_error(exc))
        records = []
        if answer.rrset is not None:
            for rdata in answer.rrset:
                strings = getattr(rdata, "strings", ())
                records.append(b"".join(strings).decode("utf-8", "replace"))
        return _Answer(records=records)


def _short_error(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _problem_check(name: str, record: str, answer: _Answer, timeout: float) -> Check:
    """An error check for a lookup that could not be answered (not for a record that simply is absent)."""
    if answer.problem == "timeout":
        message = _(
            "The DNS server did not answer within %(seconds)s seconds while looking up %(record)s. "
            "The check could not be completed; try again in a moment."
        ) % {"seconds": f"{timeout:g}", "record": record}
        fix = _("If this keeps happening, check the domain's DNS hosting: its name servers may be down.")
    else:
        message = _("The DNS lookup of %(record)s failed: %(detail)s") % {
            "record": record, "detail": answer.detail or _("unknown error")}
        fix = _("Check that the domain's name servers are reachable and answer correctly, then try again.")
    return Check(name=name, status=ERROR, message=message, fix=fix)


# --- the check ----------------------------------------------------------------------------------------------------
def check_domain(
    domain: str,
    *,
    dkim_selector: str | None,
    dkim_public_key: str | None = None,
    sending_ips: Sequence[str] = (),
    resolver: dns.resolver.Resolver | None = None,
    timeout: float = TIMEOUT,
) -> DomainReport:
    """Check SPF, DKIM and DMARC of `domain`. dkim_public_key is the TXT value (or just its p=) that
    belongs to our private key; sending_ips are the addresses our own SMTP relay sends from."""
    domain = (domain or "").strip().rstrip(".").lower()
    report = DomainReport(domain=domain)
    names = ("SPF", "DKIM", "DMARC")
    try:
        dns.name.from_text(domain)
        if not domain or "." not in domain:
            raise ValueError(domain)
    except (ValueError, dns.exception.DNSException):
        for name in names:
            report.checks.append(Check(name=name, status=ERROR, found=domain,
                                       message=_("“%(domain)s” is not a valid domain name.") % {"domain": domain},
                                       fix=_("Enter the domain of the sender's from address, such as example.com.")))
        return report
    if resolver is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf or an unreadable one
            for name in names:
                report.checks.append(Check(name=name, status=ERROR,
                                           message=_("No DNS resolver is configured on this server: %(error)s")
                                           % {"error": _short_error(exc)},
                                           fix=_("Configure a DNS resolver for the Kizuna server.")))
            return report
        resolver.timeout = resolver.lifetime = timeout
    lookups = _Lookups(resolver, timeout)
    apex = lookups.txt(domain)
    if apex.problem == "nxdomain":
        for name in names:
            report.checks.append(Check(
                name=name, status=ERROR,
                message=_("The domain %(domain)s does not exist in DNS (NXDOMAIN), so no mail from it can pass "
                          "SPF, DKIM or DMARC.") % {"domain": domain},
                fix=_("Check the spelling of the domain, or register it and set up its DNS before sending."),
            ))
        return report
    for name, run in (
        ("SPF", lambda: _check_spf(domain, apex, lookups, sending_ips)),
        ("DKIM", lambda: _check_dkim(domain, dkim_selector, dkim_public_key, lookups)),
        ("DMARC", lambda: _check_dmarc(domain, lookups)),
    ):
        try:
            report.checks.append(run())
        except Exception as exc:  # a checker bug must not break the page showing the report
            report.checks.append(Check(name=name, status=ERROR, message=_("The check failed: %(error)s") % {
                "error": _short_error(exc)}))
    return report


# --- SPF --------------------------------------------------------------------------------------------------------------
def _spf_records(records: list[str]) -> list[str]:
    return [r.strip() for r in records if r.strip().lower() == "v=spf1" or r.strip().lower().startswith("v=spf1 ")]


def _suggested_spf(sending_ips: Sequence[str]) -> str:
    terms = []
    for ip in sending_ips:
        try:
            version = ipaddress.ip_address(ip.split("/")[0]).version
        except ValueError:
            continue
        terms.append(f"ip{version}:{ip}")
    return " ".join(["v=spf1", *terms, "mx", "~all"]) if terms else "v=spf1 mx ~all"


def _check_spf(domain: str, apex: _Answer, lookups: _Lookups, sending_ips: Sequence[str]) -> Check:
    if apex.problem:
        return _problem_check("SPF", domain, apex, lookups.timeout)
    records = _spf_records(apex.records)
    if not records:
        value = _suggested_spf(sending_ips)
        return Check(
            name="SPF", status=MISSING,
            message=_("No SPF record was found on %(domain)s, so receivers cannot tell which servers may send "
                      "its mail.") % {"domain": domain},
            fix=_('Publish a TXT record on %(domain)s with the value "%(value)s", adding an include: for each '
                  "mail service that sends for you (your ESP documents its own).") % {"domain": domain, "value": value},
        )
    if len(records) > 1:
        return Check(
            name="SPF", status=ERROR, found=" | ".join(records),
            message=_("%(domain)s has %(count)d SPF records. SPF allows only one: receivers treat this as a "
                      "permanent error (permerror) and SPF fails for all mail.") % {"domain": domain,
                                                                                    "count": len(records)},
            fix=_("Merge them into one TXT record that starts with v=spf1, listing every include: and ip4:/ip6: "
                  "once, with a single all at the end, and delete the others."),
        )
    record = records[0]
    terms = record.split()[1:]
    problems: list[str] = []
    fixes: list[str] = []
    status = OK
    all_terms = [t for t in terms if t.lower().lstrip("+-~?") == "all"]
    has_redirect = any(t.lower().startswith("redirect=") for t in terms)
    if any(t.lower() in ("+all", "all") for t in all_terms):
        status = ERROR
        problems.append(_("It ends with +all, which lets any server in the world send mail as %(domain)s.")
                        % {"domain": domain})
        fixes.append(_("Replace +all with ~all (soft fail) or -all (fail)."))
    elif any(t.lower() == "?all" for t in all_terms):
        status = WARNING
        problems.append(_("It ends with ?all (neutral), which gives receivers no protection against forged mail."))
        fixes.append(_("Use ~all or -all once every service that sends for you is listed."))
    elif not all_terms and not has_redirect:
        status = WARNING
        problems.append(_("It has no all mechanism at the end, so mail from unlisted servers is treated as "
                          "neutral."))
        fixes.append(_("End the record with ~all or -all."))
    if any(t.lower().lstrip("+-~?").startswith("ptr") for t in terms):
        status = WARNING if status == OK else status
        problems.append(_("It uses the ptr mechanism, which RFC 7208 says not to use; many receivers ignore it."))
        fixes.append(_("Replace ptr with ip4:/ip6: ranges or an include:."))
    count, networks, services, unresolved = _spf_walk(record, lookups, set(), 0)
    if count > SPF_LOOKUP_LIMIT:
        status = ERROR
        problems.append(_("Checking it takes %(count)d DNS lookups (include, a, mx, ptr, exists, redirect, counted "
                          "through the includes); SPF allows at most 10, so receivers return permerror and SPF "
                          "fails.") % {"count": count})
        fixes.append(_("Remove includes of services you no longer use, or replace a and mx with ip4:/ip6: "
                       "ranges, to get to 10 lookups or fewer."))
    missing_ips = [ip for ip in sending_ips if not _ip_covered(ip, networks)]
    if missing_ips:
        status = WARNING if status == OK else status
        problems.append(_("Not found among its ip4:/ip6: ranges: %(ips)s.") % {"ips": ", ".join(missing_ips)}
                        + (" " + _("They may still be covered by a, mx or an include that could not be read.")
                           if unresolved else ""))
        fixes.append(_("Add %(terms)s before the all at the end.") % {
            "terms": " ".join(_suggested_spf(missing_ips).split()[1:-2])})
    summary = _("SPF record found (%(count)d of 10 DNS lookups).") % {"count": count}
    if services:
        summary += " " + _("Authorised services: %(services)s.") % {"services": ", ".join(sorted(set(services)))}
    message = " ".join([summary, *problems])
    return Check(name="SPF", status=status, found=record, message=message, fix=" ".join(fixes))


def _spf_walk(record: str, lookups: _Lookups, seen: set[str], depth: int) -> tuple[int, list, list[str], bool]:
    """DNS-querying terms counted through include: and redirect=, the ip4/ip6 networks found on the way,
    well-known services named, and whether some part could not be read (a, mx, or a failed include)."""
    count = 0
    networks: list = []
    services: list[str] = []
    unresolved = False
    for term in record.split()[1:]:
        lowered = term.lower()
        bare = lowered.lstrip("+-~?")
        mechanism, _sep, value = bare.partition(":") if ":" in bare else bare.partition("=")
        mechanism = mechanism.split("/")[0]
        if mechanism in ("ip4", "ip6"):
            try:
                networks.append(ipaddress.ip_network(term.lstrip("+-~?").split(":", 1)[1], strict=False))
            except ValueError:
                pass
            continue
        if mechanism not in _LOOKUP_TERMS:
            continue
        count += 1
        if mechanism in ("a", "mx", "exists", "ptr"):
            unresolved = True
            continue
        target = value.strip().rstrip(".")
        service = _service_for(target)
        if service:
            services.append(service)
        if not target or target in seen or depth >= SPF_LOOKUP_LIMIT or len(seen) >= _MAX_FETCHES or "%{" in target:
            unresolved = unresolved or "%{" in target
            continue
        seen.add(target)
        nested = _spf_records(lookups.txt(target).records)
        if len(nested) != 1:
            unresolved = True
            continue
        sub_count, sub_networks, sub_services, sub_unresolved = _spf_walk(nested[0], lookups, seen, depth + 1)
        count += sub_count
        networks += sub_networks
        services += sub_services
        unresolved = unresolved or sub_unresolved
    return count, networks, services, unresolved


def _service_for(target: str) -> str:
    """The mail service behind an include: (also per-customer ones such as u123.wl.sendgrid.net)."""
    for known, service in KNOWN_SPF_INCLUDES.items():
        if target == known or target.endswith("." + known.lstrip("_")):
            return service
    return ""


def _ip_covered(ip: str, networks: list) -> bool:
    try:
        wanted = ipaddress.ip_network(ip, strict=False)
    except ValueError:
        return False
    return any(wanted.version == net.version and wanted.subnet_of(net) for net in networks)


# --- DKIM -------------------------------------------------------------------------------------------------------------
def _tags(record: str) -> dict[str, str]:
    """`v=DKIM1; k=rsa; p=MIIB...` to a dict; whitespace inside values (folded keys) removed."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _key_of(value: str) -> str:
    """The base64 key from a full TXT value or from the bare p= text."""
    value = value.strip()
    if "p=" in value:
        return _tags(value).get("p", "")
    return "".join(value.split())


def _record_value(public_key: str) -> str:
    key = _key_of(public_key)
    return public_key.strip() if "p=" in public_key else f"v=DKIM1; k=rsa; p={key}"


def _rsa_bits(key_b64: str) -> int | None:
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        key = load_der_public_key(base64.b64decode(key_b64))
    except Exception:  # not RSA DER (ed25519, or garbage): the size check simply does not apply
        return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def _check_dkim(domain: str, selector: str | None, public_key: str | None, lookups: _Lookups) -> Check:
    if not selector:
        return Check(
            name="DKIM", status=WARNING,
            message=_("No DKIM selector is set for this sender, so the DKIM key could not be checked. A mail "
                      "service (ESP) usually signs with its own selector."),
            fix=_("Generate a DKIM key in the sender settings, or publish the DKIM records your mail service "
                  "gives you and enter its selector here."),
        )
    record_name = f"{selector}._domainkey.{domain}"
    answer = lookups.txt(record_name)
    if answer.problem and answer.problem != "nxdomain":
        return _problem_check("DKIM", record_name, answer, lookups.timeout)
    records = [r for r in answer.records if "p=" in r or r.lower().lstrip().startswith("v=dkim1")]
    publish = ""
    if public_key:
        value = _record_value(public_key)
        publish = _('Publish a TXT record named %(name)s with the value "%(value)s". If your DNS host limits a '
                    "value to 255 characters, split it into several quoted strings; they are joined.") % {
            "name": record_name, "value": value}
    if not records:
        return Check(
            name="DKIM", status=MISSING,
            message=_("No DKIM key was found at %(name)s, so mail signed with selector “%(selector)s” fails "
                      "DKIM.") % {"name": record_name, "selector": selector},
            fix=publish or _("Publish the TXT (or CNAME) record for %(name)s that your mail service gives you.")
            % {"name": record_name},
        )
    if len(records) > 1:
        return Check(name="DKIM", status=ERROR, found=" | ".join(records),
                     message=_("%(name)s has %(count)d DKIM records; receivers may pick either and fail.")
                     % {"name": record_name, "count": len(records)},
                     fix=publish or _("Keep only one TXT record at %(name)s.") % {"name": record_name})
    record = records[0]
    published = _tags(record).get("p", "")
    if not published:
        return Check(name="DKIM", status=ERROR, found=record,
                     message=_("The DKIM key at %(name)s is empty (p=), which means it was revoked.")
                     % {"name": record_name},
                     fix=publish or _("Publish the current public key at %(name)s.") % {"name": record_name})
    if public_key and published != _key_of(public_key):
        return Check(name="DKIM", status=ERROR, found=record,
                     message=_("The key published at %(name)s does not match this sender's DKIM key, so mail "
                               "Kizuna signs will fail DKIM.") % {"name": record_name},
                     fix=publish)
    bits = _rsa_bits(published)
    if bits is not None and bits < 1024:
        return Check(name="DKIM", status=ERROR, found=record,
                     message=_("The DKIM key is only %(bits)d bits; receivers ignore keys this short.")
                     % {"bits": bits},
                     fix=_("Generate a new 2048-bit key and publish it."))
    if bits is not None and bits < 2048:
        return Check(name="DKIM", status=WARNING, found=record,
                     message=_("The DKIM key is %(bits)d bits; 2048 is recommended.") % {"bits": bits},
                     fix=_("Generate a new 2048-bit key and publish it under a new selector."))
    if public_key:
        message = _("The DKIM key at %(name)s matches this sender's key.") % {"name": record_name}
    else:
        message = _("A DKIM key is published at %(name)s.") % {"name": record_name}
    return Check(name="DKIM", status=OK, found=record, message=message)


def public_record_for(private_key_pem: str) -> str:
    """The DKIM TXT value ("v=DKIM1; k=rsa; p=...") for a PEM private key, or "" if it cannot be read."""
    try:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # a broken key shows as "no key" on the page rather than an error
        return ""
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


# --- DMARC ------------------------------------------------------------------------------------------------------------
def _dmarc_records(records: list[str]) -> list[str]:
    return [r.strip() for r in records if r.strip().lower().startswith("v=dmarc1")]


def _check_dmarc(domain: str, lookups: _Lookups) -> Check:
    name = f"_dmarc.{domain}"
    answer = lookups.txt(name)
    if answer.problem and answer.problem != "nxdomain":
        return _problem_check("DMARC", name, answer, lookups.timeout)
    records = _dmarc_records(answer.records)
    inherited_from = ""
    if not records:
        # A subdomain without its own record falls under its organisational domain's policy (sp=).
        labels = domain.split(".")
        for cut in range(1, min(len(labels) - 1, 3)):
            parent = ".".join(labels[cut:])
            parent_answer = lookups.txt(f"_dmarc.{parent}")
            if _dmarc_records(parent_answer.records):
                records, inherited_from = _dmarc_records(parent_answer.records), parent
                break
    recommended = f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"
    if not records:
        return Check(
            name="DMARC", status=MISSING,
            message=_("No DMARC record was found at %(name)s. Gmail and Yahoo require DMARC from bulk senders "
                      "(5,000 or more messages a day to their users), and other receivers trust mail with it "
                      "more.") % {"name": name},
            fix=_('Publish a TXT record named %(name)s with the value "%(value)s" to start monitoring; move to '
                  "p=quarantine, then p=reject, once the reports show all your mail passing.")
            % {"name": name, "value": recommended},
        )
    if len(records) > 1:
        return Check(name="DMARC", status=ERROR, found=" | ".join(records),
                     message=_("%(name)s has %(count)d DMARC records; receivers then ignore DMARC altogether.")
                     % {"name": name, "count": len(records)},
                     fix=_("Keep only one TXT record starting with v=DMARC1 at %(name)s.") % {"name": name})
    record = records[0]
    tags = _tags(record)
    policy = (tags.get("sp") or tags.get("p", "")) if inherited_from else tags.get("p", "")
    policy = policy.lower()
    where = (" " + _("(inherited from _dmarc.%(parent)s)") % {"parent": inherited_from}) if inherited_from else ""
    if policy not in ("none", "quarantine", "reject"):
        return Check(name="DMARC", status=ERROR, found=record,
                     message=_("The DMARC record%(where)s has no valid policy (p= must be none, quarantine or "
                               "reject), so receivers ignore it.") % {"where": where},
                     fix=_('Publish "%(value)s" at %(name)s.') % {"value": recommended, "name": name})
    notes = []
    if "rua" not in tags:
        notes.append(_("It has no rua= address, so you receive no aggregate reports showing which mail passes."))
    pct = tags.get("pct", "100")
    if pct != "100" and policy != "none":
        notes.append(_("pct=%(pct)s applies the policy to only part of the failing mail.") % {"pct": pct})
    if policy == "none":
        message = _("DMARC policy is p=none%(where)s: receivers only report, forged mail is still delivered. "
                    "This meets the Gmail and Yahoo bulk-sender requirement.") % {"where": where}
        return Check(name="DMARC", status=WARNING, found=record, message=" ".join([message, *notes]),
                     fix=_("Once the aggregate reports show all your own mail passing SPF or DKIM in alignment, "
                           "change p=none to p=quarantine, then to p=reject."))
    message = _("DMARC policy is p=%(policy)s%(where)s.") % {"policy": policy, "where": where}
    return Check(name="DMARC", status=OK, found=record, message=" ".join([message, *notes]),
                 fix=_("Add rua=mailto:dmarc@%(domain)s to receive reports.") % {"domain": domain}
                 if "rua" not in tags else "")
