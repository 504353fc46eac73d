"""Re-scoring every contact after fit rules change: read the profile columns the rules use in
chunks, evaluate in Python (the same code that scores one contact), write back in one statement
per chunk (an upsert of fit and grade; engagement is untouched)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from django.db import connection, transaction
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.writelock import sqlite_writer
from kizuna.events.bulk import execute_arrays
from kizuna.scoring.engine import fit_of
from kizuna.scoring.models import ScoringModel

CHUNK = 20_000
_COLUMNS = ["id", "email", "industry", "company_size", "prefecture", "region", "job_title", "department", "source",
            "lifecycle_stage", "custom", "company_id"]


def rescore_fit(model: ScoringModel, *, progress: Callable[[int, int], None] | None = None) -> int:
    rules = list(model.fit_rules.all())
    company_fields = {r.field[8:] for r in rules if r.field.startswith("company.")}
    total = Contact.objects.count()
    done, last_id = 0, 0
    now = timezone.now()
    while True:
        rows = list(Contact.objects.filter(id__gt=last_id).order_by("id").values_list(*_COLUMNS)[:CHUNK])
        if not rows:
            break
        last_id = rows[-1][0]
        companies = {}
        if company_fields:
            from kizuna.contacts.models import Company

            ids = {r[-1] for r in rows if r[-1]}
            companies = {c["id"]: SimpleNamespace(**c) for c in
                         Company.objects.filter(id__in=ids).values("id", *company_fields)}
        ids, fits, grades = [], [], []
        for row in rows:
            contact = SimpleNamespace(**dict(zip(_COLUMNS, row, strict=True)))
            contact.company = companies.get(contact.company_id)
            fit, _reasons = fit_of(model, contact, rules)
            ids.append(contact.id)
            fits.append(fit)
            grades.append(model.grade(fit))
        _write(model.pk, ids, fits, grades, now)
        done += len(rows)
        if progress:
            progress(done, total)
    return done


_UPSERT_PG = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at)
SELECT %b, c, f, g, 0, %b, -1e9, false, %b FROM unnest(%b::bigint[], %b::integer[], %b::varchar[]) AS t(c, f, g)
ON CONFLICT (model_id, contact_id) DO UPDATE SET fit = EXCLUDED.fit, grade = EXCLUDED.grade,
                                                updated_at = EXCLUDED.updated_at
"""
_UPSERT_SQLITE = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at)
VALUES (%s, %s, %s, %s, 0, %s, -1e9, 0, %s)
ON CONFLICT (model_id, contact_id) DO UPDATE SET fit = excluded.fit, grade = excluded.grade,
                                                updated_at = excluded.updated_at
"""


def _write(model_id: int, ids: list[int], fits: list[int], grades: list[str], now) -> None:
    with sqlite_writer(), transaction.atomic():
        if connection.vendor == "postgresql":
            execute_arrays(_UPSERT_PG, [model_id, now, now, ids, fits, grades])
            return
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.executemany(_UPSERT_SQLITE, [(model_id, i, f, g, stamp, stamp)
                                                for i, f, g in zip(ids, fits, grades, strict=True)])
