"""Templates: personalization in a Jinja2 sandbox, MJML, CSS inlining, plain text, tracked links.

Marketers write templates, so a template is untrusted code: it runs in Jinja2's immutable
sandbox, anything that reaches for Python internals (`__class__`, `attr('__…')`) is refused when
the template is saved, and contacts' values are escaped in HTML. Per version, MJML → HTML and CSS
inlining run once (`compile_template`); per message only Jinja and the link rewriting run.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
import html2text
import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)
from jinja2.utils import missing as _MISSING
from markupsafe import Markup


class TemplateProblem(Exception):
    """A template that cannot be saved: the message says what and where."""

    def __init__(self, message: str, *, field: str = "html", line: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.line = line

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.field}: {self.message}{where}"


# --- environment ----------------------------------------------------------------------------------

# (names that came out undefined, the context they were looked up in) for the render under way
_recording: ContextVar[tuple[list[str], dict[str, Any]] | None] = ContextVar("kizuna_missing", default=None)


def _path_of(target: Any, context: dict[str, Any]) -> str | None:
    """Where a dict sits in the context (by identity), so `contact.foo` is reported, not `foo`."""
    stack: list[tuple[str, Any, int]] = [(key, value, 1) for key, value in context.items()]
    while stack:
        path, value, depth = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict) and depth < 5:
            stack.extend((f"{path}.{k}", v, depth + 1) for k, v in value.items() if isinstance(v, dict))
    return None


class RecordingUndefined(jinja2.Undefined):
    """Renders as empty and notes the missing name, so a typo is warned about, not fatal; a sandbox
    refusal (`''.__class__`) is raised instead of rendering empty, so it cannot go unnoticed."""

    __slots__ = ()

    def _path(self) -> str:
        name = str(self._undefined_name or "?")
        obj = self._undefined_obj
        if isinstance(obj, RecordingUndefined):
            return f"{obj._path()}.{name}"
        if obj is _MISSING:
            return name
        state = _recording.get()
        prefix = _path_of(obj, state[1]) if state is not None else None
        return f"{prefix}.{name}" if prefix else name

    @property
    def _undefined_message(self) -> str:
        return self._undefined_hint or f"unknown variable {self._path()}"

    def _note(self) -> None:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        state = _recording.get()
        if state is not None:
            state[0].append(self._path())

    def __str__(self) -> str:
        self._note()
        return ""

    def __iter__(self) -> Iterator[Any]:
        self._note()
        return iter(())

    def __bool__(self) -> bool:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return False

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return RecordingUndefined(obj=self, name=name)


_WEEKDAYS_JA = "月火水木金土日"


def _honorific(value: Any, suffix: str = "様") -> str:
    """`山田 | honorific` → `山田 様`; nothing at all when the name is missing, never a bare 様."""
    text = str(value).strip() if value is not None else ""
    return f"{text} {suffix}" if text else ""


def _date(value: Any, fmt: str = "%Y年%m月%d日", tz: str = "Asia/Tokyo") -> str:
    """strftime for dates, datetimes and ISO strings; `%J` is the Japanese weekday (月…日). Aware
    datetimes are shown in Japan time, since they are stored in UTC."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, date):
        return str(value) if isinstance(value, jinja2.Undefined) else ""
    if isinstance(value, datetime) and value.tzinfo is not None and tz:
        value = value.astimezone(ZoneInfo(tz))
    return value.strftime(fmt.replace("%J", _WEEKDAYS_JA[value.weekday()]))


