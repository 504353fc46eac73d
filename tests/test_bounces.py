"""Bounce, complaint and auto-reply classification (kizuna.messaging.bounces).

The samples in tests/data/bounces/ are flufl.bounce's own test data (see README.txt there). Expected
recipients follow flufl's test expectations; the kind follows the sample's content: where flufl calls a
failure permanent but the text says the cause is temporary (4.x.x, a full mailbox), it is "soft" here,
because Kizuna must not drop a working address over one full mailbox.
"""

from email import message_from_bytes
from pathlib import Path

import pytest

from kizuna.messaging.bounces import BouncePolicy, BounceReport, decide, parse

DATA = Path(__file__).parent / "data" / "bounces"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


# (file, kind, recipients, status or None when not checked)
FLUFL_SAMPLES = [
    # RFC 3464 DSNs: Action/Status decide.
    ("dsn_01.txt", "hard", ["userx@example.com"], "5.0.0"),
    ("dsn_02.txt", "soft", ["zzzzz@example.uk"], "4.4.7"),  # Action: failed, but 4.4.7 (queue expired)
    ("dsn_03.txt", "hard", ["userx@example.be"], None),  # "Action: failure", non-standard Status
    ("dsn_04.txt", "hard", ["userx@example.ch"], "5.0.0"),
    ("dsn_05.txt", "soft", ["userx@example.cz"], "4.4.1"),  # Action: delayed
    ("dsn_06.txt", "soft", ["userx@example.com"], "4.4.0"),
    ("dsn_07.txt", "soft", ["userx@example.nz"], "4.4.1"),
    ("dsn_08.txt", "soft", ["userx@example.de"], "4.0.0"),
    ("dsn_09.txt", "hard", ["userx@example.com"], "5.0.0"),
    ("dsn_10.txt", "hard", ["anne.person@dom.ain"], "5.0.0"),
    ("dsn_11.txt", "hard", ["joem@example.com"], "5.1.1"),
    ("dsn_12.txt", "hard", ["userx@example.jp"], "5.1.1"),
    ("dsn_13.txt", "hard", ["userx@example.com"], "5.1.1"),
    ("dsn_14.txt", "hard", ["userx@example.com.dk"], "5.1.1"),
    ("dsn_15.txt", "hard", ["userx@example.com"], "5.1.1"),
    ("dsn_16.txt", "hard", ["userx@example.com"], "5.0.0"),
    ("dsn_17.txt", "soft", ["userx@example.fi"], "4.3.0"),  # delayed, quota exceeded; Original-Recipient wins
    ("dsn_18.txt", "hard", ["email@replaced.net"], "5.0.0"),
    # MTA-specific formats, through flufl.bounce's detectors.
    ("postfix_01.txt", "hard", ["xxxxx@local.ie"], "5.1.1"),
    ("postfix_02.txt", "hard", ["yyyyy@digicool.com"], None),
    ("exim_01.txt", "hard", ["userx@its.example.nl"], "5.1.1"),
    ("qmail_03.txt", "hard", ["userx@example.jp"], "5.1.1"),
    ("qmail_06.txt", "soft", ["ntl@xxx.com"], None),  # "User's Disk Quota Exceeded"
    ("smtp32_04.txt", "hard", ["after_another@example.net", "one_bad_address@example.net"], "5.3.0"),
    ("netscape_01.txt", "hard", ["aaaaa@corel.com", "bbbbb@corel.com"], None),
    ("sina_01.txt", "hard", ["userx@sina.com", "usery@sina.com"], None),
    ("llnl_01.txt", "hard", ["user1@example.gov"], None),
    ("aol_01.txt", "hard", ["screenname@aol.com"], None),
    ("microsoft_01.txt", "hard", ["userx@example.com"], None),  # flufl: userx@example.COM, lower-cased
    ("groupwise_01.txt", "hard", ["userx@example.edu"], None),
    ("yahoo_01.txt", "soft", ["userx@example.com"], "4.4.1"),  # gave up, but could not connect (#4.4.1)
    ("yahoo_02.txt", "soft", ["userx@example.es"], None),  # "This account is over quota"
    ("yahoo_03.txt", "hard", ["userx@example.com"], None),  # "This account has been disabled"
    ("yahoo_11.txt", "hard", ["bad_user@aol.com"], "5.1.1"),
    # Free-text bounces (flufl's SimpleMatch / SimpleWarning).
    ("simple_01.txt", "soft", ["bbbsss@example.com"], None),  # "552 ... would exceed mailbox quota"
    ("simple_03.txt", "soft", ["userx@example.za"], None),  # a delay warning
    ("simple_07.txt", "soft", ["userx@example.net"], None),  # "User's mailbox is full"
    ("simple_08.txt", "hard", ["userx@example.de"], None),  # "550 user unknown"
    ("simple_09.txt", "soft", ["userx@example.de"], None),  # "quota exceeded"
    ("simple_21.txt", "soft", ["userx@example.com"], None),  # a delay warning
    ("simple_38.txt", "soft", ["userx@example.com"], None),  # "Quota exceeded", marked auto-replied
    ("simple_44.txt", "soft", ["user@example.com"], "4.4.4"),  # "Temporary server error" after 30 tries
    ("simple_45.txt", "soft", ["subscriber@earthlink.net"], None),  # "User account is overquota"
]


