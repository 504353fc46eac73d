"""Email templates: personalization, the sandbox, MJML, CSS inlining, plain text, tracked links, footer."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from kizuna.messaging import rendering
from kizuna.messaging.rendering import TemplateProblem, compile_template, render, sample_context, validate

HOSTILE = "<script>alert(1)</script>"


def ctx(**contact: object) -> dict:
    context = sample_context()
    context["contact"].update(contact)
    return context


def one(html: str, context: dict | None = None, *, subject: str = "件名", text: str = "", **kwargs: object):
    return render(compile_template(subject, html, text), context if context is not None else sample_context(),
                  **kwargs)


# --- personalization and filters -----------------------------------------------------------------


def test_personalization_in_subject_html_and_text():
    compiled = compile_template("{{ contact.family_name }}様へのご案内",
                                "<p>{{ contact.family_name }} {{ contact.given_name }}様</p>",
                                "{{ contact.company_name }}\n{{ contact.family_name }}様")
    rendered = render(compiled, sample_context())
    assert rendered.subject == "山田様へのご案内"
    assert "<p>山田 太郎様</p>" in rendered.html
    assert rendered.text.startswith("株式会社サンプル製作所\n山田様")
    assert rendered.missing == []


def test_default_filter_replaces_a_missing_or_empty_name():
    html = ('<p>{{ contact.family_name | default("ご担当者", true) }}様</p>'
            '<p>{{ contact.nickname | default("各位") }}</p>')
    rendered = one(html, ctx(family_name=""))
    assert "<p>ご担当者様</p>" in rendered.html
    assert "<p>各位</p>" in rendered.html
    assert rendered.missing == []  # a name with a fallback is not missing


def test_honorific_only_when_a_name_is_present():
    html = "<p>{{ contact.family_name | honorific }}</p><p>[{{ contact.given_name | honorific }}]</p>"
    rendered = one(html, ctx(given_name=""))
    assert "<p>山田 様</p>" in rendered.html
    assert "<p>[]</p>" in rendered.html


def test_date_filter_formats_dates_datetimes_and_iso_strings_in_japan_time():
    html = ('{{ d | date("%Y年%m月%d日") }}|{{ dt | date("%Y年%m月%d日 %H:%M") }}|{{ s | date }}'
            '|{{ d | date("%m月%d日(%J)") }}|{{ n | number }}')
    context = {"d": date(2026, 4, 1), "dt": datetime(2026, 3, 31, 16, 30, tzinfo=UTC), "s": "2026-12-24",
               "n": 1234567}
    rendered = one(html, context)
    assert "2026年04月01日|2026年04月01日 01:30|2026年12月24日|04月01日(水)|1,234,567" in rendered.html


def test_unknown_variable_renders_empty_and_is_reported_with_its_path():
    rendered = one("<p>[{{ contact.nickname }}]</p><p>[{{ request }}]</p>")
    assert "<p>[]</p><p>[]</p>" in rendered.html
    assert rendered.missing == ["contact.nickname", "request"]


# --- escaping and header injection ---------------------------------------------------------------


def test_hostile_contact_values_are_escaped_in_html():
    compiled = compile_template("{{ contact.family_name }}",
                                '<p title="{{ contact.family_name }}">{{ contact.family_name }}</p>',
                                "{{ contact.family_name }}")
    rendered = render(compiled, ctx(family_name=HOSTILE))
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert rendered.text.startswith(HOSTILE)  # plain text is not HTML: raw is right there


def test_generated_text_shows_the_value_not_its_escaping():
    rendered = one("<p>{{ contact.company_name }}</p>", ctx(company_name="A&B <株>"))
    assert "A&B <株>" in rendered.text


def test_subject_cannot_inject_headers():
    rendered = one("<p>x</p>", ctx(family_name="山田\r\nBcc: victim@example.com\n"),
                   subject="{{ contact.family_name }}様\nへのご案内")
    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    assert rendered.subject == "山田 Bcc: victim@example.com 様 へのご案内"


def test_subject_keeps_full_width_spaces():
    assert one("<p>x</p>", subject="【ご案内】　山田様").subject == "【ご案内】　山田様"


# --- validation ------------------------------------------------------------------------------------


def test_syntax_error_names_the_field_and_the_line():
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<p>\nこんにちは\n{% if contact.family_name %}\n<p>{{ contact.family_name }</p>")
    assert caught.value.field == "html"
    assert caught.value.line == 4
    assert "syntax error" in caught.value.message
    assert "line 4" in str(caught.value)


def test_syntax_error_in_the_subject_and_the_text():
    with pytest.raises(TemplateProblem) as caught:
        validate("{{ contact.family_name ", "<p>x</p>")
    assert caught.value.field == "subject"
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<p>x</p>", "1\n2\n{% for x in y %}")
    assert caught.value.field == "text"
    assert caught.value.line == 3


@pytest.mark.parametrize("expression", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ x|attr('__class__') }}",
    "{{ x['__globals__'] }}",
    "{{ contact['__class__'] }}",
    "{{ [contact]|map(attribute='__class__')|list }}",
    "{{ [contact]|map('attr', '__class__')|list }}",
    "{{ [contact]|sort(attribute='x.__class__')|list }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.mro() }}",
    "{% include 'other.html' %}",
    "{% import 'macros.html' as m %}",
])
def test_sandbox_escapes_are_refused_when_the_template_is_saved(expression):
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", f"<p>a</p>\n<p>{expression}</p>")
    assert caught.value.line == 2
    assert caught.value.field == "html"
    # refused by reading the template, before anything runs
    assert any(words in caught.value.message for words in ("Python internals", "not allowed in email templates",
                                                           "not available in email templates"))


def test_sandbox_escape_in_the_subject_is_refused():
    with pytest.raises(TemplateProblem) as caught:
        validate("{{ ''.__class__ }}", "<p>x</p>")
    assert caught.value.field == "subject"
    with pytest.raises(TemplateProblem) as caught:  # the same, found only when it runs
        validate("{{ contact['_' ~ '_class__'] }}", "<p>x</p>")
    assert caught.value.field == "subject" and caught.value.line == 1


@pytest.mark.parametrize("expression", [
    "{{ contact['_' ~ '_class__'] }}",
    "{{ contact.email['_' ~ '_class__'] }}",
    "{% if contact.email['_' ~ '_class__'] %}x{% endif %}",
    "{{ contact.email[name] }}",
])
def test_dynamic_escape_is_stopped_by_the_sandbox_at_render_time(expression):
    known = {**sample_context(), "name": "__class__"}
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", f"<p>x</p>\n<p>{expression}</p>", known_variables=known)
    assert "not allowed" in caught.value.message and "unsafe" in caught.value.message
    assert caught.value.line == 2


@pytest.mark.parametrize("expression", [
    "{{ 2 ** 1000 }}",
    "{{ 'x' * 10000000 }}",
    "{{ 'x'.center(100000000) }}",
    "{{ 'x'|center(100000000) }}",
    "{{ '%100000000d'|format(1) }}",
    "{{ '{:>100000000}'.format(1) }}",
    "{{ range(10000000)|list }}",
    "{{ contact.custom.update({'a': 1}) }}",
])
def test_expensive_or_mutating_expressions_are_refused(expression):
    with pytest.raises(TemplateProblem):
        validate("件名", f"<p>{expression}</p>")


def test_ordinary_expressions_pass_the_limits():
    warnings = validate("件名", "<p>{{ 2 ** 10 }} {{ '-' * 20 }} {{ '%05d'|format(42) }} {{ '{:,}'.format(1234567) }}"
                                " {{ 'x'|center(30) }} {% for i in range(3) %}{{ loop.index }}{% endfor %}</p>")
    assert warnings == []


def test_unknown_variables_are_warnings_not_errors():
    warnings = validate(
        "{{ contact.famly_name }}様",
        "<p>{{ request }}</p>\n<p>{{ contact.family_name }} {{ contact.foo }}</p>\n"
        '<p>{{ contact.nickname | default("各位") }}</p>',
    )
    assert any(w.startswith("Subject, line 1: unknown variable contact.famly_name") for w in warnings)
    assert any("line 1: unknown variable request: it will render empty" in w for w in warnings)
    assert any("line 2: unknown variable contact.foo: it will render empty (use | default" in w for w in warnings)
    assert any("contact.nickname: the fallback will always be used" in w for w in warnings)
    assert not any("family_name " in w or "family_name:" in w for w in warnings)
    assert len(warnings) == 4


def test_known_variables_loops_sets_methods_and_custom_fields_do_not_warn():
    html = """
    {% set greeting = "こんにちは" %}{{ greeting }}
    {% for key, value in contact.custom.items() %}{{ key }}={{ value }}{{ loop.index }}{% endfor %}
    {{ contact.custom.industry_detail }} {{ contact.family_name.upper() }} {{ owner.name }} {{ unsubscribe_url }}
    {% macro button(url) %}<a href="{{ url }}">go</a>{% endmacro %}{{ button(preferences_url) }}
    """
    assert validate("{{ company.name }}", html) == []


def test_known_variables_can_be_given():
    known = {"contact": {"family_name": "山田", "custom": {"rank": "A"}},
             "seminar": {"title": "DX セミナー", "date": "2026-05-01"}}
    html = "<p>{{ seminar.date | date }}</p>{% for k, v in contact.custom.items() %}{{ k }}{{ v }}{% endfor %}"
    assert validate("{{ seminar.title }}", html, known_variables=known) == []
    warnings = validate("{{ seminar.title }}", "<p>{{ contact.custom.region }}</p>", known_variables=known)
    assert len(warnings) == 1 and "unknown variable contact.custom.region" in warnings[0]
    warnings = validate("{{ seminar.title }}", "<p>{{ owner.name }}</p>", known_variables=known)
    assert len(warnings) == 1 and "unknown variable owner.name" in warnings[0]


def test_arithmetic_on_an_unknown_variable_fails_with_a_line():
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<p>x</p>\n<p>{{ contact.points + 1 }}</p>")
    assert caught.value.line == 2
    assert "unknown variable contact.points" in caught.value.message and "default" in caught.value.message
    assert caught.value.field == "html"
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<p>x</p>", "本文\n{{ 1 / 0 }}")
    assert caught.value.field == "text" and caught.value.line == 2


def test_empty_subject_or_body_is_refused():
    with pytest.raises(TemplateProblem) as caught:
        validate("  ", "<p>x</p>")
    assert caught.value.field == "subject"
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "")
    assert caught.value.field == "html"


# --- MJML ----------------------------------------------------------------------------------------

MJML = """<mjml>
  <mj-head><mj-style>.lead { color: #123456; }</mj-style></mj-head>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text css-class="lead">{{ contact.family_name }}様、{{ company.name }}のご担当者様</mj-text>
        {% if contact.job_title %}
        <mj-text>{{ contact.job_title }}</mj-text>
        {% endif %}
        <mj-button href="{{ preferences_url }}?from=mail&amp;x=1">配信設定</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def test_mjml_compiles_to_html_with_jinja_working():
    compiled = compile_template("件名", MJML, mjml=True)
    assert "<mjml" not in compiled.html_source and "<table" in compiled.html_source
    assert "{% if contact.job_title %}" in compiled.html_source
    rendered = render(compiled, ctx(family_name=HOSTILE))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;様" in rendered.html
    assert "情報システム部 部長" in rendered.html
    assert 'href="https://kizuna.example/e/u/sample?from=mail&amp;x=1"' in rendered.html
    without = render(compiled, ctx(job_title=""))
    assert "情報システム部 部長" not in without.html
    assert validate("件名", MJML, mjml=True) == []


def test_mjml_head_preview_title_and_style_take_jinja():
    source = """<mjml><mj-head>
      <mj-title>{{ company.name }}のお知らせ</mj-title>
      <mj-preview>{{ contact.family_name }}様への特別なご案内</mj-preview>
      <mj-style>.brand { color: {{ brand | default('#0b5cd5') }}; }</mj-style>
    </mj-head><mj-body><mj-section><mj-column>
      <mj-text css-class="brand">本文です</mj-text>
    </mj-column></mj-section></mj-body></mjml>"""
    rendered = render(compile_template("件名", source, mjml=True), sample_context())
    assert "<title>株式会社サンプル製作所のお知らせ</title>" in rendered.html
    assert "山田様への特別なご案内" in rendered.html
    assert "color: #0b5cd5" in rendered.html
    assert rendered.text == "本文です\n"  # the hidden preheader is not part of the plain text


def test_mjml_dropping_a_jinja_tag_is_reported_not_silently_lost():
    source = """<mjml><mj-head>
      {% if dark %}<mj-style>.x { color: #fff; }</mj-style>{% endif %}
    </mj-head><mj-body><mj-section><mj-column><mj-text>x</mj-text></mj-column></mj-section></mj-body></mjml>"""
    with pytest.raises(TemplateProblem) as caught:
        compile_template("件名", source, mjml=True)
    assert caught.value.line == 2
    assert "{% if dark %}" in caught.value.message


def test_mjml_error_is_a_template_problem():
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section></mj-body>",
                 mjml=True)
    assert caught.value.field == "html"
    assert "MJML" in caught.value.message
    with pytest.raises(TemplateProblem) as caught:
        validate("件名", "<mjml><mj-body>\n<mj-section>\n<mj-column>\n"
                 '<mj-text {% if x %}color="red"{% endif %}>x</mj-text>', mjml=True)
    assert caught.value.line == 4


