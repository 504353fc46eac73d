"""Playbooks: ready-made bundles of journeys, emails, segments, scoring rules, stages, lists,
forms and documents, each one YAML file in `bundles/` that a person can read and change.

    available() -> [Bundle]            every bundle file, read and parsed
    install(key) -> Result             creates what is missing, updates what differs, keeps the rest

Everything is identified by its NAME (slug for forms and documents), as in journeys as code
(docs/decisions/0012): installing twice creates nothing new, and installing a changed bundle
says for each item whether it was created, updated (a new template or journey version, a new
rule value) or left unchanged. Installing never deletes anything and never changes the status of
a journey someone paused: only a journey the install creates is put live (when the bundle says
so). The whole install is one transaction: a fault anywhere leaves the database as it was.
See docs/decisions/0021-playbooks-and-simulator.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from kizuna.journeys import as_code

BUNDLES_DIR = Path(__file__).parent / "bundles"
TOP_KEYS = ["name", "title", "description", "story", "scoring", "lists", "assets", "templates", "segments",
            "journeys", "forms"]
LANGS = ("ja", "en")


def site_url() -> str:
    """Where `$SITE` in a bundle's mails points: the demo website this Kizuna serves."""
    from django.conf import settings

    return settings.BASE_URL.rstrip("/") + "/demo-site"


class PlaybookError(ValueError):
    """Faults found in a bundle: (path, message), the path as in the file (`templates[1].subject.en`)."""

    def __init__(self, errors: list[tuple[str, str]], line_of=None):
        self.errors = errors
        self.lines = [line_of(p) if line_of else None for p, _m in errors]
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))

    def messages(self) -> list[str]:
        return [f"line {line}: {p}: {m}" if line else f"{p}: {m}" for (p, m), line in zip(self.errors, self.lines,
                                                                                           strict=True)]


@dataclass
class Bundle:
    key: str
    data: dict
    marks: dict = field(default_factory=dict, repr=False)
    path: Path | None = None

    def text(self, key: str, language: str = "ja") -> str:
        value = self.data.get(key, "")
        if isinstance(value, dict):
            return str(value.get(language) or value.get("ja") or "")
        return str(value or "")

    def line_of(self, path: str) -> int | None:
        return as_code._locate(path, self.marks)[0] if self.marks else None

    def contents(self) -> list[tuple[str, list[str]]]:
        """(kind, names) of what the bundle holds, for the playbooks page and `playbooks list`."""
        d = self.data
        scoring = d.get("scoring") or {}
        out = [
            ("scoring rules", [r.get("name", "") for r in scoring.get("rules", [])]),
            ("stage rules", [r.get("name", "") for r in scoring.get("stages", [])]),
            ("lists", [x.get("name", "") for x in d.get("lists", [])]),
            ("documents", [x.get("name", "") for x in d.get("assets", [])]),
            ("emails", [x.get("name", "") for x in d.get("templates", [])]),
            ("segments", [x.get("name", "") for x in d.get("segments", [])]),
            ("journeys", [x.get("name", "") for x in d.get("journeys", [])]),
            ("forms", [x.get("name", "") for x in d.get("forms", [])]),
        ]
        return [(kind, names) for kind, names in out if names]


