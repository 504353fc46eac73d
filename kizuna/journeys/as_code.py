"""Journeys as code: a YAML file a person can review in a pull request, diff between versions and
install on another Kizuna (ready-made playbooks are such files, installed on empty databases).

    dump(journey) -> str          the journey's settings and current graph, stable key order,
                                  Japanese written as UTF-8, every reference by NAME
    load(text, apply=True)        parse, resolve names to ids, check like the builder does, and
                                  create the journey (draft) or give the one with that name a new
                                  version; every fault comes back with its line and column

References — email templates, segments, lists, scoring models, webhooks, other journeys, users
(owners) — are written by name, never by id, because ids differ between installations. The
graph itself is the one `graph.check` accepts, so the paths of its errors (`nodes[2].then`) are
paths in the file too, and they are mapped back to lines through the marks of the composed YAML.

The file is YAML 1.2 with its core types only: `on`, `yes`, `no` are text (YAML 1.1 made `on:
exited` a boolean key), `10:00` is text (not 600) and dates are text (not datetimes), so a
hand-written file means what it looks like; export quotes text only where 1.2 would read a
number, a boolean or null.
Aliases are refused: a journey has no use for them and they can blow a small file up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from kizuna.journeys import engine
from kizuna.journeys import graph as graph_mod
from kizuna.journeys.models import Journey, JourneyVersion
from kizuna.segments import filters

MAX_BYTES = 1024 * 1024
HEADER = "# Kizuna journey. Import it with `kizuna journeys import FILE` or on the journey import page.\n"
TOP_KEYS = ["name", "description", "entry", "reentry_days", "exit_filter", "goal_filter", "trigger", "start", "nodes"]
TRIGGER_KEYS = ["type", "segment", "on", "event", "where", "field", "offset_days", "every", "day", "at", "audience"]
NODE_KEYS = ["id", "type", "label", "duration", "until", "business_days", "time_of_day", "days", "event", "where",
             "timeout", "if", "branches", "holdout", "template", "field", "value", "tag", "stage", "model", "points",
             "list", "message", "webhook", "journey", "name", "next", "then", "else"]
TREE_KEYS = ["all", "any", "not", "segment", "field", "event", "email", "op", "value", "model", "template", "where",
             "count", "within_days"]
# Values a node or a trigger writes only when they differ from what graph.check fills in.
DEFAULTS = {"where": [], "days": 0, "holdout": 0, "name": "", "message": ""}
SETTINGS = ("description", "entry", "reentry_days", "exit_filter", "goal_filter")


# --- YAML dialect --------------------------------------------------------------------------

class _Resolver(yaml.resolver.BaseResolver):
    """YAML 1.2 core scalars: null, true/false, decimal integers and floats; everything else is text."""


for _tag, _regex, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9_]*)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*"
                                r"(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
]:
    _Resolver.add_implicit_resolver(_tag, re.compile(_regex), list(_first))


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
              yaml.constructor.SafeConstructor, _Resolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _Resolver.__init__(self)

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a journey file",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


class _Dumper(yaml.emitter.Emitter, yaml.serializer.Serializer, yaml.representer.SafeRepresenter, _Resolver):
    """Block style, lists indented under their key, multi-line text as a literal block; text is
    quoted only where YAML 1.2 would read it as something else (`'true'`, `'42'`)."""

    def __init__(self, stream, default_style=None, default_flow_style=False, canonical=None, indent=None,
                 width=None, allow_unicode=None, line_break=None, encoding=None, explicit_start=None,
                 explicit_end=None, version=None, tags=None, sort_keys=True):
        yaml.emitter.Emitter.__init__(self, stream, canonical=canonical, indent=indent, width=width,
                                      allow_unicode=allow_unicode, line_break=line_break)
        yaml.serializer.Serializer.__init__(self, encoding=encoding, explicit_start=explicit_start,
                                            explicit_end=explicit_end, version=version, tags=tags)
        yaml.representer.SafeRepresenter.__init__(self, default_style=default_style,
                                                  default_flow_style=default_flow_style, sort_keys=sort_keys)
        _Resolver.__init__(self)

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _text(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


# --- names and ids -------------------------------------------------------------------------

class Names:
    """Every kind of object a journey may name: id → name for export, name → ids for import
    (webhook names need not be unique, so a name can stand for several)."""

    def __init__(self):
        self._by_id: dict[str, dict[int, str]] = {}
        self._by_name: dict[str, dict[str, list[int]]] = {}

    def _load(self, kind: str) -> dict[int, str]:
        if kind not in self._by_id:
            from kizuna.accounts.models import User
            from kizuna.contacts.models import ContactList
            from kizuna.handoff.models import Webhook
            from kizuna.messaging.models import EmailTemplate
            from kizuna.scoring.models import ScoringModel
            from kizuna.segments.models import Segment

            model, column = {"template": (EmailTemplate, "name"), "segment": (Segment, "name"),
                             "list": (ContactList, "name"), "model": (ScoringModel, "name"),
                             "webhook": (Webhook, "name"), "journey": (Journey, "name"),
                             "user": (User, "username")}[kind]
            self._by_id[kind] = dict(model.objects.values_list("id", column))
        return self._by_id[kind]

    def name(self, kind: str, value: Any) -> Any:
        """The name of an id; an id that no longer exists is written so that import names the fault."""
        if isinstance(value, bool) or not isinstance(value, int):
            return value
        return self._load(kind).get(value, f"<missing {WHAT[kind]} #{value}>")

    def ids(self, kind: str, name: str) -> list[int]:
        if kind not in self._by_name:
            by_name: dict[str, list[int]] = {}
            for pk, n in sorted(self._load(kind).items()):
                by_name.setdefault(n, []).append(pk)
            self._by_name[kind] = by_name
        return self._by_name[kind].get(name, [])


WHAT = {"template": "email template", "segment": "segment", "list": "list", "model": "scoring model",
        "webhook": "webhook", "journey": "journey", "user": "user"}


def _ordered(data: dict, order: list[str]) -> dict:
    """The dict in the given key order (the rest sorted), and the flat objects inside it — event
    conditions, durations, counts — in theirs: PostgreSQL's jsonb does not keep key order, and a
    file must not change because the database did."""
    out = {k: data[k] for k in order if k in data}
    out.update({k: data[k] for k in sorted(data, key=str) if k not in out})
    for key in FLAT:
        if key in out:
            out[key] = _flat(out[key])
    return out


FLAT = ("where", "duration", "timeout", "count")
FLAT_KEYS = ["field", "op", "value", "days", "hours", "minutes"]


def _flat(value: Any) -> Any:
    if isinstance(value, list):
        return [_flat(v) for v in value]
    if isinstance(value, dict):
        keys = [k for k in FLAT_KEYS if k in value] + sorted((k for k in value if k not in FLAT_KEYS), key=str)
        return {k: value[k] for k in keys}
    return value


# --- dump ----------------------------------------------------------------------------------

def tree_out(tree: Any, names: Names) -> Any:
    """A checked filter tree with names for ids and the defaults left out."""
    if not isinstance(tree, dict):
        return tree
    if "all" in tree or "any" in tree:
        key = "all" if "all" in tree else "any"
        return {key: [tree_out(c, names) for c in tree[key]]}
    if "not" in tree:
        return {"not": tree_out(tree["not"], names)}
    out = dict(tree)
    if "segment" in out:
        out["segment"] = names.name("segment", out["segment"])
    if out.get("field") == "list":
        out["value"] = names.name("list", out.get("value"))
    if out.get("field") == "owner" and isinstance(out.get("value"), list):
        out["value"] = [names.name("user", v) for v in out["value"]]
    if "model" in out:
        out["model"] = names.name("model", out["model"])
    if "email" in out:
        if out.get("template") is None:
            out.pop("template", None)
        else:
            out["template"] = names.name("template", out["template"])
    if "event" in out or "email" in out:
        if out.get("count") == {"op": "gte", "value": 1}:
            out.pop("count")
        if out.get("within_days") is None:
            out.pop("within_days", None)
        if out.get("where") == []:
            out.pop("where")
    return _ordered(out, TREE_KEYS)


def _trigger_out(trigger: dict, names: Names) -> dict:
    out = dict(trigger)
    if out.get("type") == "segment":
        out["segment"] = names.name("segment", out.get("segment"))
    if "audience" in out:
        out["audience"] = tree_out(out["audience"], names)
    if out.get("where") == []:
        out.pop("where")
    return _ordered(out, TRIGGER_KEYS)


REF_KEYS = {"send_email": ("template", "template"), "score": ("model", "model"), "add_to_list": ("list", "list"),
            "remove_from_list": ("list", "list"), "webhook": ("webhook", "webhook"), "enroll": ("journey", "journey")}


def _node_out(node: dict, names: Names) -> dict:
    out = {}
    for key, value in node.items():
        if key in DEFAULTS and value == DEFAULTS[key]:
            continue
        out[key] = value
    kind = node.get("type")
    if kind in REF_KEYS and REF_KEYS[kind][0] in out:
        out[REF_KEYS[kind][0]] = names.name(REF_KEYS[kind][1], out[REF_KEYS[kind][0]])
    if kind == "condition" and "if" in out:
        out["if"] = tree_out(out["if"], names)
    if kind == "update_field" and node.get("field") == "owner_id":
        out["value"] = names.name("user", out.get("value"))
    if kind == "split":
        out["branches"] = [_ordered({k: v for k, v in b.items() if not (k == "label" and v == "") and v is not None},
                                    ["percent", "label", "next"]) for b in node.get("branches", [])]
    return _ordered(out, NODE_KEYS)


def document(journey: Journey, names: Names | None = None) -> dict:
    """The journey as the plain data its YAML holds."""
    if journey.current_id is None:
        raise ValueError(f"the journey {journey.name!r} has no saved version to export")
    names = names or Names()
    graph = journey.current.graph
    doc: dict[str, Any] = {"name": journey.name}
    if journey.description:
        doc["description"] = journey.description
    doc["entry"] = str(journey.entry)
    if journey.reentry_days:
        doc["reentry_days"] = journey.reentry_days
    for key in ("exit_filter", "goal_filter"):
        if getattr(journey, key):
            doc[key] = tree_out(getattr(journey, key), names)
    doc["trigger"] = _trigger_out(graph["trigger"], names)
    doc["start"] = graph["start"]
    doc["nodes"] = [_node_out(n, names) for n in graph["nodes"]]
    return doc


def dump(journey: Journey) -> str:
    """A reviewable, diffable YAML of the journey's settings and current version."""
    body = yaml.dump(document(journey), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100,
                     default_flow_style=False)
    return HEADER + body