# --- CSS inlining ------------------------------------------------------------------------------------

STYLED = """<html><head><style>
p { color: #333333; }
.cta { background: #e60012; }
@media (max-width: 600px) { p { font-size: 18px !important; } }
</style></head><body>
<table>{% for item in items %}<tr><td><p>{{ item }}</p></td></tr>{% endfor %}</table>
<p class="cta" title="{{ contact.family_name }}">{% if n > 3 %}多い{% else %}少ない{% endif %}</p>
<a class="cta" href="{{ url }}?utm_source=mail&amp;utm_campaign={{ campaign }}">詳しくはこちら</a>
</body></html>"""


def test_css_is_inlined_once_at_compile_time_and_jinja_keeps_working():
    compiled = compile_template("件名", STYLED)
    source = compiled.html_source
    assert 'style="color: #333333;"' in source or 'style="color: #333333"' in source
    assert "@media (max-width: 600px)" in source  # media queries stay in <style>
    # Jinja is untouched: not escaped, not moved out of the table, attributes intact
    assert "<table>{% for item in items %}<tr>" in source
    assert "{% if n > 3 %}" in source
    assert 'href="{{ url }}?utm_source=mail&amp;utm_campaign={{ campaign }}"' in source
    assert 'title="{{ contact.family_name }}"' in source
    first = render(compiled, {**sample_context(), "items": ["一", "二"], "n": 5, "url": "https://ex.jp/a",
                              "campaign": "spring"})
    second = render(compiled, {**sample_context(), "items": ["三"], "n": 1, "url": "https://ex.jp/b",
                               "campaign": "fall"})
    assert "<tr><td><p style=\"color: #333333;\">一</p></td></tr><tr><td><p" in first.html
    assert "多い" in first.html and "少ない" in second.html
    assert 'href="https://ex.jp/a?utm_source=mail&amp;utm_campaign=spring"' in first.html
    assert 'href="https://ex.jp/b?utm_source=mail&amp;utm_campaign=fall"' in second.html
    assert "一" not in second.html


