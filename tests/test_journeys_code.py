"""Journeys as code: the YAML export is faithful (dump → load gives the same graph and settings for
every kind of step), names travel instead of ids, every fault comes back with its line, importing
the same file twice makes one version, and the `kizuna journeys` command does the same."""

from __future__ import annotations

import io
import textwrap

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kizuna.contacts.models import ContactList, CustomField
from kizuna.handoff.models import Webhook
from kizuna.journeys import as_code, engine
from kizuna.journeys.models import Journey, JourneyVersion
from kizuna.scoring.setup import ensure_defaults
from kizuna.segments import membership
from kizuna.segments.models import Segment
from tests.journeyhelp import journey, make_world, template

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db, make_user):
    w = make_world()
    w["owner"] = make_user("sales", username="sato")
    w["model"] = ensure_defaults()
    w["case"] = template(w, "導入事例のご紹介")
    w["pricing"] = template(w, "料金のご案内")
    w["segment"] = membership.save_segment(Segment.objects.create(name="製造業の見込み客"),
                                           {"field": "industry", "op": "in", "value": ["manufacturing"]})
    w["list"] = ContactList.objects.create(name="DXセミナー参加者")
    w["hook"] = Webhook.objects.create(name="CRM", kind="json", url="http://127.0.0.1:9/hook", secret="s")
    w["other"] = journey("Nurture B", {"trigger": {"type": "manual"}, "nodes": [{"id": "x", "type": "exit"}]},
                         live=False)
    CustomField.objects.create(key="renewal_date", label="契約更新日", field_type="date", target="contact")
    CustomField.objects.create(key="plan", label="プラン", field_type="text", target="contact")
    return w


def every_step(w) -> dict:
    """A graph with every node type and every form of wait, and references of every kind."""
    return {
        "trigger": {"type": "segment", "segment": w["segment"].pk, "on": "entered"},
        "start": "hello",
        "nodes": [
            {"id": "hello", "type": "send_email", "template": w["case"].pk, "label": "ご挨拶", "next": "w1"},
            {"id": "w1", "type": "wait", "duration": {"days": 3, "hours": 2}, "next": "w2"},
            {"id": "w2", "type": "wait", "time_of_day": "10:00", "days": 1, "next": "w3"},
            {"id": "w3", "type": "wait", "business_days": 2, "time_of_day": "09:30", "next": "w4"},
            {"id": "w4", "type": "wait", "until": "2026-12-01T10:00:00+09:00", "next": "booked"},
            {"id": "booked", "type": "wait_event", "event": "Meeting Booked", "timeout": {"days": 7},
             "where": [{"field": "properties.kind", "op": "equals", "value": "demo"}], "then": "won", "else": "cond"},
            {"id": "cond", "type": "condition", "if": {"all": [
                {"segment": w["segment"].pk},
                {"field": "list", "op": "in", "value": w["list"].pk},
                {"field": "score.engagement", "op": "gte", "value": 20, "model": w["model"].pk},
                {"field": "owner", "op": "in", "value": [w["owner"].pk]},
                {"not": {"email": "clicked", "template": w["pricing"].pk, "within_days": 30}},
                {"event": "page", "where": [{"field": "path", "op": "starts_with", "value": "/pricing"}],
                 "count": {"op": "gte", "value": 2}, "within_days": 30}]}, "then": "split", "else": "bye"},
            {"id": "split", "type": "split", "branches": [{"percent": 45, "next": "f1", "label": "A"},
                                                          {"percent": 45, "next": "t1"}], "holdout": 10},
            {"id": "f1", "type": "update_field", "field": "custom.plan", "value": "pro", "next": "f2"},
            {"id": "f2", "type": "update_field", "field": "owner_id", "value": w["owner"].pk, "next": "t1"},
            {"id": "t1", "type": "add_tag", "tag": "育成中", "next": "t2"},
            {"id": "t2", "type": "remove_tag", "tag": "cold", "next": "st"},
            {"id": "st", "type": "set_stage", "stage": "mql", "next": "sc"},
            {"id": "sc", "type": "score", "model": w["model"].pk, "points": -5, "next": "l1"},
            {"id": "l1", "type": "add_to_list", "list": w["list"].pk, "next": "l2"},
            {"id": "l2", "type": "remove_from_list", "list": w["list"].pk, "next": "al"},
            {"id": "al", "type": "alert_owner", "message": "フォローをお願いします。\n二行目", "next": "wh"},
            {"id": "wh", "type": "webhook", "webhook": w["hook"].pk, "next": "en"},
            {"id": "en", "type": "enroll", "journey": w["other"].pk, "next": "g"},
            {"id": "g", "type": "goal", "name": "MQL", "next": "loop"},
            {"id": "loop", "type": "wait", "duration": {"days": 30}, "next": "cond"},
            {"id": "won", "type": "goal"},
            {"id": "bye", "type": "exit"},
        ]}