@pytest.mark.parametrize(("filename", "kind", "recipients", "status"), FLUFL_SAMPLES,
                         ids=[row[0] for row in FLUFL_SAMPLES])
def test_flufl_samples(filename, kind, recipients, status):
    report = parse(load(filename))
    assert report.kind == kind, report
    assert sorted(report.recipients) == sorted(recipients)
    if status is not None:
        assert report.status == status
    assert report.reason
    assert len(report.diagnostic) <= 300


def test_table_is_big_enough():
    assert len(FLUFL_SAMPLES) >= 25
    assert {path.name for path in DATA.glob("*_[0-9][0-9].txt")} == {row[0] for row in FLUFL_SAMPLES} | {
        "qmail_08.txt", "dumbass_01.txt", "groupwise_03.txt"}


@pytest.mark.parametrize("filename", ["dumbass_01.txt", "groupwise_03.txt"])
def test_not_a_recognisable_bounce(filename):
    # flufl finds no address in either; nothing may be blamed.
    report = parse(load(filename))
    assert report.kind == "unknown"
    assert report.recipients == []
    assert not report.is_bounce


def test_qmail_auto_reply_is_not_a_bounce():
    # flufl's qmail_08 is an "Auto reply" (Precedence: auto_reply) that must not count as a bounce.
    report = parse(load("qmail_08.txt"))
    assert report.kind == "auto_reply"
    assert report.recipients == ["contact@example.com"]
    assert not report.is_bounce


def test_dsn_gives_original_message_id():
    report = parse(load("dsn_11.txt"))
    original = message_from_bytes(load("dsn_11.txt"))
    assert report.message_id
    assert report.message_id in original.as_string()
    assert report.reason == "mailbox does not exist"


def test_bare_dsn_status_uses_the_more_specific_diagnostic():
    raw = load("dsn_14.txt")
    assert b"5.1.1" in raw
    assert parse(raw).status == "5.1.1"


# --- synthetic samples ------------------------------------------------------------------------------------------
def test_arf_complaint():
    report = parse(load("kizuna_arf_complaint.eml"))
    assert report == BounceReport(kind="complaint", recipients=["hanako.yamada@example.net"], status="",
                                  diagnostic=report.diagnostic, message_id="k7Qm2xw9",
                                  reason="spam complaint (abuse)")
    assert not report.is_bounce


def test_arf_without_original_rcpt_to_uses_original_to():
    raw = load("kizuna_arf_complaint.eml").replace(b"Original-Rcpt-To: <Hanako.Yamada@example.net>\n", b"")
    assert b"Original-Rcpt-To" not in raw
    report = parse(raw)
    assert report.kind == "complaint"
    assert report.recipients == ["hanako.yamada@example.net"]


