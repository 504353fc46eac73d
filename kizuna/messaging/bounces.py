"""Reading what comes back to the bounce address: DSNs, spam complaints (ARF), auto replies.

Plain functions on bytes, no models: the caller decides what to store and whom to suppress. An RFC 3464
delivery-status part is trusted first, as it is the only machine-readable verdict; flufl.bounce's
heuristics cover the many MTAs that send free text instead.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

HARD, SOFT, COMPLAINT, AUTO_REPLY, UNKNOWN = "hard", "soft", "complaint", "auto_reply", "unknown"
DIAGNOSTIC_MAX = 300

_STATUS_RE = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE_RE = re.compile(r"(?<![\d.-])([45][05]\d)(?: |:|-(?=\d\.)|-(?=[A-Za-z])|$)", re.M)
_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_DAEMON_RE = re.compile(r"mailer-daemon|postmaster|mail delivery|mail administrator|mailer_daemon", re.I)

# Free-text signs, in English and in the Japanese that carriers (docomo, au, SoftBank) and ISPs use.
_FULL_RE = re.compile(
    r"mailbox (?:is )?full|mailbox.{0,20}(?:over|exceed)|over ?quota|quota (?:exceeded|violation)|exceed.{0,20}quota"
    r"|insufficient (?:disk )?space"
    r"|容量(?:を)?(?:超過|オーバー|不足|が一杯|がいっぱい|制限)|メールボックスが(?:一杯|いっぱい|満杯)|満杯",
    re.I,
)
_HARD_TEXT_RE = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|doesn't exist"
    r"|mailbox (?:unavailable|not found)|invalid (?:recipient|mailbox|address)|recipient (?:address )?rejected"
    r"|address rejected|account (?:has been )?disabled|not a valid (?:user|recipient|address)"
    r"|宛先不明|宛先が(?:存在しません|見つかりません|不明)"
    r"|(?:アドレス|ユーザー?|アカウント)(?:は|が)(?:存在しません|見つかりません|不明|無効)|存在しないアドレス",
    re.I,
)
_SOFT_TEXT_RE = re.compile(
    r"temporar(?:y|ily)|try again later|will (?:retry|be retried|continue trying)|deferred|delayed"
    r"|一時的|再送(?:を試み|します)|遅延",
    re.I,
)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|returned mail|delivery (?:status notification|failure|failed|has failed)|failure notice"
    r"|mail delivery failed|配信(?:不能|エラー|失敗)|未達|送信できませんでした|エラーメール|不達",
    re.I,
)
_AUTO_SUBJECT_RE = re.compile(
    r"out of (?:the )?office|auto(?:matic)?[ -]?(?:reply|response|antwort)|autoreply|vacation|abwesen"
    r"|absence|réponse automatique|自動(?:応答|返信|返答|送信)|不在(?:通知|のお知らせ|連絡)?|休暇",
    re.I,
)

_STATUS_REASONS = {
    "5.1.1": "mailbox does not exist",
    "5.1.2": "domain does not exist",
    "5.1.3": "bad address syntax",
    "5.1.6": "mailbox has moved",
    "5.1.10": "domain accepts no mail (null MX)",
    "5.2.1": "mailbox disabled",
    "5.2.2": "mailbox full",
    "4.2.2": "mailbox full",
    "5.2.3": "message too large",
    "5.4.4": "domain cannot be routed",
    "5.7.1": "rejected by policy",
}
_CLASS_REASONS = {"4": "temporary failure", "5": "permanent failure"}
_SUBJECT_REASONS = {
    "1": "address problem",
    "2": "mailbox problem",
    "3": "mail system problem",
    "4": "network or routing problem",
    "5": "delivery protocol problem",
    "6": "message content problem",
    "7": "security or policy rejection",
}


@dataclass
class BounceReport:
    """What one incoming report means for the addresses we sent to."""

    kind: str = UNKNOWN  # hard | soft | complaint | auto_reply | unknown
    recipients: list[str] = field(default_factory=list)
    status: str = ""
    diagnostic: str = ""
    message_id: str = ""
    reason: str = ""

    @property
    def is_bounce(self) -> bool:
        """Only hard and soft bounces count against an address; auto replies and complaints do not."""
        return self.kind in (HARD, SOFT)


# --- parsing -----------------------------------------------------------------------------------------------------
def parse(raw: bytes) -> BounceReport:
    """Classify a message that arrived at the bounce or complaint address."""
    msg = email.message_from_bytes(raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw)
    original = _original_headers(msg)
    message_id = _original_message_id(original) if original is not None else ""
    report = _parse_arf(msg, original) or _parse_dsn(msg) or _parse_auto_reply(msg, strict=True)
    if report is None:
        report = _parse_flufl(msg) or _parse_auto_reply(msg, strict=False) or _parse_text(msg, original)
    if report is None:
        report = BounceReport(kind=UNKNOWN, reason="not recognised as a bounce, complaint or auto reply")
    if not report.message_id:
        report.message_id = message_id
    report.diagnostic = _short(report.diagnostic)
    report.recipients = _unique(report.recipients)
    return report


def _parse_arf(msg: Message, original: Message | None) -> BounceReport | None:
    """RFC 5965 feedback report: someone pressed "this is spam"."""
    feedback = _first_part(msg, "message/feedback-report")
    report_type = str(msg.get_param("report-type", "") or "").lower()
    is_arf = msg.get_content_type() == "multipart/report" and report_type == "feedback-report"
    if feedback is None and not is_arf:
        return None
    fields = _as_headers(feedback) if feedback is not None else Message()
    feedback_type = (fields.get("Feedback-Type") or "abuse").strip().lower()
    recipients = [addr for value in fields.get_all("Original-Rcpt-To", []) for addr in _addresses(value)]
    if not recipients and original is not None:
        recipients = [addr for _name, addr in getaddresses(original.get_all("To", [])) if "@" in addr]
    if feedback_type not in ("abuse", "fraud", "virus", "other"):
        # not-spam, auth-failure, dmarc reports... are about us, not a complaint by the recipient.
        return BounceReport(kind=UNKNOWN, recipients=_lower(recipients), reason=f"feedback report: {feedback_type}")
    return BounceReport(
        kind=COMPLAINT,
        recipients=_lower(recipients),
        diagnostic=" ".join(filter(None, [fields.get("User-Agent", ""), fields.get("Source-IP", "")])),
        reason=f"spam complaint ({feedback_type})",
    )


def _parse_dsn(msg: Message) -> BounceReport | None:
    """RFC 3464 message/delivery-status: per-recipient Action, Status and Diagnostic-Code."""
    found: dict[str, list[tuple[str, str, str]]] = {HARD: [], SOFT: []}
    for part in _parts(msg, "message/delivery-status"):
        for block in _blocks(part):
            action = (block.get("Action") or "").strip().lower()
            if action.startswith("delayed"):
                delayed = True
            elif action.startswith(("fail", "error")):
                delayed = False
            else:
                continue
            address = _dsn_address(block.get("Original-Recipient")) or _dsn_address(block.get("Final-Recipient"))
            if not address:
                continue
            diagnostic = _clean_diagnostic(block.get("Diagnostic-Code") or "")
            status = _status_from(block.get("Status") or "")
            detail = _status_from(diagnostic)
            if not status or (status.endswith(".0.0") and detail[:1] == status[:1]):
                status = detail or status  # "5.0.0" says less than the server's own "5.7.1"
            if delayed:
                kind = SOFT
            else:
                kind = _kind_for(status, diagnostic)
            found[kind].append((address.lower(), status, diagnostic))
    kind = HARD if found[HARD] else SOFT if found[SOFT] else None
    if kind is None:
        return None
    rows = found[kind]
    status, diagnostic = rows[0][1], rows[0][2]
    return BounceReport(kind=kind, recipients=[row[0] for row in rows], status=status, diagnostic=diagnostic,
                        reason=_reason(status, diagnostic, kind))


def _parse_auto_reply(msg: Message, *, strict: bool) -> BounceReport | None:
    """RFC 3834 auto replies and vacation notices: never a bounce, the address works.

    strict: only the plain signs from a person's address; a mailer daemon marking its own bounce
    "auto-replied" (several do) is left to the bounce detectors."""
    auto_submitted = (msg.get("Auto-Submitted") or "").strip().lower()
    precedence = (msg.get("Precedence") or "").strip().lower()
    subject = _decoded(msg.get("Subject") or "")
    signs = [
        auto_submitted.startswith("auto-replied"),
        precedence == "auto_reply",
        bool(msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Auto-Response-Suppress") == "All"),
        bool(_AUTO_SUBJECT_RE.search(subject)),
    ]
    if not any(signs):
        return None
    sender = _decoded(msg.get("From") or "")
    if _DAEMON_RE.search(sender) or _BOUNCE_SUBJECT_RE.search(subject):
        return None
    if strict and msg.get_content_type() == "multipart/report":
        return None
    address = parseaddr(sender)[1].lower()
    return BounceReport(
        kind=AUTO_REPLY,
        recipients=[address] if "@" in address else [],
        diagnostic=subject,
        message_id=_first_id(msg.get("In-Reply-To") or "") or _last_id(msg.get("References") or ""),
        reason="automatic reply (out of office or similar)",
    )


def _parse_flufl(msg: Message) -> BounceReport | None:
    """flufl.bounce's detectors for the non-standard formats, refined by what the text says."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a broken message must not stop the bounce mailbox from being drained
        return None
    if not temporary and not permanent:
        return None
    text = _body_text(msg)
    status = _status_from(text)
    diagnostic = _diagnostic_line(text)
    if permanent:
        # A temporary cause (4.x.x, full mailbox) is soft even when the MTA gave up after retrying.
        kind = SOFT if _is_mailbox_full(status, text) or status.startswith("4") else HARD
        addresses = permanent
    else:
        kind, addresses = SOFT, temporary
    recipients = [address.decode("ascii", "replace").lower() for address in sorted(addresses)]
    return BounceReport(kind=kind, recipients=recipients, status=status, diagnostic=diagnostic,
                        reason=_reason(status, diagnostic or text, kind))