def test_a_stored_compiled_source_is_used_as_is():
    compiled = compile_template("{{ contact.family_name }}様", STYLED)
    context = {**sample_context(), "items": ["一"], "n": 5, "url": "https://ex.jp/a", "campaign": "c"}
    again = compile_template("{{ contact.family_name }}様", compiled.html_source, inline=False)
    assert again.html_source == compiled.html_source
    assert render(again, context) == render(compiled, context)
    raw = compile_template("件名", STYLED, inline=False)
    assert raw.html_source == STYLED


def test_css_inlining_merges_with_a_style_attribute_holding_jinja():
    html = ("<html><head><style>p { margin: 0; }</style></head><body>"
            "<p style='color: {{ brand | default(\"#333\") }}'>x</p><p {% if x %}class=\"a\"{% endif %}>y</p>"
            "</body></html>")
    compiled = compile_template("件名", html)
    assert "margin: 0" in compiled.html_source
    rendered = render(compiled, {"brand": "#e60012", "x": True})
    assert "<p style='margin: 0; color: #e60012'>x</p>" in rendered.html
    assert 'class="a">y</p>' in rendered.html


def test_text_that_looks_like_a_placeholder_is_left_alone():
    html = ("<html><head><style>p { margin: 0; }</style></head><body><p>kzj0x <!--kzj1--> kzj3q0x</p>"
            "<p>{{ contact.family_name }}</p></body></html>")
    rendered = one(html)
    assert "<p style=\"margin: 0;\">kzj0x <!--kzj1--> kzj3q0x</p>" in rendered.html
    assert "<p style=\"margin: 0;\">山田</p>" in rendered.html
    mjml = ("<mjml><mj-body><mj-section><mj-column><mj-text>kzj0x {{ contact.family_name }}</mj-text>"
            "</mj-column></mj-section></mj-body></mjml>")
    assert "kzj0x 山田" in render(compile_template("件名", mjml, mjml=True), sample_context()).html