def big_journey(w) -> Journey:
    return journey("展示会フォロー", every_step(w), live=False, description="展示会の後の\nフォロー",
                   entry="every_time", reentry_days=30,
                   exit_filter={"field": "consent.news", "op": "in", "value": ["opted_out"]},
                   goal_filter={"any": [{"event": "Meeting Booked"}, {"field": "lifecycle_stage", "op": "in",
                                                                       "value": ["sql"]}]})


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth - 1]


def test_dump_then_load_is_the_identity_on_every_step_and_names_replace_ids(world):
    j = big_journey(world)
    text = as_code.dump(j)
    assert text == as_code.dump(j) == as_code.dump(Journey.objects.get(pk=j.pk))  # stable, whatever the database
    assert "導入事例のご紹介" in text and "\\u" not in text  # UTF-8, not escaped
    assert "template: 導入事例のご紹介" in text and "segment: 製造業の見込み客" in text
    assert "list: DXセミナー参加者" in text and "webhook: CRM" in text and "journey: Nurture B" in text
    assert "model: Default" in text or f"model: {world['model'].name}" in text
    assert "- sato" in text and "value: sato" in text
    assert text.index("name:") < text.index("entry:") < text.index("trigger:") < text.index("nodes:")
    assert "time_of_day: 10:00\n" in text and "  on: entered\n" in text  # YAML 1.2: text as it looks
    loaded = as_code.load(text, apply=False)
    assert loaded.ok, [str(e) for e in loaded.errors]
    assert loaded.action == "checked"
    assert loaded.graph == j.current.graph
    assert loaded.settings == {k: getattr(j, k) for k in as_code.SETTINGS}


def test_importing_the_same_file_twice_makes_one_version_and_a_change_makes_another(world):
    text = as_code.dump(big_journey(world))
    Journey.objects.filter(name="展示会フォロー").delete()
    first = as_code.load(text)
    assert first.ok and first.action == "created" and first.journey.status == "draft"
    second = as_code.load(text)
    assert second.ok and second.action == "unchanged"
    assert JourneyVersion.objects.filter(journey=first.journey).count() == 1
    changed = as_code.load(text.replace("reentry_days: 30", "reentry_days: 14"))
    assert changed.action == "updated" and changed.version.number == 2
    assert Journey.objects.get(pk=first.journey.pk).reentry_days == 14
    regraphed = as_code.load(text.replace("tag: 育成中", "tag: 検討中"))
    assert regraphed.action == "updated" and regraphed.version.number == 3


def test_a_hand_written_file_reads_on_yes_and_times_as_text():
    text = textwrap.dedent("""\
        name: Left the trial
        trigger:
          type: manual
        nodes:
          - id: wait
            type: wait
            time_of_day: 10:00
            next: tag
          - id: tag
            type: add_tag
            tag: yes
        """)
    loaded = as_code.load(text, apply=False)
    assert loaded.ok, [str(e) for e in loaded.errors]
    assert loaded.graph["nodes"][0]["time_of_day"] == "10:00" and loaded.graph["nodes"][1]["tag"] == "yes"


def test_a_syntax_error_has_its_line_and_column(db):
    text = "name: Broken\ntrigger:\n  type: manual\nnodes:\n  - id: a\n    type: exit\n   bad: [1, 2\n"
    loaded = as_code.load(text)
    assert not loaded.ok and len(loaded.errors) == 1
    error = loaded.errors[0]
    assert (error.line, error.column) == (7, 4), str(error)
    assert str(error).startswith("line 7, column 4: ")
    assert not Journey.objects.exists()


