from django import template
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def duration(ms) -> str:
    """Milliseconds as a person reads them: 45s, 1m 05s, 2h 03m (localised)."""
    try:
        seconds = int(ms or 0) // 1000
    except (TypeError, ValueError):
        return "—"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)dh %(m)02dm") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)dm %(s)02ds") % {"m": minutes, "s": secs}
    return _("%(s)ds") % {"s": secs}


@register.filter
def source_label(kind: str) -> str:
    """search → 検索 etc.; unknown kinds are shown as they are (escaped by the template)."""
    from kizuna.events.queries import SOURCE_CHOICES

    return str(dict(SOURCE_CHOICES).get(kind, kind or dict(SOURCE_CHOICES)["direct"]))