@dataclass
class Step:
    kind: str
    name: str
    action: str  # created, updated, unchanged
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action:9} {self.kind}: {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Result:
    key: str
    steps: list[Step] = field(default_factory=list)

    def add(self, kind: str, name: str, action: str, detail: str = "") -> None:
        self.steps.append(Step(kind, name, action, detail))

    def count(self, action: str) -> int:
        return sum(1 for s in self.steps if s.action == action)

    def summary(self) -> str:
        return (f"{self.key}: {self.count('created')} created, {self.count('updated')} updated, "
                f"{self.count('unchanged')} unchanged")


# --- reading ---------------------------------------------------------------------------------

def parse(text: str | bytes, key: str = "playbook", path: Path | None = None) -> Bundle:
    """A bundle from its YAML (YAML 1.2 core types, as journey files: `10:00` stays text)."""
    data, marks, problems = as_code.parse(text)
    if problems:
        raise PlaybookError([(p.path or "file", f"line {p.line}: {p.message}" if p.line else p.message)
                             for p in problems])
    bundle = Bundle(key=key, data=data if isinstance(data, dict) else {}, marks=marks, path=path)
    if not isinstance(data, dict):
        raise PlaybookError([("file", "a playbook is a mapping with name, title and what it installs")])
    errors = [(str(k), f"is not allowed here (allowed: {', '.join(TOP_KEYS)})") for k in data if k not in TOP_KEYS]
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        errors.append(("name", "is required"))
    for section in ("lists", "assets", "templates", "segments", "journeys", "forms"):
        if section in data and not isinstance(data[section], list):
            errors.append((section, "must be a list"))
    if errors:
        raise PlaybookError(errors, bundle.line_of)
    return bundle


def available() -> list[Bundle]:
    return [parse(p.read_bytes(), p.stem, p) for p in sorted(BUNDLES_DIR.glob("*.yaml"))]


def get(key: str) -> Bundle:
    path = BUNDLES_DIR / f"{key}.yaml"
    if "/" in key or "\\" in key or key.startswith(".") or not path.is_file():
        names = ", ".join(p.stem for p in sorted(BUNDLES_DIR.glob("*.yaml")))
        raise PlaybookError([("name", f"no playbook named {key!r} (available: {names})")])
    return parse(path.read_bytes(), key, path)


# --- installing ------------------------------------------------------------------------------

def _bilingual(value: Any, path: str, errors: list[tuple[str, str]]) -> dict[str, str]:
    if isinstance(value, str):
        return {"ja": value, "en": value}
    if not isinstance(value, dict) or not all(isinstance(value.get(lang), str) and value[lang].strip()
                                              for lang in LANGS):
        errors.append((path, "must have a Japanese (ja) and an English (en) text"))
        return {"ja": "", "en": ""}
    return {lang: value[lang] for lang in LANGS}


def by_language(texts: dict[str, str]) -> str:
    """One template text that speaks the contact's language: English for `language: en`, else Japanese."""
    if texts["ja"] == texts["en"]:
        return texts["ja"]
    return f'{{% if contact.language == "en" %}}{texts["en"]}{{% else %}}{texts["ja"]}{{% endif %}}'


class _Installer:
    def __init__(self, bundle: Bundle, actor=None):
        self.bundle, self.actor = bundle, actor
        self.result = Result(bundle.key)
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def check(self) -> None:
        if self.errors:
            raise PlaybookError(self.errors, self.bundle.line_of)

    # each section ------------------------------------------------------------------------

    def scoring(self, spec: dict) -> None:
        from kizuna.lifecycle.models import StageRule
        from kizuna.scoring import rules as rule_checks
        from kizuna.scoring.models import EngagementRule, ScoringModel

        if not isinstance(spec, dict):
            self.fail("scoring", "must be a mapping with model, rules and stages")
            return
        name = spec.get("model") or "Default"
        if name == "Default" and not ScoringModel.objects.exists():
            from kizuna.scoring.setup import ensure_defaults

            ensure_defaults()  # the model every installation starts with, as on the first run
            self.result.add("scoring model", name, "created", "with the default rules")
        model = ScoringModel.objects.filter(name=name).first()
        if model is None:
            settings = {k: spec[k] for k in ("half_life_days", "hot_threshold", "hot_min_grade") if k in spec}
            model = ScoringModel.objects.create(name=name, description=self.bundle.text("title"), **settings)
            self.result.add("scoring model", name, "created")
        last = model.engagement_rules.order_by("-position").values_list("position", flat=True).first() or 0
        for i, raw in enumerate(spec.get("rules", []) or []):
            path = f"scoring.rules[{i}]"
            values = {"event": raw.get("event"), "conditions": raw.get("where", []), "points": raw.get("points"),
                      "max_times": raw.get("max_times"), "per_days": raw.get("per_days"),
                      "include_machine": bool(raw.get("include_machine", False))}
            try:
                rule_checks.check_engagement_rule(values["event"], values["conditions"], values["points"],
                                                  values["max_times"], values["per_days"])
            except rule_checks.RuleError as exc:
                self.fail(f"{path}.{exc.path}", exc.message)
                continue
            rule = EngagementRule.objects.filter(model=model, name=raw.get("name")).first()
            if rule is None:
                last += 1
                EngagementRule.objects.create(model=model, name=raw.get("name"), position=last, **values)
                self.result.add("scoring rule", raw.get("name"), "created", f"{values['points']:+d}")
            elif any(getattr(rule, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(rule, k, v)
                rule.save()
                self.result.add("scoring rule", rule.name, "updated", "applies to new activity from now on")
            else:
                self.result.add("scoring rule", rule.name, "unchanged")
        for i, raw in enumerate(spec.get("stages", []) or []):
            path = f"scoring.stages[{i}]"
            values = {"to_stage": raw.get("to_stage"), "min_engagement": raw.get("min_engagement"),
                      "min_grade": raw.get("min_grade", "D")}
            if values["to_stage"] not in dict(StageRule._meta.get_field("to_stage").choices):
                self.fail(f"{path}.to_stage", "must be a lifecycle stage such as mql or sql")
                continue
            if not isinstance(values["min_engagement"], (int, float)) or values["min_engagement"] < 0:
                self.fail(f"{path}.min_engagement", "must be a number of engagement points")
                continue
            rule = StageRule.objects.filter(scoring_model=model, name=raw.get("name")).first()
            if rule is None:
                StageRule.objects.create(scoring_model=model, name=raw.get("name"), **values)
                self.result.add("stage rule", raw.get("name"), "created")
            elif any(getattr(rule, k) != v for k, v in values.items()):
                StageRule.objects.filter(pk=rule.pk).update(**values)
                self.result.add("stage rule", rule.name, "updated")
            else:
                self.result.add("stage rule", rule.name, "unchanged")

    def lists(self, items: list) -> None:
        from kizuna.contacts.models import ContactList

        for i, raw in enumerate(items):
            if not isinstance(raw, dict) or not raw.get("name"):
                self.fail(f"lists[{i}].name", "is required")
                continue
            _obj, created = ContactList.objects.get_or_create(
                name=raw["name"], defaults={"description": raw.get("description", "")})
            self.result.add("list", raw["name"], "created" if created else "unchanged")

    def assets(self, items: list) -> None:
        from kizuna.assets import services as assets
        from kizuna.assets.models import Asset
        from kizuna.playbooks.pdf import make_pdf

        for i, raw in enumerate(items):
            path = f"assets[{i}]"
            if not isinstance(raw, dict) or not raw.get("name") or not raw.get("slug"):
                self.fail(path, "a document needs name, slug and pdf (title, lines)")
                continue
            if Asset.objects.filter(slug=raw["slug"]).exists():
                self.result.add("document", raw["name"], "unchanged")
                continue
            pdf = raw.get("pdf") or {}
            data = make_pdf(str(pdf.get("title", raw["name"])), [str(x) for x in pdf.get("lines", [])])
            accepted = assets.accept(io.BytesIO(data), raw.get("file_name") or f"{raw['slug']}.pdf")
            assets.create(accepted, name=raw["name"], slug=raw["slug"], user=self.actor,
                          description=raw.get("description", ""))
            self.result.add("document", raw["name"], "created")

    def _sender(self):
        from kizuna.messaging.models import Sender

        sender = Sender.objects.filter(is_default=True).first() or Sender.objects.order_by("id").first()
        if sender is None:
            sender = Sender.objects.create(
                name="Marketing", from_name="Kizuna Marketing", from_email="marketing@kizuna.example",
                organisation="Kizuna", postal_address="(set the postal address in Email senders)", is_default=True)
            self.result.add("sender", sender.name, "created", "edit its address under Email senders")
        return sender

    def templates(self, items: list) -> None:
        from kizuna.contacts.models import SubscriptionTopic
        from kizuna.messaging import rendering
        from kizuna.messaging.models import EmailTemplate
        from kizuna.messaging.templates_service import save_version

        sender = None
        for i, raw in enumerate(items):
            path = f"templates[{i}]"
            if not isinstance(raw, dict) or not raw.get("name"):
                self.fail(f"{path}.name", "is required")
                continue
            subject = by_language(_bilingual(raw.get("subject"), f"{path}.subject", self.errors))
            html = by_language(_bilingual(raw.get("html"), f"{path}.html", self.errors)).replace("$SITE", site_url())
            kind = raw.get("kind", "marketing")
            if kind not in ("marketing", "transactional"):
                self.fail(f"{path}.kind", "must be marketing or transactional")
                continue
            topic = None
            if raw.get("topic"):
                topic, _made = SubscriptionTopic.objects.get_or_create(key=raw["topic"],
                                                                       defaults={"name": raw["topic"]})
            if self.errors:
                continue
            template = EmailTemplate.objects.filter(name=raw["name"]).select_related("current").first()
            try:
                if template is None:
                    sender = sender or self._sender()
                    template = EmailTemplate.objects.create(name=raw["name"], kind=kind, topic=topic, sender=sender)
                    save_version(template, subject=subject, html=html, preheader=raw.get("preheader", ""),
                                 user=self.actor)
                    self.result.add("email", raw["name"], "created")
                elif template.current is None or template.current.subject != subject or template.current.html != html:
                    save_version(template, subject=subject, html=html, preheader=raw.get("preheader", ""),
                                 user=self.actor)
                    self.result.add("email", raw["name"], "updated", "a new version; earlier mails keep theirs")
                else:
                    self.result.add("email", raw["name"], "unchanged")
            except rendering.TemplateProblem as exc:
                self.fail(f"{path}.html", str(exc))

    def segments(self, items: list) -> None:
        from kizuna.journeys import graph as graph_mod
        from kizuna.segments import filters
        from kizuna.segments.membership import recompute, save_segment
        from kizuna.segments.models import Segment

        for i, raw in enumerate(items):
            path = f"segments[{i}]"
            if not isinstance(raw, dict) or not raw.get("name"):
                self.fail(f"{path}.name", "is required")
                continue
            resolve = as_code._Resolve(as_code.Names(), graph_mod.Refs.load())
            tree = resolve.tree(raw.get("filter"), f"{path}.filter")
            if resolve.errors:
                self.errors += resolve.errors
                continue
            ctx = filters.Context.load()
            try:
                checked = filters.check(tree, ctx)
            except filters.FilterError as exc:
                self.fail(f"{path}.filter.{exc.path}" if exc.path != "filter" else f"{path}.filter", exc.message)
                continue
            segment = Segment.objects.filter(name=raw["name"]).first()
            if segment is not None and segment.filter == checked:
                self.result.add("segment", raw["name"], "unchanged")
                continue
            action = "updated" if segment else "created"
            segment = segment or Segment(name=raw["name"])
            segment.description = raw.get("description", "")
            save_segment(segment, tree, ctx=ctx)
            recompute(segment)
            self.result.add("segment", raw["name"], action)

    def journeys(self, items: list) -> None:
        from kizuna.journeys import engine
        from kizuna.journeys.models import Journey

        for i, raw in enumerate(items):
            path = f"journeys[{i}]"
            if not isinstance(raw, dict):
                self.fail(path, "must be a journey as in an exported journey file")
                continue
            doc = {k: v for k, v in raw.items() if k != "live"}
            loaded = as_code.load(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
            if not loaded.ok:
                self.errors += [(f"{path}.{p.path}" if p.path else path, p.message) for p in loaded.errors]
                continue
            journey = loaded.journey
            if loaded.action == "created" and raw.get("live") and journey.status != Journey.Status.LIVE:
                engine.set_status(journey, Journey.Status.LIVE)
            detail = {"created": "live" if raw.get("live") else "draft",
                      "updated": "a new version; running contacts keep theirs"}.get(loaded.action, "")
            self.result.add("journey", loaded.name, loaded.action, detail)

    def forms(self, items: list) -> None:
        from kizuna.capture import definition as definitions
        from kizuna.capture import services as forms
        from kizuna.capture.models import Form

        for i, raw in enumerate(items):
            path = f"forms[{i}]"
            if not isinstance(raw, dict) or not raw.get("name") or not raw.get("slug"):
                self.fail(path, "a form needs name, slug and definition")
                continue
            data = dict(raw.get("definition") or {})
            data["actions"] = [self._form_action(a, f"{path}.definition.actions[{j}]")
                               for j, a in enumerate(data.get("actions", []) or [])]
            if self.errors:
                continue
            form = Form.objects.filter(slug=raw["slug"]).first()
            try:
                checked = definitions.check(data, previous=form.definition if form else None)
                if form is not None and form.definition == checked:
                    self.result.add("form", raw["name"], "unchanged")
                    continue
                action = "updated" if form else "created"
                forms.save_form(self.actor, form or Form(name=raw["name"], slug=raw["slug"]), data)
                self.result.add("form", raw["name"], action)
            except definitions.DefinitionError as exc:
                self.errors += [(f"{path}.definition.{p}", m) for p, m in exc.errors]

    def _form_action(self, action: Any, path: str) -> Any:
        """Names → ids in a form action (asset, journey, list, model), as journey files do."""
        if not isinstance(action, dict):
            return action
        from kizuna.assets.models import Asset
        from kizuna.contacts.models import ContactList
        from kizuna.journeys.models import Journey
        from kizuna.scoring.models import ScoringModel

        out = dict(action)
        for key, lookup, what in (("asset", lambda v: Asset.objects.filter(slug=v), "document (by slug)"),
                                  ("journey", lambda v: Journey.objects.filter(name=v), "journey"),
                                  ("list", lambda v: ContactList.objects.filter(name=v), "list"),
                                  ("model", lambda v: ScoringModel.objects.filter(name=v), "scoring model")):
            if key in out and isinstance(out[key], str):
                found = lookup(out[key]).values_list("id", flat=True).first()
                if found is None:
                    self.fail(f"{path}.{key}", f"no {what} named {out[key]!r}")
                else:
                    out[key] = found
        return out


ORDER = ["scoring", "lists", "assets", "templates", "segments", "journeys", "forms"]


def install(bundle: Bundle | str, *, actor=None) -> Result:
    """Installs a bundle (or the bundle of that key) in one transaction; PlaybookError with every
    fault found, and nothing written, when the bundle does not fit this installation."""
    bundle = get(bundle) if isinstance(bundle, str) else bundle
    from kizuna.contacts.setup import ensure_defaults
    from kizuna.db.writelock import sqlite_writer

    with sqlite_writer(), transaction.atomic():
        ensure_defaults()  # the subscription topics every installation starts with (mails and forms name them)
        installer = _Installer(bundle, actor)
        for section in ORDER:
            value = bundle.data.get(section)
            if value:
                getattr(installer, section)(value)
                installer.check()
    return installer.result


def install_all(*, actor=None) -> list[Result]:
    return [install(b, actor=actor) for b in available()]


def status(bundle: Bundle) -> str:
    """installed / partly / not installed, from the names that exist now."""
    from kizuna.capture.models import Form
    from kizuna.journeys.models import Journey
    from kizuna.messaging.models import EmailTemplate
    from kizuna.segments.models import Segment

    checks = [(Journey, x.get("name")) for x in bundle.data.get("journeys", [])]
    checks += [(EmailTemplate, x.get("name")) for x in bundle.data.get("templates", [])]
    checks += [(Segment, x.get("name")) for x in bundle.data.get("segments", [])]
    found = sum(1 for model, name in checks if model.objects.filter(name=name).exists())
    found += sum(1 for x in bundle.data.get("forms", []) if Form.objects.filter(slug=x.get("slug")).exists())
    total = len(checks) + len(bundle.data.get("forms", []))
    if total and found == total:
        return "installed"
    return "partly" if found else "not installed"