def test_arf_other_feedback_type_is_not_a_complaint():
    raw = load("kizuna_arf_complaint.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse(raw).kind == "unknown"


def test_japanese_out_of_office():
    report = parse(load("kizuna_jp_out_of_office.eml"))
    assert report.kind == "auto_reply"
    assert report.recipients == ["taro.suzuki@example.co.jp"]
    assert report.message_id == "<Ht5w2Yk7@mail.kizuna.example>"
    assert "自動応答" in report.diagnostic
    assert not report.is_bounce


def test_japanese_out_of_office_recognised_by_subject_alone():
    raw = load("kizuna_jp_out_of_office.eml")
    raw = raw.replace(b"Auto-Submitted: auto-replied\n", b"").replace(b"X-Auto-Response-Suppress: All\n", b"")
    assert b"Auto-Submitted" not in raw
    assert parse(raw).kind == "auto_reply"


def test_english_out_of_office():
    raw = (b"From: Jane Roe <jane@example.org>\nTo: news@kizuna.example\nSubject: Automatic reply: Spring sale\n"
           b"In-Reply-To: <abc@mail.kizuna.example>\n\nI am out of the office until Monday.\n")
    report = parse(raw)
    assert report.kind == "auto_reply"
    assert report.recipients == ["jane@example.org"]


def test_dsn_mailbox_full_is_soft():
    report = parse(load("kizuna_dsn_mailbox_full.eml"))
    assert report.kind == "soft"
    assert report.recipients == ["ichiro.tanaka@example.ne.jp"]  # Original-Recipient, lower-cased
    assert report.status == "5.2.2"
    assert report.message_id == "Zp4r8Lq1"  # X-Kizuna-Message of the text/rfc822-headers part
    assert report.reason == "mailbox full"
    assert "Mailbox full" in report.diagnostic
    assert report.is_bounce


def test_dsn_4_2_2_is_soft_and_5_1_1_is_hard():
    raw = load("kizuna_dsn_mailbox_full.eml")
    assert parse(raw.replace(b"5.2.2", b"4.2.2")).kind == "soft"
    hard = raw.replace(b"552 5.2.2", b"550 5.1.1").replace(b"Status: 5.2.2", b"Status: 5.1.1")
    hard = hard.replace(b"Mailbox full", b"User unknown")
    report = parse(hard)
    assert (report.kind, report.status, report.reason) == ("hard", "5.1.1", "mailbox does not exist")


def test_dsn_without_original_headers_has_no_message_id():
    raw = load("kizuna_dsn_mailbox_full.eml")
    raw = raw.replace(b"X-Kizuna-Message: Zp4r8Lq1\n", b"")
    assert parse(raw).message_id == "<Zp4r8Lq1@mail.kizuna.example>"


def _japanese_bounce(text: str, subject: str = "Returned mail: see transcript for details") -> bytes:
    headers = (f"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.ne.jp>\nTo: bounce+x@mail.kizuna.example\n"
               f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-2022-JP\n\n")
    return headers.encode() + text.encode("iso-2022-jp")


def test_japanese_text_unknown_recipient_is_hard():
    raw = _japanese_bounce("以下の宛先へのメールは配信できませんでした。\n\n宛先不明: hanako@example.ne.jp\n")
    report = parse(raw)
    assert report.kind == "hard"
    assert report.recipients == ["hanako@example.ne.jp"]


def test_japanese_text_mailbox_full_is_soft():
    raw = _japanese_bounce("メールボックスの容量を超過しているため配信できませんでした。\n宛先: jiro@example.ne.jp\n")
    report = parse(raw)
    assert report.kind == "soft"
    assert report.recipients == ["jiro@example.ne.jp"]
    assert report.reason == "mailbox full"


def test_garbage_is_unknown():
    for raw in (b"", b"\x00\xff garbage", b"Subject: hello\n\nJust a note.\n"):
        report = parse(raw)
        assert report.kind == "unknown"
        assert report.recipients == []


# --- policy -------------------------------------------------------------------------------------------------------
def test_three_soft_of_last_five_is_unreachable():
    assert decide(["delivered", "soft", "delivered", "soft"], "soft") == "unreachable"
    assert decide(["soft", "soft"], "soft") == "unreachable"


def test_two_soft_of_last_five_is_none():
    assert decide(["delivered", "delivered", "soft", "delivered"], "soft") == "none"
    # The third soft bounce is six sends back, outside the window.
    assert decide(["soft", "delivered", "delivered", "delivered", "soft"], "soft") == "none"


def test_hard_is_unreachable_at_once():
    assert decide([], "hard") == "unreachable"
    assert decide(["delivered"] * 10, "hard") == "unreachable"


def test_complaint_is_unsubscribe():
    assert decide(["delivered"], "complaint") == "unsubscribe"


def test_auto_reply_and_delivered_change_nothing():
    assert decide(["soft", "soft", "soft"], "auto_reply") == "none"
    assert decide(["soft", "soft", "soft"], "delivered") == "none"
    assert decide([], "unknown") == "none"


def test_policy_is_configurable():
    strict = BouncePolicy(soft_window=3, soft_limit=2)
    assert strict.decide(["delivered", "soft"], "soft") == "unreachable"
    assert strict.decide(["soft", "delivered", "delivered"], "soft") == "none"
    assert decide(["delivered", "soft"], "soft", policy=strict) == "unreachable"


def test_parse_feeds_decide():
    report = parse(load("kizuna_dsn_mailbox_full.eml"))
    assert decide(["delivered"], report.kind) == "none"
    assert decide(["soft", "soft"], report.kind) == "unreachable"
    assert decide([], parse(load("dsn_11.txt")).kind) == "unreachable"
    assert decide([], parse(load("kizuna_arf_complaint.eml")).kind) == "unsubscribe"
    assert decide(["soft", "soft"], parse(load("kizuna_jp_out_of_office.eml")).kind) == "none"