def test_unknown_names_a_loop_without_a_wait_and_bad_values_each_have_their_line(world):
    text = textwrap.dedent("""\
        name: Pricing follow-up
        entry: sometimes
        trigger:
          type: event
          event: page
          where:
            - field: path
              op: starts_with
              value: /pricing
        nodes:
          - id: mail
            type: send_email
            template: Case study
            next: check
          - id: check
            type: condition
            if:
              segment: No such segment
            then: mail
            else: done
          - id: done
            type: add_tag
        """)
    loaded = as_code.load(text)
    got = [(e.line, e.path, e.message) for e in loaded.errors]
    assert got[0] == (2, "entry", "must be one of once, one_at_a_time, every_time")
    assert got[1] == (13, "nodes[0].template", "no email template named 'Case study'")
    assert got[2] == (18, "nodes[1].if.segment", "no segment named 'No such segment'")
    assert got[3] == (21, "nodes[2].tag", "must be a text of at most 100 characters, not empty")  # its step's line
    assert len(got) == 4
    assert str(loaded.errors[1]) == "line 13: nodes[0].template: no email template named 'Case study'"
    assert not Journey.objects.filter(name="Pricing follow-up").exists()


def test_a_loop_without_a_wait_points_at_the_edge_that_closes_it(world):
    text = textwrap.dedent(f"""\
        name: Loop
        trigger: {{type: manual}}
        nodes:
          - id: a
            type: add_tag
            tag: x
            next: b
          - id: b
            type: send_email
            template: {world['case'].name}
            next: c
          - id: c
            type: condition
            if: {{field: industry, op: is_set}}
            then: a
            else: null
        """)
    loaded = as_code.load(text)
    assert [(e.line, e.path) for e in loaded.errors] == [(15, "nodes[2].then")]
    assert loaded.errors[0].message == "loops back to 'a' without a wait in between"


def test_a_deleted_segment_is_named_at_its_line_when_the_file_is_imported_again(world):
    j = journey("Welcome", {"trigger": {"type": "segment", "segment": world["segment"].pk},
                            "nodes": [{"id": "t", "type": "add_tag", "tag": "welcome"}]}, live=False,
                exit_filter={"not": {"segment": world["segment"].pk}})
    text = as_code.dump(j)
    segment_id = world["segment"].pk
    world["segment"].delete()
    loaded = as_code.load(text)
    gone = "no segment named '製造業の見込み客'"
    assert [(e.line, e.path, e.message) for e in loaded.errors] == [
        (line_of(text, "segment: 製造業の見込み客", 1), "exit_filter.not.segment", gone),
        (line_of(text, "segment: 製造業の見込み客", 2), "trigger.segment", gone),
    ]
    assert j.versions.count() == 1
    # The journey as saved now names a segment that is gone: its export says which, and import refuses it.
    exported = as_code.dump(Journey.objects.get(pk=j.pk))
    assert f"segment: '<missing segment #{segment_id}>'" in exported
    assert not as_code.load(exported).ok


def test_ids_duplicate_keys_aliases_and_second_documents_are_refused(world):
    base = "name: X\ntrigger: {type: manual}\nnodes:\n  - id: m\n    type: send_email\n    template: %s\n"
    by_id = as_code.load(base % world["case"].pk)
    assert [(e.line, e.path) for e in by_id.errors] == [(6, "nodes[0].template")]
    assert "names, not ids" in by_id.errors[0].message
    twice = as_code.load("name: X\nname: Y\ntrigger: {type: manual}\nnodes: [{id: a, type: exit}]\n")
    assert [(e.line, e.path, e.message) for e in twice.errors] == [(2, "name", "is given twice")]
    alias = as_code.load("name: &n X\ndescription: *n\ntrigger: {type: manual}\nnodes: [{id: a, type: exit}]\n")
    assert alias.errors[0].line == 2 and "aliases" in alias.errors[0].message
    two = as_code.load("name: X\ntrigger: {type: manual}\nnodes: [{id: a, type: exit}]\n---\nname: Y\n")
    assert two.errors[0].line == 4 and "one journey per file" in two.errors[0].message
    for bad in ("", "- a\n- b\n", b"\xff\xfe", "just text"):
        assert not as_code.load(bad).ok
    Webhook.objects.create(name="CRM", kind="json", url="http://127.0.0.1:9/other", secret="t")
    hooked = as_code.load("name: X\ntrigger: {type: manual}\nnodes: [{id: h, type: webhook, webhook: CRM}]\n")
    assert hooked.errors[0].message == "2 webhooks are named 'CRM': rename all but one"
    assert not Journey.objects.filter(name="X").exists()