def _parse_text(msg: Message, original: Message | None) -> BounceReport | None:
    """Last resort for a plain-text bounce (often Japanese) that no detector knows: a mailer daemon or a
    bounce subject, a recognisable cause, and an address to blame."""
    subject = _decoded(msg.get("Subject") or "")
    sender = _decoded(msg.get("From") or "")
    if not (_DAEMON_RE.search(sender) or _BOUNCE_SUBJECT_RE.search(subject)):
        return None
    text = _body_text(msg)
    status = _status_from(text)
    if _is_mailbox_full(status, text) or _SOFT_TEXT_RE.search(text) or status.startswith("4"):
        kind = SOFT
    elif _HARD_TEXT_RE.search(text) or status.startswith("5"):
        kind = HARD
    else:
        return None
    recipients: list[str] = []
    if original is not None:
        recipients = [addr for _name, addr in getaddresses(original.get_all("To", [])) if "@" in addr]
    if not recipients:
        ours = {parseaddr(msg.get(name) or "")[1].lower() for name in ("From", "To", "Return-Path")}
        recipients = [addr for addr in _ADDRESS_RE.findall(text) if addr.lower() not in ours][:1]
    if not recipients:
        return None
    diagnostic = _diagnostic_line(text)
    return BounceReport(kind=kind, recipients=_lower(recipients), status=status, diagnostic=diagnostic,
                        reason=_reason(status, diagnostic or text, kind))


