"""Demo email: a sender, three templates, a finished newsletter send with opens and clicks (people
and machines), and a seminar invitation scheduled for next week. Everything goes through the real
outbox, capture transport and tracking functions, so the demo shows what Kizuna really records."""

from __future__ import annotations

import random
from datetime import timedelta

from django.utils import timezone

from kizuna.contacts.models import ContactList, SubscriptionTopic
from kizuna.messaging import bulk, outbox, tokens, tracking, transports
from kizuna.messaging.models import BulkSend, EmailTemplate, Message, Sender, SendingSettings
from kizuna.messaging.templates_service import save_version

NEWSLETTER = """<html><head><style>
body { font-family: 'Hiragino Sans', Meiryo, sans-serif; color: #1f2328; line-height: 1.7; }
h1 { font-size: 20px; color: #0b3d91; }
.cta { display: inline-block; background: #0b5cd5; color: #ffffff; padding: 10px 20px; border-radius: 4px;
       text-decoration: none; }
</style></head><body>
<p>{{ contact.company_name }}<br>{{ contact.department }} {{ contact.family_name | default("ご担当者") }} 様</p>
<p>いつもお世話になっております。株式会社キズナの{{ owner.name | default("マーケティング部") }}です。</p>
<h1>製造業のDX事例集 2026年版を公開しました</h1>
<p>生産管理と在庫管理をクラウドでつないだ12社の事例を、導入前の課題・効果・体制とともにまとめました。</p>
<p><a class="cta"
 href="https://www.example.co.jp/download/dx-cases-2026?utm_source=kizuna&amp;utm_medium=email&amp;utm_campaign=nl-2026-11"
 >事例集をダウンロード</a></p>
<p>そのほかの記事: <a href="https://www.example.co.jp/blog/inventory-visibility">在庫の見える化、最初の3か月</a> ／
<a href="https://www.example.co.jp/pricing">料金プラン</a></p>
</body></html>"""

SEMINAR = """<html><head>
<style>.cta { background: #c2185b; color: #fff; padding: 10px 18px; text-decoration: none; }</style>
</head><body>
<p>{{ contact.company_name }}<br>{{ contact.family_name | default("ご担当者") }} 様</p>
<p>12月10日(水) 15:00〜16:00、オンラインセミナー「現場から始める生産管理DX」を開催します。</p>
<p><a class="cta" href="https://www.example.co.jp/seminar/2026-12-10">お申し込みはこちら</a></p>
</body></html>"""

THANKS = """<html><body>
<p>{{ contact.family_name | default("お客") }} 様</p>
<p>資料をご請求いただきありがとうございます。以下のリンクからダウンロードいただけます。</p>
<p><a href="https://www.example.co.jp/download/whitepaper.pdf">ホワイトペーパー（PDF）</a></p>
</body></html>"""

HUMAN_AGENTS = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
     "126.33.10.{n}"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
     "153.156.20.{n}"),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", "60.70.80.{n}"),
]
MACHINE_OPENS = [("Mozilla/5.0", "17.58.100.{n}"),
                 ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
                  "66.249.84.{n}")]


def generate_demo_email(seed: int = 5) -> str:
    if EmailTemplate.objects.exists():
        return "email demo already present"
    rng = random.Random(seed)
    SendingSettings.get()
    sender, _ = Sender.objects.get_or_create(name="マーケティング部", defaults={
        "from_name": "株式会社キズナ マーケティング部", "from_email": "marketing@demo.kizuna.example",
        "reply_to": "sales@demo.kizuna.example", "organisation": "株式会社キズナ",
        "postal_address": "〒100-0005 東京都千代田区丸の内1-1-1 キズナビル8階",
        "contact_info": "お問い合わせ: 03-0000-0000 / info@demo.kizuna.example", "is_default": True})
    topics = {t.key: t for t in SubscriptionTopic.objects.all()}
    newsletter = EmailTemplate.objects.create(name="メールマガジン 2026年11月号", topic=topics.get("newsletter"),
                                              sender=sender)
    n_version, _ = save_version(newsletter, subject="{{ contact.family_name }}様: 製造業のDX事例集 2026年版",
                                html=NEWSLETTER, preheader="12社の導入事例をまとめました")
    seminar = EmailTemplate.objects.create(name="セミナー案内 12月", topic=topics.get("seminars"), sender=sender)
    s_version, _ = save_version(seminar, subject="【12/10 オンライン】現場から始める生産管理DX", html=SEMINAR)
    thanks = EmailTemplate.objects.create(name="資料請求のお礼", kind="transactional", sender=sender)
    save_version(thanks, subject="資料のご請求ありがとうございます", html=THANKS)

    audience = ContactList.objects.order_by("id").first()
    if audience is None:
        return "no list for the demo send"
    sent_at = timezone.now() - timedelta(days=2)
    send = BulkSend.objects.create(name="メールマガジン 11月号 配信", template=newsletter, version=n_version,
                                   contact_list=audience)
    bulk.start(send, at=sent_at)
    bulk.prepare(send)
    outbox.drain(transport=transports.CaptureTransport())
    bulk.tick()
    Message.objects.filter(bulk=send, status="sent").update(sent_at=sent_at)
    opened = clicked = 0
    for message in Message.objects.filter(bulk=send, status="sent").select_related("version", "contact"):
        token = tokens.make(message.pk)
        roll = rng.random()
        at = sent_at + timedelta(minutes=rng.randint(20, 2000))
        if roll < 0.18:  # an image proxy fetched the pixel on delivery
            agent, ip = rng.choice(MACHINE_OPENS)
            tracking.record_open(token, tracking.Request("GET", ip.format(n=rng.randint(2, 250)), agent, {},
                                                         sent_at + timedelta(seconds=rng.randint(1, 30))))
        if roll < 0.45:
            agent, ip = rng.choice(HUMAN_AGENTS)
            address = ip.format(n=rng.randint(2, 250))
            tracking.record_open(token, tracking.Request("GET", address, agent, {}, at))
            opened += 1
            if rng.random() < 0.3:
                position = rng.choice([0, 0, 0, 1, 2])
                tracking.record_click(token, position, tracking.Request("GET", address, agent, {},
                                                                        at + timedelta(seconds=40)))
                clicked += 1
        elif roll > 0.97:  # a security gateway follows every link within seconds of delivery
            scan_at = sent_at + timedelta(seconds=3)
            for position in range(3):
                tracking.record_click(token, position, tracking.Request(
                    "GET", "52.100.7.9", "Mozilla/5.0 (compatible; Barracuda Sentinel)", {}, scan_at))
    later = BulkSend.objects.create(name="12月セミナー案内", template=seminar, version=s_version,
                                    contact_list=audience, rate_per_minute=600)
    bulk.start(later, at=timezone.now() + timedelta(days=7))
    return f"1 sender, 3 templates, 1 bulk send ({opened} opened, {clicked} clicked), 1 scheduled"