def test_style_sheet_values_from_jinja_are_inlined_as_jinja():
    html = ("<html><head><style>.brand { color: {{ brand }}; }</style></head>"
            '<body><p class="brand">x</p></body></html>')
    rendered = one(html, {"brand": "#00a0e9"})
    assert 'style="color: #00a0e9;"' in rendered.html or 'style="color: #00a0e9"' in rendered.html


# --- links ---------------------------------------------------------------------------------------------

LINKS = """<html><body>
<a href="https://example.co.jp/seminar?id=1&amp;utm=mail">セミナー</a>
<a href='https://example.co.jp/b'>B</a>
<a class="x" href="mailto:info@example.co.jp">メール</a>
<a href="tel:03-1234-5678">電話</a>
<a href="#top">上へ</a>
<a href="https://example.co.jp/private" data-kizuna-notrack>非追跡</a>
<a data-href="https://example.co.jp/not-this" href="HTTPS://example.co.jp/C">C</a>
<a href="https://example.co.jp/b">B again</a>
</body></html>"""


def tracker(calls: list):
    def rewrite(url: str, index: int) -> str:
        calls.append((url, index))
        return f"https://t.kizuna.example/c/{index}?x=1&y=2"
    return rewrite


def test_link_rewriting_in_order_with_entities_and_exclusions():
    calls: list = []
    rendered = one(LINKS, link_rewriter=tracker(calls))
    expected = ["https://example.co.jp/seminar?id=1&utm=mail", "https://example.co.jp/b", "HTTPS://example.co.jp/C",
                "https://example.co.jp/b"]
    assert rendered.links == expected
    assert calls == [(url, n) for n, url in enumerate(expected)]
    html = rendered.html
    assert '<a href="https://t.kizuna.example/c/0?x=1&amp;y=2">セミナー</a>' in html
    assert '<a href="https://t.kizuna.example/c/1?x=1&amp;y=2">B</a>' in html
    assert 'href="mailto:info@example.co.jp"' in html
    assert 'href="tel:03-1234-5678"' in html
    assert 'href="#top"' in html
    assert 'href="https://example.co.jp/private" data-kizuna-notrack' in html
    assert 'data-href="https://example.co.jp/not-this" href="https://t.kizuna.example/c/2?x=1&amp;y=2"' in html