# --- classification helpers -------------------------------------------------------------------------------------
def _kind_for(status: str, diagnostic: str) -> str:
    """A failed DSN recipient: 5.x.x is hard unless it is a full mailbox, 4.x.x is soft."""
    if _is_mailbox_full(status, diagnostic):
        return SOFT
    if status.startswith("4"):
        return SOFT
    if not status:
        code = _SMTP_CODE_RE.search(diagnostic)
        if code and code.group(1).startswith("4"):
            return SOFT
    return HARD


def _is_mailbox_full(status: str, text: str) -> bool:
    return status in ("5.2.2", "4.2.2") or bool(_FULL_RE.search(text))


def _reason(status: str, text: str, kind: str) -> str:
    if _is_mailbox_full(status, text):
        return "mailbox full"
    if status in _STATUS_REASONS:
        return _STATUS_REASONS[status]
    if kind == HARD and _HARD_TEXT_RE.search(text):
        return "mailbox does not exist"
    if status:
        klass, subject = status.split(".")[:2]
        return f"{_CLASS_REASONS.get(klass, 'failure')}: {_SUBJECT_REASONS.get(subject, 'other')}"
    return "temporary failure" if kind == SOFT else "permanent failure"


def _status_from(text: str) -> str:
    match = _STATUS_RE.search(text or "")
    return ".".join(match.groups()) if match else ""


