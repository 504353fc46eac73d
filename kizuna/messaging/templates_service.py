"""Saving templates: every save is a new, validated, precompiled version."""

from __future__ import annotations

import html as html_lib
import re

from django.db import transaction
from django.utils import timezone

from kizuna.db.writelock import sqlite_writer
from kizuna.messaging import rendering
from kizuna.messaging.models import EmailTemplate, TemplateLink, TemplateVersion

_HREF = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I | re.S)


def static_links(compiled_html: str) -> list[str]:
    """The fixed http(s) links of a version, in order; links built from variables are tracked
    with a signed URL instead (see compose)."""
    found: list[str] = []
    for match in _HREF.finditer(compiled_html):
        url = html_lib.unescape(match.group(1) if match.group(1) is not None else match.group(2)).strip()
        if url.lower().startswith(("http://", "https://")) and "{{" not in url and "{%" not in url:
            if url not in found:
                found.append(url)
    return found


def save_version(template: EmailTemplate, *, subject: str, html: str, text: str = "", preheader: str = "",
                 is_mjml: bool = False, user=None) -> tuple[TemplateVersion, list[str]]:
    """Validates (raises rendering.TemplateProblem), compiles once, stores; returns warnings."""
    warnings = rendering.validate(subject, html, text, mjml=is_mjml, known_variables=rendering.sample_context())
    compiled = rendering.compile_template(subject, html, text, mjml=is_mjml)
    with sqlite_writer(), transaction.atomic():
        last = template.versions.order_by("-number").values_list("number", flat=True).first() or 0
        version = TemplateVersion.objects.create(
            template=template, number=last + 1, subject=subject, preheader=preheader, html=html, text=text,
            is_mjml=is_mjml, compiled_html=compiled.html_source, created_by=user if getattr(user, "pk", None) else None,
        )
        TemplateLink.objects.bulk_create(
            [TemplateLink(version=version, position=n, url=url)
             for n, url in enumerate(static_links(compiled.html_source))]
        )
        EmailTemplate.objects.filter(pk=template.pk).update(current=version, updated_at=timezone.now())
        template.current = version
    return version, warnings