def filename(journey: Journey) -> str:
    """A file name for downloads: the journey's name with what file systems dislike replaced."""
    stem = re.sub(r"[\\/:*?\"<>|\s]+", "-", journey.name).strip("-.") or f"journey-{journey.pk}"
    return f"{stem}.yaml"


# --- load ----------------------------------------------------------------------------------

@dataclass
class Problem:
    """One fault, with where it is: the path in the journey (`nodes[2].template`) and the line
    and column in the file (1-based; None when the file has no such place)."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "the file"
        if not self.path:
            return f"{where}, column {self.column}: {self.message}" if self.column else f"{where}: {self.message}"
        return f"{where}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "line": self.line, "column": self.column}


@dataclass
class Loaded:
    """What `load` found and did. `action`: checked (dry run), created, updated, unchanged, or
    "" when there were errors (then nothing was written)."""

    errors: list[Problem] = field(default_factory=list)
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    graph: dict | None = None
    journey: Journey | None = None
    version: JourneyVersion | None = None
    action: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def _path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _index(node: yaml.Node, path: str, marks: dict[str, yaml.Mark], problems: list[Problem]) -> None:
    """Path → mark of every key and list item; a key given twice is a fault (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            here = _path(path, key)
            if key in seen:
                problems.append(Problem(here, "is given twice", key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1))
            seen.add(key)
            marks[here] = key_node.start_mark
            _index(value_node, here, marks, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            here = _path(path, i)
            marks[here] = item.start_mark
            _index(item, here, marks, problems)


_PARENT = re.compile(r"(\.[^.\[\]]*|\[\d+\])$")


def _locate(path: str, marks: dict[str, yaml.Mark]) -> tuple[int | None, int | None]:
    """The line and column of the deepest part of `path` the file has (a missing key: its parent)."""
    probe = path
    while probe:
        if probe in marks:
            return marks[probe].line + 1, marks[probe].column + 1
        shorter = _PARENT.sub("", probe)
        if shorter == probe:
            break
        probe = shorter
    return (1, 1) if marks else (None, None)


class _Resolve:
    """Names → ids, collecting a fault (with its path) for every name that names nothing."""

    def __init__(self, names: Names, refs: graph_mod.Refs):
        self.names, self.refs = names, refs
        self.errors: list[tuple[str, str]] = []

    def one(self, kind: str, value: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str):
            self.errors.append((path, f"must be the name of a {WHAT[kind]} (names, not ids, keep the file "
                                      "portable between installations)"))
            return value
        ids = self.names.ids(kind, value)
        if not ids:
            self.errors.append((path, f"no {WHAT[kind]} named {value!r}"))
            return value
        if len(ids) > 1:
            self.errors.append((path, f"{len(ids)} {WHAT[kind]}s are named {value!r}: rename all but one"))
            return value
        if kind == "template" and ids[0] not in self.refs.templates:
            self.errors.append((path, f"the email template {value!r} has no saved version (or no sender) yet"))
            return value
        return ids[0]

    def tree(self, tree: Any, path: str) -> Any:
        if not isinstance(tree, dict):
            return tree
        at = (lambda key: _path(path, key))  # noqa: E731
        if "all" in tree or "any" in tree:
            key = "all" if "all" in tree else "any"
            if isinstance(tree[key], list):
                return {**tree, key: [self.tree(c, _path(at(key), i)) for i, c in enumerate(tree[key])]}
            return tree
        if "not" in tree:
            return {**tree, "not": self.tree(tree["not"], at("not"))}
        out = dict(tree)
        if "segment" in out and "field" not in out:
            out["segment"] = self.one("segment", out["segment"], at("segment"))
        if out.get("field") == "list" and "value" in out:
            out["value"] = self.one("list", out["value"], at("value"))
        if out.get("field") == "owner" and isinstance(out.get("value"), list):
            out["value"] = [self.one("user", v, _path(at("value"), i)) for i, v in enumerate(out["value"])]
        if "model" in out:
            out["model"] = self.one("model", out["model"], at("model"))
        if "email" in out and out.get("template") is not None:
            out["template"] = self.one("template", out["template"], at("template"))
        return out

    def trigger(self, trigger: Any) -> Any:
        if not isinstance(trigger, dict):
            return trigger
        out = dict(trigger)
        if out.get("type") == "segment" and "segment" in out:
            out["segment"] = self.one("segment", out["segment"], "trigger.segment")
        if "audience" in out:
            out["audience"] = self.tree(out["audience"], "trigger.audience")
        return out

    def node(self, node: Any, i: int) -> Any:
        if not isinstance(node, dict):
            return node
        path, kind, out = f"nodes[{i}]", node.get("type"), dict(node)
        if kind in REF_KEYS and REF_KEYS[kind][0] in out:
            key, what = REF_KEYS[kind]
            out[key] = self.one(what, out[key], f"{path}.{key}")
        if kind == "condition" and "if" in out:
            out["if"] = self.tree(out["if"], f"{path}.if")
        if kind == "update_field" and out.get("field") == "owner_id" and out.get("value") is not None:
            out["value"] = self.one("user", out["value"], f"{path}.value")
        return out


def _settings(doc: dict, errors: list[tuple[str, str]]) -> dict[str, Any]:
    """The journey's own settings from the file, each checked like the journey's model field."""
    out: dict[str, Any] = {}
    description = doc.get("description") or ""
    if not isinstance(description, str) or len(description) > 500:
        errors.append(("description", "must be a text of at most 500 characters"))
        description = ""
    out["description"] = description.strip()
    entry = doc.get("entry", Journey.Entry.ONCE)
    if entry not in Journey.Entry.values:
        errors.append(("entry", f"must be one of {', '.join(Journey.Entry.values)}"))
        entry = Journey.Entry.ONCE
    out["entry"] = entry
    days = doc.get("reentry_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650):
        errors.append(("reentry_days", "must be a whole number of days from 1 to 3650, or null"))
        days = None
    out["reentry_days"] = days
    return out


def _dedupe(first: list[tuple[str, str]], then: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`then` without the faults at (or inside) a place `first` already names: an unknown name
    is reported once, as an unknown name, not again as an unknown id."""
    taken = {p for p, _m in first}

    def covered(path: str) -> bool:
        return any(path == t or path.startswith(t + ".") or path.startswith(t + "[") for t in taken)

    return first + [(p, m) for p, m in then if not covered(p)]


def parse(text: str | bytes) -> tuple[Any, dict[str, yaml.Mark], list[Problem]]:
    """(data, marks by path, syntax problems) of a YAML text."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            return None, {}, [Problem("", f"the file is larger than {MAX_BYTES // 1024} KiB")]
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, {}, [Problem("", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})")]
    if len(text.encode()) > MAX_BYTES:
        return None, {}, [Problem("", f"the file is larger than {MAX_BYTES // 1024} KiB")]
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, controls)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return None, {}, [Problem("", f"character #x{exc.character:04x} is not allowed in YAML", line, column)]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, [Problem("", "the file is empty: it must describe one journey", 1, 1)]
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "not valid YAML"
        if isinstance(exc, yaml.composer.ComposerError) and "expected a single document" in message:
            message = "one journey per file: the file has a second document (---)"
        return None, {}, [Problem("", message, mark.line + 1 if mark else None, mark.column + 1 if mark else None)]
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        return None, {}, [Problem("", f"character #x{exc.character:04x} is not allowed in YAML", line)]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, {}, [Problem("", f"not valid YAML: {exc}")]
    finally:
        loader.dispose()
    marks: dict[str, yaml.Mark] = {"": node.start_mark}
    problems: list[Problem] = []
    _index(node, "", marks, problems)
    return data, marks, problems


def load(text: str | bytes, *, apply: bool = True) -> Loaded:
    """Reads a journey file. With `apply`, creates the journey (as a draft) or updates the one of
    that name — a new version only when its graph or settings changed; without, only checks.
    Every fault is returned with its line; nothing is written when there is one."""
    data, marks, problems = parse(text)
    result = Loaded()
    if data is None and not problems:
        problems = [Problem("", "the file is empty: it must describe one journey", 1, 1)]
    if problems:
        result.errors = problems
        return result
    if not isinstance(data, dict):
        line, column = _locate("", marks)
        result.errors = [Problem("", "must be a mapping with name, trigger and nodes (see an exported journey)",
                                 line, column)]
        return result
    errors: list[tuple[str, str]] = [(k if isinstance(k, str) else str(k), "is not allowed here (allowed: "
                                      + ", ".join(TOP_KEYS) + ")") for k in data if k not in TOP_KEYS]
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 150:
        errors.append(("name", "is required: a text of at most 150 characters"))
        name = ""
    result.name = name = name.strip()
    settings = _settings(data, errors)
    existing = Journey.objects.filter(name=name).select_related("current").first() if name else None
    refs = graph_mod.Refs.load()
    resolve = _Resolve(Names(), refs)
    graph_in = {k: data[k] for k in ("trigger", "start", "nodes") if k in data}
    if "trigger" in graph_in:
        graph_in["trigger"] = resolve.trigger(graph_in["trigger"])
    if isinstance(graph_in.get("nodes"), list):
        graph_in["nodes"] = [resolve.node(n, i) for i, n in enumerate(graph_in["nodes"])]
    trees = {key: resolve.tree(data.get(key), key) for key in ("exit_filter", "goal_filter")}
    checked_errors: list[tuple[str, str]] = []
    checked = None
    try:
        checked = graph_mod.check(graph_in, refs, journey_id=existing.pk if existing else None)
    except graph_mod.GraphError as exc:
        checked_errors += [(("" if p == "graph" else p), m) for p, m in exc.errors]
    for key, tree in trees.items():
        if tree in (None, {}):
            settings[key] = None
            continue
        try:
            settings[key] = filters.check(tree, refs.filter_ctx or filters.Context.load())
        except filters.FilterError as exc:
            checked_errors.append((key if exc.path == "filter" else f"{key}.{exc.path}", exc.message))
    errors = _dedupe(errors + resolve.errors, checked_errors)
    result.settings, result.graph = settings, checked
    if errors:
        result.errors = sorted((Problem(p, m, *_locate(p, marks)) for p, m in errors),
                               key=lambda e: (e.line or 0, e.column or 0))
        return result
    result.journey = existing
    if not apply:
        result.action = "checked"
        return result
    return _apply(result, existing, refs)


def _apply(result: Loaded, existing: Journey | None, refs: graph_mod.Refs) -> Loaded:
    settings = result.settings
    if existing is not None and existing.current is not None and existing.current.graph == result.graph and all(
            getattr(existing, k) == settings[k] for k in SETTINGS):
        result.action, result.version = "unchanged", existing.current
        return result
    journey = existing or Journey(name=result.name)
    for key in SETTINGS:
        setattr(journey, key, settings[key])
    try:
        result.version = engine.save_journey(journey, result.graph, refs=refs)
    except graph_mod.GraphError as exc:  # something it names was deleted since the check
        result.errors = [Problem(p, m) for p, m in exc.errors]
        return result
    result.journey, result.action = journey, "updated" if existing else "created"
    return result