def _number(value: Any) -> str:
    """1234567 → 1,234,567 (yen amounts, seats…); anything else as is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:,}"


_LIMIT = 10_000  # widths, paddings and repeats beyond this are a denial of service, not a layout
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(?:\d{5,}|\*)|\{[^{}]*:[^{}]*(?:\d{5,}|\{)")  # %99999d, %*d, {:>99999}, {:{w}}
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_UNSAFE_NAMES = (UNSAFE_FUNCTION_ATTRIBUTES | UNSAFE_METHOD_ATTRIBUTES | UNSAFE_GENERATOR_ATTRIBUTES
                 | UNSAFE_COROUTINE_ATTRIBUTES | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES | {"mro"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on the few operations that can exhaust a worker
    (`9 ** 9 ** 9`, `'x' * 10**9`, `'x'.center(10**9)`): one template runs for 20,000 contacts."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 100 and isinstance(left, int | float) and abs(left) > 1:
                raise SecurityError("the exponent is too large")
            return left**right
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > _LIMIT * 10:
                    raise SecurityError("the repeated text is too long")
            return left * right
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(__obj, "__name__", "")
        if name in _PADDING_METHODS and any(isinstance(a, int) and a > _LIMIT for a in (*args, *kwargs.values())):
            raise SecurityError(f"{name}() with a width over {_LIMIT} is not allowed")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _WIDE_FORMAT.search(value.__self__):

            def refuse(*args: Any, **kwargs: Any) -> str:
                raise SecurityError("a format width over 9999 is not allowed")

            return refuse
        return wrapped


def _limited(filter_func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Wraps a builtin filter so a huge width argument is refused rather than allocated."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        values = [*args, *kwargs.values()]
        if name == "format":
            too_wide = bool(values) and isinstance(values[0], str) and bool(_WIDE_FORMAT.search(values[0]))
        else:
            too_wide = any(isinstance(a, int) and not isinstance(a, bool) and a > _LIMIT for a in values[1:])
        if too_wide:
            raise SecurityError(f"the {name} filter with a width over {_LIMIT} is not allowed")
        return filter_func(*args, **kwargs)

    for attribute in ("jinja_pass_arg",):
        if hasattr(filter_func, attribute):
            setattr(checked, attribute, getattr(filter_func, attribute))
    return checked


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, undefined=RecordingUndefined, keep_trailing_newline=True)
    env.globals.pop("lipsum", None)  # lipsum(n=10**6) is a cheap way to stall a send
    env.filters["honorific"] = _honorific
    env.filters["date"] = _date
    env.filters["number"] = _number
    for name in ("format", "center", "indent"):
        env.filters[name] = _limited(env.filters[name], name)
    return env


def make_environment(autoescape: bool = True) -> ImmutableSandboxedEnvironment:
    """The shared sandbox: autoescaped for HTML, raw for the subject and the plain text."""
    return _environments[bool(autoescape)]


_environments = {True: _environment(True), False: _environment(False)}


# --- validation ---------------------------------------------------------------------------------

# filters that read an attribute named by a string argument: `map(attribute='__class__')`
_ATTRIBUTE_FILTERS = frozenset({"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max",
                                "dictsort"})
_NOT_AVAILABLE = {nodes.Include: "include", nodes.Extends: "extends", nodes.Import: "import",
                  nodes.FromImport: "from … import"}
_FIELD_LABELS = {"subject": "Subject", "html": "HTML", "text": "Text"}


def _parse(source: str, field_name: str, env: ImmutableSandboxedEnvironment) -> nodes.Template:
    try:
        return env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", field=field_name, line=exc.lineno) from exc


def _refuse_internal(name: str, field_name: str, line: int) -> None:
    for part in name.split("."):
        if part.startswith("_") or part in _UNSAFE_NAMES:
            raise TemplateProblem(f"'{part}' is not allowed: templates cannot reach Python internals",
                                  field=field_name, line=line)


def _static_check(tree: nodes.Template, field_name: str) -> None:
    """Refuses, before anything runs, what can only be an attempt to leave the sandbox."""
    for node_type, label in _NOT_AVAILABLE.items():
        for node in tree.find_all(node_type):
            raise TemplateProblem(f"'{label}' is not available in email templates", field=field_name,
                                  line=node.lineno)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Name)):
        if isinstance(node, nodes.Getattr):
            _refuse_internal(node.attr, field_name, node.lineno)
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                _refuse_internal(node.arg.value, field_name, node.lineno)
        elif isinstance(node, nodes.Name):
            if node.name.startswith("_"):
                _refuse_internal(node.name, field_name, node.lineno)
        elif node.name == "attr":
            raise TemplateProblem("the 'attr' filter is not allowed in email templates", field=field_name,
                                  line=node.lineno)
        elif node.name in _ATTRIBUTE_FILTERS:
            arguments = [*node.args, *(kw.value for kw in node.kwargs)]
            for argument in arguments:
                if isinstance(argument, nodes.Const) and isinstance(argument.value, str):
                    if node.name in ("map", "select", "reject") and argument.value == "attr":
                        raise TemplateProblem("the 'attr' filter is not allowed in email templates",
                                              field=field_name, line=node.lineno)
                    _refuse_internal(argument.value, field_name, node.lineno)


_SPECIAL_NAMES = frozenset({"loop", "super", "self", "caller", "varargs", "kwargs", "true", "false", "none"})


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _dotted(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        base = _dotted(node.node)
        return f"{base}.{node.arg.value}" if base else None
    return None


def _references(tree: nodes.Template) -> list[tuple[str, int, bool]]:
    """(dotted name, line, guarded by default/`is defined`) for every variable a template reads."""
    found: list[tuple[str, int, bool]] = []

    def walk(node: nodes.Node, guarded: bool = False) -> None:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            walk(node.node.node)  # a method call (`contact.custom.items()`) reads the object, not a key
            for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if child is not None:
                    walk(child)
            return
        if isinstance(node, nodes.Filter | nodes.Test) and node.node is not None:
            is_guard = isinstance(node, nodes.Filter) and node.name in ("default", "d") or \
                isinstance(node, nodes.Test) and node.name in ("defined", "undefined", "none")
            walk(node.node, is_guard)
            for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if child is not None:
                    walk(child)
            return
        path = _dotted(node)
        if path is not None:
            found.append((path, node.lineno, guarded))
            return
        for child in node.iter_child_nodes():
            walk(child)

    walk(tree)
    return found


def _assigned(tree: nodes.Template) -> set[str]:
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    names |= {m.name for m in tree.find_all(nodes.Macro)}
    return names


def _is_known(path: str, context: dict[str, Any]) -> bool:
    """Walks `contact.custom.x` through the sample; an empty dict is an open map (custom fields
    differ per account), and anything below a non-dict value is an attribute of that value."""
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return True
        if part not in value:
            return not value and value is not context
        value = value[part]
    return True


def _template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised on (Jinja rewrites tracebacks to point there)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _try_render(template: jinja2.Template, context: dict[str, Any], field_name: str) -> None:
    """Runs one part with the sample, turning what would fail at send time into a TemplateProblem."""
    try:
        template.render(context)
    except SecurityError as exc:
        raise TemplateProblem(f"not allowed: {exc}", field=field_name, line=_template_line(exc)) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"{exc.message}: a missing value cannot be calculated with or compared; "
                              'give it a fallback with | default(…)', field=field_name,
                              line=_template_line(exc)) from exc
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateProblem(f"the template fails with the sample contact: {exc}", field=field_name,
                              line=_template_line(exc)) from exc


def validate(subject: str, html: str, text: str = "", mjml: bool = False,
             known_variables: dict[str, Any] | None = None) -> list[str]:
    """Refuses what cannot be saved (TemplateProblem); returns warnings for the editor."""
    if not subject.strip():
        raise TemplateProblem("the subject is empty", field="subject")
    if not html.strip():
        raise TemplateProblem("the HTML body is empty", field="html")
    env_html, env_text = make_environment(True), make_environment(False)
    parts = [("subject", subject, env_text), ("html", html, env_html), ("text", text, env_text)]
    trees: list[tuple[str, nodes.Template]] = []
    for name, source, env in parts:
        if source:
            tree = _parse(source, name, env)
            _static_check(tree, name)
            trees.append((name, tree))
    context = known_variables if known_variables is not None else sample_context()
    warnings: list[str] = []
    reported: set[str] = set()
    for name, tree in trees:
        skip = _assigned(tree) | _SPECIAL_NAMES | set(make_environment().globals)
        for ref, line, guarded in _references(tree):
            if ref.split(".")[0] in skip or _is_known(ref, context):
                continue
            reported.add(ref)
            if guarded:
                warnings.append(f"{_FIELD_LABELS[name]}, line {line}: unknown variable {ref}: "
                                "the fallback will always be used (is the name spelled right?)")
            else:
                warnings.append(f"{_FIELD_LABELS[name]}, line {line}: unknown variable {ref}: it will render "
                                'empty (use | default("…") to choose what it shows)')
    compiled = compile_template(subject, html, text, mjml=mjml)
    if re.search(r"<style\b[^>]*>(?:(?!</style).)*\{%", compiled.html_source, re.I | re.S):
        warnings.append("HTML: Jinja tags inside a <style> block are kept there but not inlined; "
                        "email clients that drop <style> will not see those rules")
    token = _recording.set(([], context))
    try:
        for name, template in (("subject", compiled.subject), ("html", compiled.html), ("text", compiled.text)):
            if template is not None:
                _try_render(template, context, name)
    finally:
        _recording.reset(token)
    rendered = render(compiled, context)
    for ref in rendered.missing:
        if ref not in reported and not _is_known(ref, context):
            warnings.append(f"unknown variable {ref}: it renders empty with the sample contact")
    return list(dict.fromkeys(warnings))


# --- compile once per version -----------------------------------------------------------------------

_JINJA_SRC = r"\{\{.*?\}\}|\{%.*?%\}|\{\#.*?\#\}"
_JINJA = re.compile(_JINJA_SRC, re.S)
# Inside tags a Jinja tag is one atom and a lone `{` is not the start of one: without that, a tag
# with an unclosed quote would make these patterns backtrack exponentially.
_J = rf"(?>{_JINJA_SRC})"
_B = r"\{(?![{%#])"
# an attribute value or the inside of a tag, where a `"` within a Jinja tag does not end the value
_TAG_BODY = rf"""(?:{_J}|"(?:{_J}|[^"{{]|{_B})*"|'(?:{_J}|[^'{{]|{_B})*'|[^>"'{{]|{_B})*?"""
_LEX = re.compile(rf"(?P<jinja>{_JINJA_SRC})|(?P<comment><!--.*?(?:-->|\Z))"
                  rf"|<(?P<name>[a-zA-Z][a-zA-Z0-9:_-]*)(?P<attrs>{_TAG_BODY})(?P<close>/?>)", re.S)
_ATTR = re.compile(
    rf"""(?P<jinja>{_J})|(?P<name>[^\s"'=<>/{{]+)(?:\s*=\s*(?:"""
    rf""""(?P<dq>(?:{_J}|[^"{{]|{_B})*)"|'(?P<sq>(?:{_J}|[^'{{]|{_B})*)'|(?P<uq>(?:{_J}|[^\s"'>{{]|{_B})+)))?""",
    re.S)
_RAW_TEXT = frozenset({"style", "script", "title", "textarea", "xmp", "mj-title", "mj-preview", "mj-style"})


@dataclass
class _Tag:
    start: int
    end: int
    name: str
    attrs: list[re.Match[str]]
    attrs_offset: int  # where the attributes start in the source
    jinja_outside_values: bool


class _Shielded:
    """A copy of a template with its Jinja tags swapped for inert placeholders, so that an HTML or
    MJML parser neither moves them (text in a <table> is moved out of it) nor escapes them
    (`{% if a > b %}`): comments where text goes, `kzjNx` inside tags and style sheets."""

    def __init__(self, source: str, *, mark_tags: bool, text_as_comment: bool):
        self.source = source
        self.prefix = "kzj"  # a placeholder prefix that the template itself does not contain
        while self.prefix in source.lower():
            self.prefix = f"kzj{len(self.prefix)}q"
        self.placeholder = re.compile(rf"<!--{self.prefix}(\d+)-->|{self.prefix}(\d+)x")
        self.held: list[tuple[str, int]] = []  # (Jinja tag, offset in source)
        self.tags: list[_Tag] = []
        self.in_tag: list[int] = []  # offsets of Jinja tags standing between attributes
        out: list[str] = []
        pos = 0
        while True:
            match = _LEX.search(source, pos)
            if match is None:
                out.append(source[pos:])
                break
            out.append(source[pos:match.start()])
            if match.group("jinja") is not None:
                out.append(self._hold(match.group(0), match.start(), comment=True) if text_as_comment else "")
                pos = match.end()
            elif match.group("comment") is not None:
                out.append(match.group(0))
                pos = match.end()
            else:
                out.append(self._tag(match, mark_tags))
                pos = match.end()
                name = match.group("name").lower()
                if name in _RAW_TEXT and not match.group("close").startswith("/"):
                    closing = re.compile(rf"</{name}\s*>", re.I).search(source, pos)
                    end = closing.start() if closing else len(source)
                    out.append(self._raw(source[pos:end], pos, name, text_as_comment))
                    pos = end
        self.text = "".join(out)

    def _hold(self, jinja_tag: str, offset: int, *, comment: bool) -> str:
        self.held.append((jinja_tag, offset))
        number = len(self.held) - 1
        return f"<!--{self.prefix}{number}-->" if comment else f"{self.prefix}{number}x"

    def _raw(self, content: str, offset: int, name: str, text_as_comment: bool) -> str:
        if name == "style" and not text_as_comment and "{%" in content:
            return ""  # conditional rules must not be inlined unconditionally: kept in <style> only
        if name == "style" or text_as_comment:
            return _JINJA.sub(lambda m: self._hold(m.group(0), offset + m.start(), comment=False), content)
        return _JINJA.sub("", content)

    def _tag(self, match: re.Match[str], mark: bool) -> str:
        attrs_offset = match.start("attrs")
        parsed = list(_ATTR.finditer(match.group("attrs")))
        outside = any(a.group("jinja") is not None for a in parsed)
        if mark:
            self.tags.append(_Tag(match.start(), match.end(), match.group("name"), parsed, attrs_offset, outside))
        pieces = [f"<{match.group('name')}"]
        if mark:
            pieces.append(f' data-kzi="{len(self.tags) - 1}"')
        last = 0
        attrs = match.group("attrs")
        for attr in parsed:
            pieces.append(attrs[last:attr.start()])
            last = attr.end()
            if attr.group("jinja") is not None:
                self.in_tag.append(attrs_offset + attr.start())
                pieces.append(" " if mark else self._hold(attr.group(0), attrs_offset + attr.start(), comment=False))
                continue
            value = next((v for v in (attr.group("dq"), attr.group("sq"), attr.group("uq")) if v is not None), None)
            if mark and attr.group("name").lower() == "style" and value and "{" in value and _JINJA.search(value):
                continue  # merged back by hand: see _with_style
            pieces.append(_JINJA.sub(lambda m, a=attr: self._hold(m.group(0), attrs_offset + a.start() + m.start(),
                                                                  comment=False), attr.group(0)))
        pieces.append(attrs[last:])
        pieces.append(match.group("close"))
        return "".join(pieces)

    def restore(self, text: str) -> str:
        seen: set[int] = set()

        def back(match: re.Match[str]) -> str:
            number = int(match.group(1) or match.group(2))
            seen.add(number)
            return self.held[number][0]

        restored = self.placeholder.sub(back, text)
        self.lost = [self.held[n] for n in range(len(self.held)) if n not in seen]
        return restored

    def line_of(self, offset: int) -> int:
        return self.source.count("\n", 0, offset) + 1


def _mjml_to_html(source: str) -> str:
    import mjml

    shielded = _Shielded(source, mark_tags=False, text_as_comment=True)
    try:
        result = mjml.mjml2html(shielded.text)
    except Exception as exc:  # the binding raises ValueError, or its own types for I/O
        message = str(exc)
        if shielded.in_tag:
            raise TemplateProblem("MJML error: a template tag between the attributes of an MJML tag is not supported "
                                  "(use it inside an attribute value, or around the whole tag)",
                                  field="html", line=shielded.line_of(shielded.in_tag[0])) from exc
        position = re.search(r"position (\d+)", message)  # a byte offset in what mrml was given
        line = None
        if position:
            line = shielded.text.encode()[:int(position.group(1))].decode(errors="ignore").count("\n") + 1
        raise TemplateProblem(f"MJML error: {message}", field="html", line=line) from exc
    html = shielded.restore(result)
    if shielded.lost:
        tag, offset = shielded.lost[0]
        raise TemplateProblem(f"MJML dropped the template tag {tag}: put it inside <mj-text> or <mj-raw>",
                              field="html", line=shielded.line_of(offset))
    return html


_OUT_TAG = re.compile(r"""<[a-zA-Z][^\s/>]*((?:\s+[^\s"'=/>]+(?:="[^"]*")?)*)\s*/?>""")
_OUT_ATTR = re.compile(r"""\s([^\s"'=/>]+)(?:="([^"]*)")?""")


def inline_css(source: str) -> str:
    """Moves the style sheet's rules into style attributes, for the clients that ignore <style>.

    css_inline parses and re-serializes the document, which would move or escape Jinja tags; so it
    runs on a shielded copy whose start tags are numbered, and only the resulting style attributes
    are written back into the template as the marketer wrote it. <style> blocks stay as they are:
    media queries, :hover and dark-mode rules cannot be inlined and clients that honour <style>
    need them (mark a block or an element `data-css-inline="ignore"` to keep it out of inlining).
    """
    if "<style" not in source.lower():
        return source
    shielded = _Shielded(source, mark_tags=True, text_as_comment=False)
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    try:
        inlined = inliner.inline(shielded.text)
    except ValueError as exc:
        raise TemplateProblem(f"CSS could not be inlined: {exc}", field="html") from exc
    styles: dict[int, str] = {}
    for match in _OUT_TAG.finditer(inlined):
        attrs = dict((m.group(1).lower(), m.group(2)) for m in _OUT_ATTR.finditer(match.group(1)))
        number, style = attrs.get("data-kzi"), attrs.get("style")
        if number is not None and number.isdigit() and style:
            styles[int(number)] = shielded.restore(style)
    pieces: list[str] = []
    pos = 0
    for number, tag in enumerate(shielded.tags):
        style = styles.get(number)
        if not style:
            continue
        replaced = _with_style(source, tag, style)
        if replaced is None:
            continue
        pieces.append(source[pos:tag.start])
        pieces.append(replaced)
        pos = tag.end
    pieces.append(source[pos:])
    return "".join(pieces)


def _with_style(source: str, tag: _Tag, style: str) -> str | None:
    """The start tag with its style attribute set to `style` (already escaped for `"`)."""
    text = source[tag.start:tag.end]
    style_attr = next((a for a in tag.attrs if a.group("name") and a.group("name").lower() == "style"), None)
    head = len(tag.name) + 1
    if tag.jinja_outside_values and re.search(r"style\s*=", text, re.I):
        return None  # a style attribute that a Jinja condition adds or not: leave the tag alone
    if style_attr is None:
        return f'{text[:head]} style="{style}"{text[head:]}'
    start = tag.attrs_offset + style_attr.start() - tag.start
    end = tag.attrs_offset + style_attr.end() - tag.start
    value = next((v for v in (style_attr.group("dq"), style_attr.group("sq"), style_attr.group("uq")) if v is not None),
                 "")
    if _JINJA.search(value):
        # the shielded copy had no style here: rules first, then the marketer's own (later wins)
        if style_attr.group("sq") is not None:
            return f"{text[:start]}style='{style.replace(chr(39), '&#39;').rstrip(';')}; {value}'{text[end:]}"
        return f'{text[:start]}style="{style.rstrip(";")}; {value}"{text[end:]}'
    return f'{text[:start]}style="{style}"{text[end:]}'


@dataclass
class CompiledTemplate:
    html_source: str  # after MJML and CSS inlining, Jinja still in it
    subject: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template | None


def compile_template(subject: str, html: str, text: str = "", mjml: bool = False, *,
                     inline: bool = True) -> CompiledTemplate:
    """Everything that does not depend on the contact, done once per template version.
    `inline=False` takes a source that is already inlined (a version's stored `html_source`), so a
    sending worker does not pay for CSS inlining again."""
    source = _mjml_to_html(html) if mjml else html
    if inline:
        source = inline_css(source)
    env_html, env_text = make_environment(True), make_environment(False)
    field_name = "subject"
    try:
        compiled_subject = env_text.from_string(subject)
        field_name = "html"
        compiled_html = env_html.from_string(source)
        field_name = "text"
        compiled_text = env_text.from_string(text) if text.strip() else None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", field=field_name, line=exc.lineno) from exc
    return CompiledTemplate(html_source=source, subject=compiled_subject, html=compiled_html, text=compiled_text)


# --- per message ------------------------------------------------------------------------------------

_ANCHOR = re.compile(
    r"""(?P<head><a\s(?:[^>"']|"[^"]*"|'[^']*')*?(?<=[\s"'])href\s*=\s*)"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<uq>[^\s>"']+))(?P<tail>(?:[^>"']|"[^"]*"|'[^']*')*>)""",
    re.I,
)
_NOTRACK = re.compile(r"\sdata-kizuna-notrack\b", re.I)
_HEADER_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


@dataclass
class RenderedMessage:
    subject: str
    html: str
    text: str
    links: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def rewrite_links(html: str, rewriter: Callable[[str, int], str]) -> tuple[str, list[str], dict[str, str]]:
    """Replaces every tracked http(s) href; returns the HTML, the original URLs in order, and the
    original → tracked mapping (for the plain-text part). A regex, not a parser: it runs per message."""
    links: list[str] = []
    mapping: dict[str, str] = {}

    def swap(match: re.Match[str]) -> str:
        head, tail = match.group("head"), match.group("tail")
        if _NOTRACK.search(head) or _NOTRACK.search(tail):
            return match.group(0)
        raw = next(v for v in (match.group("dq"), match.group("sq"), match.group("uq")) if v is not None)
        url = html_lib.unescape(raw).strip()
        if not url[:8].lower().startswith(("http://", "https://")):
            return match.group(0)
        tracked = rewriter(url, len(links))
        links.append(url)
        mapping.setdefault(url, tracked)
        return f'{head}"{html_lib.escape(tracked, quote=True)}"{tail}'

    return _ANCHOR.sub(swap, html), links, mapping


# a URL in plain text ends before whitespace, brackets and Japanese punctuation, and a trailing
# sentence full stop is not part of it
_TEXT_URL_END = r"(?=$|[\s<>\"'）」』】、。]|[.,;:!?)\]]+(?:[\s<>\"'）」』】、。]|$))"


def _rewrite_text(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    pattern = _text_url_pattern(tuple(sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda m: mapping[m.group(1)], text)


@lru_cache(maxsize=256)
def _text_url_pattern(urls: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("(" + "|".join(re.escape(u) for u in urls) + ")" + _TEXT_URL_END, re.M)


_MD_LINK = re.compile(r"\[((?:\\.|[^\]\\])*)\]\(((?:\\.|[^)\\])*)\)|<((?:https?|mailto):[^>\s]+)>")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
_INVISIBLE = re.compile("[\u034f\u200b\u200c\u200d\u2060\ufeff\u00ad]")
# a preheader (MJML's <mj-preview>) is hidden text for the inbox list, not part of the message
_HIDDEN = re.compile(r"""<(div|span|p)\s[^>]*?style\s*=\s*["'][^"']*display\s*:\s*none[^>]*>[^<]*</\1\s*>""", re.I)


def _text_from_html(html: str) -> str:
    """Plain text for clients (and spam filters) that read it: unwrapped lines, so Japanese is
    never broken mid-sentence, links as `label (url)`, no images, no layout tables."""
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    converter.single_line_break = False
    converter.inline_links = True
    converter.protect_links = False
    converter.wrap_links = False
    converter.skip_internal_links = True
    markdown = converter.handle(_HIDDEN.sub("", html))

    def link(match: re.Match[str]) -> str:
        if match.group(3) is not None:
            return match.group(3)
        label = _MD_ESCAPE.sub(r"\1", match.group(1)).strip()
        url = re.sub(r"\\(.)", r"\1", match.group(2)).strip()
        shown = url[7:] if url.lower().startswith("mailto:") else url
        return shown if not label or label in (url, shown) else f"{label} ({shown})"

    text = _MD_LINK.sub(link, markdown)
    text = _MD_ESCAPE.sub(r"\1", text)
    text = _INVISIBLE.sub("", text).replace("\xa0", " ")
    text = re.sub(r"^#{1,6} ", "", text, flags=re.M)
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def render(compiled: CompiledTemplate, context: dict[str, Any], *,
           link_rewriter: Callable[[str, int], str] | None = None, footer_html: str = "",
           footer_text: str = "") -> RenderedMessage:
    """One message: Jinja, tracked links (the footer's are never tracked), plain text, footer."""
    missing: list[str] = []
    token = _recording.set((missing, context))
    try:
        subject = _HEADER_BREAKS.sub(" ", compiled.subject.render(context)).strip()  # no header injection
        html = compiled.html.render(context)
        text = compiled.text.render(context) if compiled.text is not None else None
    finally:
        _recording.reset(token)
    links: list[str] = []
    if link_rewriter is not None:
        html, links, mapping = rewrite_links(html, link_rewriter)
        if text is not None:
            text = _rewrite_text(text, mapping)
    if text is None:
        text = _text_from_html(html)
    if footer_html:
        position = html.lower().rfind("</body>")
        html = html[:position] + footer_html + html[position:] if position >= 0 else html + footer_html
    if footer_text or footer_html:
        footer = footer_text or "--\n" + _text_from_html(footer_html)
        text = text.rstrip("\n") + "\n\n" + footer.lstrip("\n")
    return RenderedMessage(subject=subject, html=html, text=text, links=links, missing=list(dict.fromkeys(missing)))


# --- variables other apps add -----------------------------------------------------------------------

ContextProvider = Callable[[Any], dict[str, Any]]
_context_providers: list[ContextProvider] = []


def register_context(provider: ContextProvider) -> None:
    """Lets an app add variables to every template (an app's AppConfig.ready() calls it).

    `provider(message)` gets the outbox row being composed, or None for the sample contact
    (previews and the check on save), and returns plain values or functions for the sandbox;
    it may raise to make a message fail with its reason (a deleted asset, say)."""
    if provider not in _context_providers:
        _context_providers.append(provider)


def provided_context(message: Any) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for provider in _context_providers:
        context.update(provider(message))
    return context


def sample_context() -> dict[str, Any]:
    """A realistic contact for previews and for checking templates when they are saved."""
    return {
        **provided_context(None),
        "contact": {
            "email": "taro.yamada@example.co.jp", "family_name": "山田", "given_name": "太郎",
            "family_name_kana": "ヤマダ", "given_name_kana": "タロウ", "full_name": "山田 太郎",
            "company_name": "株式会社サンプル製作所", "job_title": "情報システム部 部長",
            "department": "情報システム部",
            "phone": "03-1234-5678", "prefecture": "東京都", "lifecycle_stage": "lead", "language": "ja",
            "custom": {},  # custom fields differ per account: empty means "any key", so none is warned about
        },
        "company": {"name": "株式会社サンプル製作所", "domain": "example.co.jp", "industry": "製造業",
                    "website": "https://www.example.co.jp", "custom": {}},
        "owner": {"name": "佐藤 花子", "email": "hanako.sato@kizuna.example"},
        "unsubscribe_url": "https://kizuna.example/e/u/sample",
        "preferences_url": "https://kizuna.example/e/u/sample",
    }


def preview(compiled: CompiledTemplate, context: dict[str, Any]) -> RenderedMessage:
    return render(compiled, context)


__all__ = ["CompiledTemplate", "Markup", "RenderedMessage", "TemplateProblem", "compile_template", "inline_css",
           "make_environment", "preview", "provided_context", "register_context", "render", "rewrite_links",
           "sample_context", "validate"]