def test_links_built_from_variables_are_tracked_with_their_rendered_url():
    calls: list = []
    rendered = one('<a href="{{ company.website }}/news?c={{ contact.family_name }}">ニュース</a>',
                   link_rewriter=tracker(calls))
    assert rendered.links == ["https://www.example.co.jp/news?c=山田"]


def test_no_rewriter_leaves_links_alone():
    rendered = one(LINKS)
    assert rendered.links == []
    assert 'href="https://example.co.jp/seminar?id=1&amp;utm=mail"' in rendered.html


def test_text_part_gets_the_same_tracked_urls():
    text = ("詳細: https://example.co.jp/seminar?id=1&utm=mail\n"
            "B: https://example.co.jp/b。\n"
            "別ページ: https://example.co.jp/b/other\n"
            "非追跡: https://example.co.jp/private\n")
    calls: list = []
    rendered = one(LINKS, text=text, link_rewriter=tracker(calls))
    assert "詳細: https://t.kizuna.example/c/0?x=1&y=2\n" in rendered.text
    assert "B: https://t.kizuna.example/c/1?x=1&y=2。\n" in rendered.text
    assert "別ページ: https://example.co.jp/b/other\n" in rendered.text  # a longer URL is another page
    assert "非追跡: https://example.co.jp/private\n" in rendered.text


# --- plain text from HTML ----------------------------------------------------------------------------


