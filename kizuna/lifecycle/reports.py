"""The funnel: how many contacts are in each stage, how many entered it in a period, and how many
of those moved on — read from the recorded transitions, grouped by AIDMA phase too."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from kizuna.contacts.models import Contact, LifecycleStage
from kizuna.lifecycle.models import Aidma, StageChange, StageSetting
from kizuna.lifecycle.transitions import ORDER, RANK


def funnel(days: int = 90) -> dict:
    since = timezone.now() - timedelta(days=days)
    settings = {s.key: s for s in StageSetting.objects.all()}
    current = dict(Contact.objects.values_list("lifecycle_stage").annotate(n=Count("id")).values_list(
        "lifecycle_stage", "n"))
    entered = dict(StageChange.objects.filter(at__gte=since).values_list("to_stage").annotate(
        n=Count("contact", distinct=True)).values_list("to_stage", "n"))
    rows = []
    for stage in ORDER:
        setting = settings.get(stage.value)
        if setting is not None and not setting.in_funnel:
            continue
        later = [s.value for s in ORDER if RANK[s.value] > RANK[stage.value]]
        moved_on = 0
        if later and entered.get(stage.value):
            onward = StageChange.objects.filter(contact_id=OuterRef("contact_id"), to_stage__in=later,
                                                at__gte=OuterRef("at"))
            moved_on = (StageChange.objects.filter(at__gte=since, to_stage=stage.value)
                        .filter(Exists(onward)).values("contact_id").distinct().count())
        rows.append({
            "key": stage.value, "label": stage.label, "aidma": setting.get_aidma_display() if setting else "",
            "current": current.get(stage.value, 0), "entered": entered.get(stage.value, 0), "moved_on": moved_on,
            "rate": round(100 * moved_on / entered[stage.value], 1) if entered.get(stage.value) and later else None,
        })
    top = max([r["current"] for r in rows] + [1])
    for row in rows:
        row["width"] = round(100 * row["current"] / top, 1)
    phases = []
    for phase in Aidma:
        keys = [k for k, s in settings.items() if s.aidma == phase.value]
        phases.append({"label": phase.label, "stages": [LifecycleStage(k).label for k in keys if k in RANK],
                       "current": sum(current.get(k, 0) for k in keys)})
    return {"rows": rows, "phases": phases, "days": days,
            "other": current.get(LifecycleStage.OTHER.value, 0)}
