"""Reference data for Japanese B2B contacts: prefectures and regions, industries, company sizes,
free-mail domains. Values are stable codes; labels translate.
"""

from __future__ import annotations

import unicodedata

from django.db import models
from django.utils.translation import gettext_lazy as _

# (code, Japanese name, English name, region code), JIS X 0401 order.
PREFECTURES: list[tuple[str, str, str, str]] = [
    ("01", "北海道", "Hokkaido", "hokkaido"),
    ("02", "青森県", "Aomori", "tohoku"), ("03", "岩手県", "Iwate", "tohoku"),
    ("04", "宮城県", "Miyagi", "tohoku"), ("05", "秋田県", "Akita", "tohoku"),
    ("06", "山形県", "Yamagata", "tohoku"), ("07", "福島県", "Fukushima", "tohoku"),
    ("08", "茨城県", "Ibaraki", "kanto"), ("09", "栃木県", "Tochigi", "kanto"),
    ("10", "群馬県", "Gunma", "kanto"), ("11", "埼玉県", "Saitama", "kanto"),
    ("12", "千葉県", "Chiba", "kanto"), ("13", "東京都", "Tokyo", "kanto"),
    ("14", "神奈川県", "Kanagawa", "kanto"),
    ("15", "新潟県", "Niigata", "chubu"), ("16", "富山県", "Toyama", "chubu"),
    ("17", "石川県", "Ishikawa", "chubu"), ("18", "福井県", "Fukui", "chubu"),
    ("19", "山梨県", "Yamanashi", "chubu"), ("20", "長野県", "Nagano", "chubu"),
    ("21", "岐阜県", "Gifu", "chubu"), ("22", "静岡県", "Shizuoka", "chubu"),
    ("23", "愛知県", "Aichi", "chubu"),
    ("24", "三重県", "Mie", "kinki"), ("25", "滋賀県", "Shiga", "kinki"),
    ("26", "京都府", "Kyoto", "kinki"), ("27", "大阪府", "Osaka", "kinki"),
    ("28", "兵庫県", "Hyogo", "kinki"), ("29", "奈良県", "Nara", "kinki"),
    ("30", "和歌山県", "Wakayama", "kinki"),
    ("31", "鳥取県", "Tottori", "chugoku"), ("32", "島根県", "Shimane", "chugoku"),
    ("33", "岡山県", "Okayama", "chugoku"), ("34", "広島県", "Hiroshima", "chugoku"),
    ("35", "山口県", "Yamaguchi", "chugoku"),
    ("36", "徳島県", "Tokushima", "shikoku"), ("37", "香川県", "Kagawa", "shikoku"),
    ("38", "愛媛県", "Ehime", "shikoku"), ("39", "高知県", "Kochi", "shikoku"),
    ("40", "福岡県", "Fukuoka", "kyushu"), ("41", "佐賀県", "Saga", "kyushu"),
    ("42", "長崎県", "Nagasaki", "kyushu"), ("43", "熊本県", "Kumamoto", "kyushu"),
    ("44", "大分県", "Oita", "kyushu"), ("45", "宮崎県", "Miyazaki", "kyushu"),
    ("46", "鹿児島県", "Kagoshima", "kyushu"), ("47", "沖縄県", "Okinawa", "kyushu"),
]


class Region(models.TextChoices):
    HOKKAIDO = "hokkaido", _("Hokkaido")
    TOHOKU = "tohoku", _("Tohoku")
    KANTO = "kanto", _("Kanto")
    CHUBU = "chubu", _("Chubu")
    KINKI = "kinki", _("Kinki (Kansai)")
    CHUGOKU = "chugoku", _("Chugoku")
    SHIKOKU = "shikoku", _("Shikoku")
    KYUSHU = "kyushu", _("Kyushu and Okinawa")
    OVERSEAS = "overseas", _("Outside Japan")


PREFECTURE_CHOICES = [(code, ja) for code, ja, _en, _r in PREFECTURES]
PREFECTURE_REGION = {code: region for code, _ja, _en, region in PREFECTURES}
PREFECTURE_EN = {code: en for code, _ja, en, _r in PREFECTURES}
PREFECTURE_JA = {code: ja for code, ja, _en, _r in PREFECTURES}


def _prefecture_lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for code, ja, en, _r in PREFECTURES:
        short = ja if ja == "北海道" else ja[:-1]
        for name in {code, str(int(code)), ja, short, en.lower(), f"{en.lower()}-ken",
                     f"{en.lower()} prefecture", f"{en.lower()}-to", f"{en.lower()}-fu"}:
            table[name] = code
    return table


_PREF_LOOKUP = _prefecture_lookup()


def normalise_prefecture(value: str) -> str | None:
    """'東京', '東京都', 'Tokyo', '13' → '13'; None when unknown. Empty stays empty."""
    v = unicodedata.normalize("NFKC", value).strip().lower()
    if not v:
        return ""
    return _PREF_LOOKUP.get(v)


