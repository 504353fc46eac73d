"""The playbooks page: every ready-made bundle, what it contains, whether it is installed, and an
Install button (installing again only adds or updates what differs)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.playbooks import services

KINDS = {
    "scoring rules": gettext_lazy("Scoring rules"), "stage rules": gettext_lazy("Stage rules"),
    "lists": gettext_lazy("Lists"), "documents": gettext_lazy("Documents"), "emails": gettext_lazy("Emails"),
    "segments": gettext_lazy("Segments"), "journeys": gettext_lazy("Journeys"), "forms": gettext_lazy("Forms"),
}
STATUS = {"installed": gettext_lazy("Installed"), "partly": gettext_lazy("Partly installed"),
          "not installed": gettext_lazy("Not installed")}
ACTIONS = {"created": gettext_lazy("created"), "updated": gettext_lazy("updated"),
           "unchanged": gettext_lazy("unchanged")}


@capability_required("journeys.view")
def playbook_list(request):
    language = "en" if (get_language() or "").startswith("en") else "ja"
    rows = []
    for bundle in services.available():
        state = services.status(bundle)
        rows.append({
            "key": bundle.key, "title": bundle.text("title", language),
            "description": bundle.text("description", language), "story": bundle.text("story"),
            "state": state, "state_label": STATUS[state],
            "contents": [(KINDS.get(kind, kind), names) for kind, names in bundle.contents()],
        })
    return render(request, "playbooks/list.html", {"rows": rows})


@require_POST
@capability_required("journeys.manage")
def playbook_install(request, key: str):
    try:
        bundle = services.get(key)
    except services.PlaybookError:
        raise Http404(_("No such playbook.")) from None
    try:
        result = services.install(bundle, actor=request.user)
    except services.PlaybookError as exc:
        messages.error(request, _("The playbook could not be installed: %(faults)s")
                       % {"faults": "; ".join(exc.messages())})
        return redirect("playbooks:list")
    changed = [f"{ACTIONS[s.action]}: {s.name}" for s in result.steps if s.action != "unchanged"]
    messages.success(request, _("%(title)s: %(created)d created, %(updated)d updated, %(unchanged)d unchanged.") % {
        "title": bundle.text("title", "en" if (get_language() or "").startswith("en") else "ja"),
        "created": result.count("created"), "updated": result.count("updated"),
        "unchanged": result.count("unchanged")} + (" " + "; ".join(changed) if changed else ""))
    return redirect("playbooks:list")
