"""The scoring model every installation starts with: rules a Japanese B2B team would begin from,
meant to be edited (Settings → Lead scoring)."""

from __future__ import annotations

from kizuna.scoring.models import EngagementRule, FitRule, ScoringModel

FIT = [
    ("industry", "in", "manufacturing, it", 20),
    ("job_title", "contains", "部長, 本部長, 取締役, 役員, 社長, manager, director, head", 15),
    ("company_size", "in", "100-299, 300-999, 1000-4999, 5000+", 10),
    ("region", "equals", "kanto", 5),
    ("email_domain", "in", "gmail.com, yahoo.co.jp, outlook.jp, hotmail.com, icloud.com", -10),
]
ENGAGEMENT = [
    ("Pricing page viewed", "page", [{"field": "path", "op": "contains", "value": "/pricing"}], 10, 3, 7),
    # "/case" matches /case/, /cases/ and /case-studies/ alike.
    ("Case study viewed", "page", [{"field": "path", "op": "contains", "value": "/case"}], 5, 5, 7),
    ("Careers page viewed", "page", [{"field": "path", "op": "contains", "value": "/careers"}], -20, 1, 30),
    ("Page viewed", "page", [], 1, 20, 7),
    ("Form submitted", "Form Submitted", [], 30, None, None),
    ("Email clicked (person)", "Email Clicked", [], 5, 10, 30),
    ("Email opened (person)", "Email Opened", [], 1, 5, 30),
    ("Unsubscribed", "Unsubscribed", [], -30, None, None),
    ("Email bounced", "Email Bounced", [], -20, None, None),
]


def ensure_defaults() -> ScoringModel | None:
    if ScoringModel.objects.exists():
        return None
    model = ScoringModel.objects.create(name="Default", description="Fit and engagement for new business")
    FitRule.objects.bulk_create([FitRule(model=model, field=f, operator=o, value=v, points=p, position=n)
                                 for n, (f, o, v, p) in enumerate(FIT)])
    EngagementRule.objects.bulk_create([
        EngagementRule(model=model, name=name, event=event, conditions=conds, points=p, max_times=cap, per_days=days,
                       position=n)
        for n, (name, event, conds, p, cap, days) in enumerate(ENGAGEMENT)])
    return model