def _diagnostic_line(text: str) -> str:
    """The line that says why: one with a status code, an SMTP reply code or a known cause."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (_STATUS_RE, _SMTP_CODE_RE, _FULL_RE, _HARD_TEXT_RE):
        for line in lines:
            if pattern.search(line):
                return line
    return ""


# --- MIME helpers -----------------------------------------------------------------------------------------------
def _parts(msg: Message, content_type: str) -> Iterator[Message]:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            yield part


def _first_part(msg: Message, content_type: str) -> Message | None:
    return next(_parts(msg, content_type), None)


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status (or similar) part, however it was parsed."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        return [HeaderParser().parsestr(chunk) for chunk in re.split(r"\r?\n\s*\r?\n", payload) if chunk.strip()]
    return []


def _as_headers(part: Message) -> Message:
    """The fields of a single-block report part (message/feedback-report) as one header set."""
    merged = Message()
    for block in _blocks(part):
        for name, value in block.items():
            merged[name] = value
    return merged


def _original_headers(msg: Message) -> Message | None:
    """Headers of the message we sent, when the report returns it (message/rfc822 or text/rfc822-headers)."""
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return HeaderParser().parsestr(payload)
        elif content_type == "text/rfc822-headers":
            raw = part.get_payload(decode=True) or b""
            return HeaderParser().parsestr(raw.decode("utf-8", "replace").lstrip())
    return None


def _original_message_id(original: Message) -> str:
    """Our own X-Kizuna-Message token when present (survives rewriting of Message-ID), else the Message-ID."""
    token = (original.get("X-Kizuna-Message") or "").strip()
    return token or (original.get("Message-ID") or "").strip()


def _body_text(msg: Message) -> str:
    """The human-readable text of the report itself, leaving out a returned copy of our message."""
    chunks: list[str] = []

    def visit(part: Message) -> None:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "text/rfc822-headers"):
            return
        if part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    visit(sub)
            return
        if part.get_content_maintype() != "text":
            return
        data = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            text = data.decode(charset, "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        if content_type == "text/html":
            text = re.sub(r"<[^>]+>", " ", text)
        chunks.append(text)

    visit(msg)
    return "\n".join(chunks)


def _dsn_address(value: str | None) -> str:
    """`rfc822; user@example.com` (or a bare `<user@example.com>`) to the address."""
    if not value:
        return ""
    kind, _sep, address = str(value).partition(";")
    if not _sep:
        address = kind
    elif kind.strip().lower() not in ("rfc822", ""):
        return ""
    address = parseaddr(address.strip())[1] or address.strip().strip("<>")
    return address if "@" in address else ""


def _addresses(value: str) -> list[str]:
    return [addr for _name, addr in getaddresses([value]) if "@" in addr]


def _clean_diagnostic(value: str) -> str:
    value = re.sub(r"\s+", " ", str(value)).strip()
    return re.sub(r"^(?:smtp|x-[\w-]+)\s*;\s*", "", value, flags=re.I)


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # malformed encoded words: the raw text is still better than nothing
        return str(value)


def _first_id(value: str) -> str:
    match = re.search(r"<[^>]+>", value)
    return match.group(0) if match else value.strip()


def _last_id(value: str) -> str:
    found = re.findall(r"<[^>]+>", value)
    return found[-1] if found else value.strip()


def _short(value: str) -> str:
    value = re.sub(r"\s+", " ", value or "").strip()
    return value if len(value) <= DIAGNOSTIC_MAX else value[: DIAGNOSTIC_MAX - 1] + "…"


def _lower(addresses: Sequence[str]) -> list[str]:
    return [address.strip().lower() for address in addresses if address.strip()]


def _unique(addresses: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(_lower(addresses)))


# --- policy --------------------------------------------------------------------------------------------------------
@dataclass
class BouncePolicy:
    """When an address stops being mailed: at once for a hard bounce or a complaint, after repeated soft
    bounces otherwise (a full mailbox or a busy server is not a reason to give up after one try)."""

    soft_window: int = 5
    soft_limit: int = 3

    def decide(self, history: Sequence[str], new: str) -> str:
        """history: outcomes of the earlier sends, oldest first ("delivered", "soft", "hard", ...);
        new: the outcome just received. Returns "unreachable", "unsubscribe" or "none"."""
        if new == HARD:
            return "unreachable"
        if new == COMPLAINT:
            return "unsubscribe"
        if new == SOFT:
            recent = [*history, new][-self.soft_window :]
            if sum(1 for outcome in recent if outcome == SOFT) >= self.soft_limit:
                return "unreachable"
        return "none"


DEFAULT_POLICY = BouncePolicy()


def decide(history: Sequence[str], new: str, policy: BouncePolicy | None = None) -> str:
    """What to do with an address after `new` came back; see BouncePolicy.decide."""
    return (policy or DEFAULT_POLICY).decide(history, new)
