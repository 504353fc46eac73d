"""Journey pages for code and dry runs: the simulation, YAML export (a download) and YAML import
(paste or upload, check or import, faults listed and highlighted at their lines). The work is in
simulation.py and as_code.py; the builder's journey page links here."""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import quote

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.accounts.permissions import capability_required
from kizuna.journeys import as_code, simulation
from kizuna.journeys.models import Journey

PATHS_SHOWN = 200

STEP_TYPES = {
    "wait": gettext_lazy("Wait"), "wait_event": gettext_lazy("Wait for an event"),
    "condition": gettext_lazy("Condition"), "split": gettext_lazy("Random split"),
    "send_email": gettext_lazy("Send email"), "update_field": gettext_lazy("Update a field"),
    "add_tag": gettext_lazy("Add a tag"), "remove_tag": gettext_lazy("Remove a tag"),
    "set_stage": gettext_lazy("Set the stage"), "score": gettext_lazy("Add or subtract score"),
    "add_to_list": gettext_lazy("Add to a list"), "remove_from_list": gettext_lazy("Remove from a list"),
    "alert_owner": gettext_lazy("Alert the owner"), "webhook": gettext_lazy("Call a webhook"),
    "enroll": gettext_lazy("Enroll in another journey"), "exit": gettext_lazy("Exit"), "goal": gettext_lazy("Goal"),
}
OUTCOMES = {
    "next": gettext_lazy("done"), "waited": gettext_lazy("waited"), "pending": gettext_lazy("pending now"),
    "event": gettext_lazy("the event came"), "timeout": gettext_lazy("timed out"),
    "then": gettext_lazy("condition met"), "else": gettext_lazy("condition not met"),
    "holdout": gettext_lazy("holdout"), "goal": gettext_lazy("goal reached"), "exit": gettext_lazy("exited"),
    "would send": gettext_lazy("would send"), "blocked": gettext_lazy("blocked by the send rules"),
}
ENDS = {
    "done": gettext_lazy("Done"), "exited": gettext_lazy("Exited"), "pending": gettext_lazy("Pending now"),
    "stopped": gettext_lazy("Stopped (step limit)"), "goal": gettext_lazy("Goal reached"),
}
REASONS = {"end of the journey": gettext_lazy("end of the journey"), "goal": gettext_lazy("goal"),
           "exit condition": gettext_lazy("exit condition"), "exit step": gettext_lazy("exit step"),
           "holdout": gettext_lazy("holdout"), "contact deleted": gettext_lazy("contact deleted")}
RULES = {"once": gettext_lazy("once ever"), "one_at_a_time": gettext_lazy("one run at a time"),
         "reentry_days": gettext_lazy("not again within the set days")}
TRIGGERS = {"event": gettext_lazy("an event"), "segment": gettext_lazy("a segment entry or exit"),
            "date": gettext_lazy("a date field"), "schedule": gettext_lazy("a schedule"),
            "manual": gettext_lazy("by hand or the API")}


def _via(via: str) -> str:
    """The trigger occurrence of a run in words ("event #12", "segment entered #5", "date 2026-11-05")."""
    kind, _sep, rest = via.partition(" ")
    if kind == "event":
        return _("event %(ref)s") % {"ref": rest}
    if kind == "segment":
        on, _sep, ref = rest.partition(" ")
        return (_("entered the segment (%(ref)s)") if on == "entered" else _("left the segment (%(ref)s)")) % {
            "ref": ref}
    if kind == "date":
        return _("date %(day)s") % {"day": rest}
    if kind == "schedule":
        return _("schedule %(day)s") % {"day": rest}
    return via


def _outcome(key: str) -> str:
    if key.startswith("branch "):
        return _("branch %(n)s") % {"n": int(key.split()[1]) + 1}
    return str(OUTCOMES.get(key, key))


class SimulateForm(forms.Form):
    days = forms.IntegerField(label=gettext_lazy("Days back"), min_value=1, max_value=simulation.MAX_DAYS,
                              initial=30)


class ImportForm(forms.Form):
    text = forms.CharField(label=gettext_lazy("Journey YAML"), required=False,
                           widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "class": "yaml-input"}))
    file = forms.FileField(label=gettext_lazy("Or upload a .yaml file"), required=False)

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload:
            raw = upload.read(as_code.MAX_BYTES + 1)
            data["source"] = raw
        elif data.get("text", "").strip():
            data["source"] = data["text"]
        else:
            raise forms.ValidationError(_("Paste a journey's YAML or choose a file."))
        return data