def test_plain_text_from_html_keeps_japanese_lines_links_and_drops_images():
    long_line = "いつも大変お世話になっております。" * 12
    mixed_line = "Kizuna Marketing Automation のご案内です。 " * 6
    html = f"""<html><head><title>タイトル</title><style>p {{ color: red; }}</style></head><body>
    <table><tr><td><h1>{{{{ contact.family_name }}}}様</h1>
    <p>{long_line}</p>
    <p><img src="https://example.co.jp/logo.png" alt="ロゴ"> <a href="https://example.co.jp/a?b=1&amp;c=2">資料ダウンロード</a></p>
    <p><a href="https://example.co.jp/">https://example.co.jp/</a>
       <a href="mailto:info@example.co.jp">info@example.co.jp</a></p>
    <p>{mixed_line}</p>
    <p>本文&zwnj;&#847;&#8203;です&nbsp;。</p>
    <p>1. 申込 - 受付</p></td></tr></table></body></html>"""
    calls: list = []
    rendered = one(html, link_rewriter=tracker(calls))
    text = rendered.text
    assert "山田様" in text
    assert long_line in text and mixed_line.strip() in text  # not wrapped
    assert "本文です 。" in text  # invisible preheader fillers removed, no-break space made plain
    assert "資料ダウンロード (https://t.kizuna.example/c/0?x=1&y=2)" in text
    assert "https://t.kizuna.example/c/1?x=1&y=2" in text
    assert "info@example.co.jp" in text and "mailto:" not in text
    assert "1. 申込 - 受付" in text
    assert "logo.png" not in text and "ロゴ" not in text
    assert "color: red" not in text and "|" not in text and "#" not in text


# --- footer ----------------------------------------------------------------------------------------------

FOOTER_HTML = ('<div class="footer">株式会社キズナ<br>〒100-0001 東京都千代田区千代田1-1<br>'
               '<a href="https://kizuna.example/e/u/tok" data-kizuna-notrack>配信停止</a></div>')
FOOTER_TEXT = "\n\n--\n株式会社キズナ\n〒100-0001 東京都千代田区千代田1-1\n配信停止: https://kizuna.example/e/u/tok\n"


def test_footer_goes_before_the_end_of_the_body_and_at_the_end_of_the_text():
    calls: list = []
    rendered = one("<html><body><p>本文 https://x</p><a href='https://example.co.jp/'>x</a></BODY></html>",
                   text="本文", link_rewriter=tracker(calls), footer_html=FOOTER_HTML, footer_text=FOOTER_TEXT)
    assert rendered.html.endswith(FOOTER_HTML + "</BODY></html>")
    assert rendered.text == "本文\n\n--\n株式会社キズナ\n〒100-0001 東京都千代田区千代田1-1\n配信停止: https://kizuna.example/e/u/tok\n"
    assert rendered.links == ["https://example.co.jp/"]  # the unsubscribe link is never tracked


def test_footer_is_appended_without_a_body_tag_and_to_generated_text():
    rendered = one("<p>本文</p>", footer_html=FOOTER_HTML, footer_text=FOOTER_TEXT)
    assert rendered.html.endswith(FOOTER_HTML)
    assert rendered.text.startswith("本文\n")
    assert rendered.text.endswith("配信停止: https://kizuna.example/e/u/tok\n")
    assert rendered.text.count("株式会社キズナ") == 1


def test_footer_text_is_derived_from_the_html_footer_when_not_given():
    rendered = one("<p>本文</p>", footer_html=FOOTER_HTML)
    assert "株式会社キズナ" in rendered.text
    assert "配信停止 (https://kizuna.example/e/u/tok)" in rendered.text


# --- environment and sample ----------------------------------------------------------------------------


def test_environments_are_cached_sandboxes():
    html_env, text_env = rendering.make_environment(), rendering.make_environment(False)
    assert html_env is rendering.make_environment(True)
    assert html_env.autoescape is True and text_env.autoescape is False
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert isinstance(html_env, ImmutableSandboxedEnvironment)
    assert "lipsum" not in html_env.globals


def test_sample_context_is_a_japanese_b2b_contact():
    context = sample_context()
    assert context["contact"]["family_name"] == "山田" and context["contact"]["given_name"] == "太郎"
    assert context["contact"]["company_name"] and context["contact"]["job_title"]
    assert isinstance(context["contact"]["custom"], dict)
    assert context["owner"]["name"] and "@" in context["owner"]["email"]
    assert context["unsubscribe_url"].startswith("https://") and context["preferences_url"].startswith("https://")
    context["contact"]["family_name"] = "変更"
    assert sample_context()["contact"]["family_name"] == "山田"  # a fresh copy each time