class Industry(models.TextChoices):
    """Major groups after the Japan Standard Industrial Classification, as B2B marketers use them."""

    AGRICULTURE = "agriculture", _("Agriculture, forestry and fishery")
    CONSTRUCTION = "construction", _("Construction")
    MANUFACTURING = "manufacturing", _("Manufacturing")
    ENERGY = "energy", _("Electricity, gas and water")
    IT = "it", _("Information and communications")
    TRANSPORT = "transport", _("Transport and postal")
    WHOLESALE_RETAIL = "wholesale_retail", _("Wholesale and retail")
    FINANCE = "finance", _("Finance and insurance")
    REAL_ESTATE = "real_estate", _("Real estate")
    PROFESSIONAL = "professional", _("Professional and technical services")
    HOSPITALITY = "hospitality", _("Accommodation and food")
    EDUCATION = "education", _("Education")
    HEALTHCARE = "healthcare", _("Medical and welfare")
    SERVICES = "services", _("Other services")
    PUBLIC = "public", _("Government")
    OTHER = "other", _("Other")


INDUSTRY_ALIASES = {
    "農業": "agriculture", "林業": "agriculture", "漁業": "agriculture", "農林水産業": "agriculture",
    "建設": "construction", "建設業": "construction",
    "製造": "manufacturing", "製造業": "manufacturing", "メーカー": "manufacturing",
    "電気・ガス": "energy", "エネルギー": "energy", "電気・ガス・熱供給・水道業": "energy",
    "情報通信": "it", "情報通信業": "it", "it": "it", "ソフトウェア": "it", "通信": "it",
    "運輸": "transport", "運輸業": "transport", "物流": "transport", "運輸業・郵便業": "transport",
    "卸売": "wholesale_retail", "小売": "wholesale_retail", "卸売業・小売業": "wholesale_retail",
    "商社": "wholesale_retail", "小売業": "wholesale_retail", "卸売業": "wholesale_retail",
    "金融": "finance", "保険": "finance", "金融業・保険業": "finance", "金融・保険": "finance",
    "不動産": "real_estate", "不動産業": "real_estate",
    "専門サービス": "professional", "コンサルティング": "professional",
    "学術研究・専門・技術サービス業": "professional",
    "宿泊": "hospitality", "飲食": "hospitality", "宿泊業・飲食サービス業": "hospitality",
    "教育": "education", "教育・学習支援業": "education",
    "医療": "healthcare", "福祉": "healthcare", "医療・福祉": "healthcare",
    "サービス": "services", "サービス業": "services",
    "官公庁": "public", "公務": "public", "自治体": "public",
    "その他": "other",
}


def normalise_industry(value: str) -> str | None:
    v = unicodedata.normalize("NFKC", value).strip().lower()
    if not v:
        return ""
    if v in Industry.values:
        return v
    if v in INDUSTRY_ALIASES:
        return INDUSTRY_ALIASES[v]
    for choice in Industry:
        if str(choice.label).lower() == v:
            return choice.value
    return None


class CompanySize(models.TextChoices):
    S1 = "1-9", _("1–9 employees")
    S10 = "10-49", _("10–49 employees")
    S50 = "50-99", _("50–99 employees")
    S100 = "100-299", _("100–299 employees")
    S300 = "300-999", _("300–999 employees")
    S1000 = "1000-4999", _("1,000–4,999 employees")
    S5000 = "5000+", _("5,000 or more employees")


SIZE_BOUNDS = [(1, "1-9"), (10, "10-49"), (50, "50-99"), (100, "100-299"), (300, "300-999"),
               (1000, "1000-4999"), (5000, "5000+")]


def size_for_employees(n: int) -> str:
    band = SIZE_BOUNDS[0][1]
    for lower, code in SIZE_BOUNDS:
        if n >= lower:
            band = code
    return band


def normalise_company_size(value: str) -> str | None:
    """A band code, a band written another way ('100〜299名'), or a head count ('250', '250名')."""
    v = unicodedata.normalize("NFKC", value).strip().replace(",", "").replace("名", "").replace("人", "")
    v = v.replace("〜", "-").replace("~", "-").replace("–", "-").replace(" ", "")
    if not v:
        return ""
    if v in CompanySize.values:
        return v
    if v.endswith("以上"):
        v = v[:-2] + "+"
    if v.endswith("+") and v[:-1].isdigit():
        return size_for_employees(int(v[:-1]))
    if "-" in v:
        low = v.split("-", 1)[0]
        return size_for_employees(int(low)) if low.isdigit() else None
    return size_for_employees(int(v)) if v.isdigit() and int(v) > 0 else None


# Free and ISP mail domains: contacts on these are never linked to a company by domain.
FREE_MAIL_DOMAINS = frozenset(
    """
    gmail.com googlemail.com yahoo.co.jp yahoo.com ymail.ne.jp outlook.com outlook.jp hotmail.com
    hotmail.co.jp live.jp live.com msn.com icloud.com me.com mac.com aol.com protonmail.com
    proton.me docomo.ne.jp ezweb.ne.jp au.com softbank.ne.jp i.softbank.jp disney.ne.jp
    nifty.com nifty.ne.jp biglobe.ne.jp so-net.ne.jp ocn.ne.jp plala.or.jp dion.ne.jp
    infoseek.jp excite.co.jp goo.jp mail.goo.ne.jp zoho.com gmx.com gmx.net yandex.com
    mail.com tutanota.com fastmail.com hey.com rakuten.jp jcom.home.ne.jp
    """.split()
)


def is_free_mail(domain: str) -> bool:
    return domain.lower() in FREE_MAIL_DOMAINS