def _view_model(result: simulation.Simulation) -> dict:
    """The simulation with labels for its keys, ready for the template."""
    nodes = [{"id": n.id, "type": STEP_TYPES.get(n.type, n.type), "label": n.label, "reached": n.reached,
              "pending": n.pending, "outcomes": [(_outcome(k), v) for k, v in sorted(n.outcomes.items()) if v]}
             for n in result.nodes]
    paths = [{"path": p, "steps": [{"step": s, "outcome": _outcome(s.outcome),
                                    "type": STEP_TYPES.get(s.type, s.type)} for s in p.steps],
              "end": ENDS.get(p.state, p.state), "reason": str(REASONS.get(p.reason, p.reason)),
              "via": _via(p.via)} for p in result.paths]
    mail_rows = [{"m": m, "blocked": sum(m.blocked.values()), "reasons": m.blocked.most_common()}
                 for m in result.messages]
    return {
        "result": result, "nodes": nodes, "paths": paths, "mail_rows": mail_rows,
        "trigger": TRIGGERS.get(result.trigger, result.trigger), "manual": "manual" in result.notes,
        "audience_today": "audience today" in result.notes,
        "refused": [(RULES.get(k, k), v) for k, v in sorted(result.refused.items())],
        "ended": [(ENDS.get(k, k), v) for k, v in sorted(result.ended.items())],
        "would_send": sum(m.would_send for m in result.messages),
        "blocked": sum(sum(m.blocked.values()) for m in result.messages),
        "pending": result.ended.get("pending", 0),
    }


@capability_required("journeys.view")
def simulate(request, pk: int):
    """GET with `days` runs the simulation (it writes nothing, so a link can share it)."""
    journey = get_object_or_404(Journey.objects.select_related("current"), pk=pk)
    form = SimulateForm(request.GET if "days" in request.GET else None, initial={"days": 30})
    context = {"journey": journey, "form": form, "paths_shown": PATHS_SHOWN}
    if form.is_bound and form.is_valid():
        try:
            result = simulation.simulate(journey, days=form.cleaned_data["days"], limit=PATHS_SHOWN)
        except ValueError:
            form.add_error(None, _("This journey has no saved version yet: save it before simulating."))
        else:
            context.update(_view_model(result))
    return render(request, "journeys/simulate.html", context, status=400 if form.errors else 200)


@capability_required("journeys.view")
def export(request, pk: int):
    journey = get_object_or_404(Journey.objects.select_related("current"), pk=pk)
    if journey.current is None:
        raise Http404(_("This journey has no saved version yet."))
    response = HttpResponse(as_code.dump(journey), content_type="text/yaml; charset=utf-8")
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(as_code.filename(journey))}"
    return response


def _listing(text: str, errors: list[as_code.Problem]) -> list[dict]:
    """The file's lines with their numbers and the faults found at each."""
    at: dict[int, list[as_code.Problem]] = defaultdict(list)
    for e in errors:
        if e.line:
            at[e.line].append(e)
    return [{"number": i, "text": line, "errors": at.get(i, [])} for i, line in enumerate(text.splitlines(), 1)]


@capability_required("journeys.manage")
def import_journey(request):
    form = ImportForm(request.POST or None, request.FILES or None)
    context: dict = {"form": form}
    status = 200
    if request.method == "POST" and form.is_valid():
        source = form.cleaned_data["source"]
        dry_run = "dry_run" in request.POST
        result = as_code.load(source, apply=not dry_run)
        text = source if isinstance(source, str) else source.decode("utf-8", errors="replace")
        context.update(result=result, dry_run=dry_run)
        if result.ok:
            if result.action == "checked":
                text_ok = (_("The file is valid: importing it would give “%(name)s” a new version.") if result.journey
                           else _("The file is valid: importing it would create the journey “%(name)s”."))
                messages.success(request, text_ok % {"name": result.name})
            elif result.action == "unchanged":
                messages.info(request, _("“%(name)s” is already exactly this: nothing was changed.")
                              % {"name": result.name})
            else:
                done = (_("Journey “%(name)s” created as a draft (version %(number)s).") if result.action == "created"
                        else _("Journey “%(name)s” updated: version %(number)s (%(status)s)."))
                messages.success(request, done % {"name": result.name, "number": result.version.number,
                                                  "status": result.journey.get_status_display()})
        else:
            status = 400
            context["listing"] = _listing(text, result.errors)
            context["unplaced"] = [e for e in result.errors if not e.line]
        if request.FILES:  # show what was uploaded, so it can be fixed here
            form = ImportForm(initial={"text": text})
            context["form"] = form
    elif request.method == "POST":
        status = 400
    return render(request, "journeys/import.html", context, status=status)