def test_a_file_exported_from_one_installation_imports_on_another_with_other_ids(world):
    text = as_code.dump(big_journey(world))
    Journey.objects.filter(name="展示会フォロー").delete()
    # The other installation made the same objects in another order: other ids, same names.
    world["case"].delete()
    template(world, "導入事例のご紹介")
    loaded = as_code.load(text)
    assert loaded.ok, [str(e) for e in loaded.errors]
    assert loaded.graph["nodes"][0]["template"] != world["case"].pk
    assert engine.problems(loaded.journey) == []


def test_the_journeys_command_exports_imports_and_reports_lines(world, tmp_path):
    big_journey(world)
    out = io.StringIO()
    call_command("journeys", "export", "展示会フォロー", stdout=out)
    assert out.getvalue() == as_code.dump(Journey.objects.get(name="展示会フォロー"))
    target = tmp_path / "j.yaml"
    call_command("journeys", "export", "展示会フォロー", "-o", str(target), stdout=io.StringIO())
    assert target.read_text(encoding="utf-8") == out.getvalue()
    said = io.StringIO()
    call_command("journeys", "import", str(target), stdout=said)
    assert "unchanged" in said.getvalue()
    bad = tmp_path / "bad.yaml"
    bad.write_text(out.getvalue().replace("template: 料金のご案内", "template: Nothing"), encoding="utf-8")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("journeys", "import", str(bad), "--dry-run", stdout=io.StringIO(), stderr=err)
    assert f"{bad}:{line_of(bad.read_text(encoding='utf-8'), 'template: Nothing')}:" in err.getvalue()
    assert "no email template named 'Nothing'" in err.getvalue()
    with pytest.raises(CommandError, match="no journey named"):
        call_command("journeys", "export", "Nope", stdout=io.StringIO())


# --- the pages -----------------------------------------------------------------------------

def test_the_import_page_checks_imports_and_highlights_faulty_lines(client, make_user, world):
    client.force_login(make_user("marketer", username="mk"))
    assert b'href="/journeys/import/"' in client.get("/journeys/").content  # reached from the journeys list
    page = client.get("/journeys/import/")
    assert page.status_code == 200 and b"data-import-form" in page.content
    good = as_code.dump(big_journey(world)).replace("name: 展示会フォロー", "name: 新シナリオ")
    checked = client.post("/journeys/import/", {"text": good, "dry_run": "1"}, follow=True)
    assert checked.status_code == 200 and not Journey.objects.filter(name="新シナリオ").exists()
    assert "msg-success" in checked.content.decode() and "“新シナリオ”" in checked.content.decode()
    imported = client.post("/journeys/import/", {"text": good})
    assert imported.status_code == 200 and b"data-imported" in imported.content
    made = Journey.objects.get(name="新シナリオ")
    assert f"/journeys/{made.pk}/simulate/" in imported.content.decode()
    bad = good.replace("template: 料金のご案内", "template: <b>Nothing</b>")
    refused = client.post("/journeys/import/", {"text": bad})
    html = refused.content.decode()
    line = line_of(bad, "<b>Nothing</b>")
    assert refused.status_code == 400 and f'id="yaml-line-{line}"' in html
    assert f'<div class="yaml-line has-error" id="yaml-line-{line}">' in html
    assert "&lt;b&gt;Nothing&lt;/b&gt;" in html and "<b>Nothing</b>" not in html  # escaped everywhere
    upload = io.BytesIO(b"name: [broken\n")
    upload.name = "broken.yaml"
    sent = client.post("/journeys/import/", {"file": upload})
    assert sent.status_code == 400 and 'id="yaml-line-1"' in sent.content.decode()
    assert client.post("/journeys/import/", {}).status_code == 400
    client.force_login(make_user("viewer", username="vw"))
    assert client.get("/journeys/import/").status_code == 403


def test_the_export_view_downloads_the_yaml(client, make_user, world):
    j = big_journey(world)
    client.force_login(make_user("viewer", username="vw"))
    got = client.get(f"/journeys/{j.pk}/export.yaml")
    assert got.status_code == 200 and got["Content-Type"] == "text/yaml; charset=utf-8"
    assert got.content.decode() == as_code.dump(j) and "attachment" in got["Content-Disposition"]
    builder = client.get(f"/journeys/{j.pk}/").content.decode()  # the journey's page links to both
    assert f'href="/journeys/{j.pk}/export.yaml"' in builder and f'href="/journeys/{j.pk}/simulate/"' in builder
    empty = Journey.objects.create(name="Empty")
    assert client.get(f"/journeys/{empty.pk}/export.yaml").status_code == 404
