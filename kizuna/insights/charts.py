"""Charts drawn on the server as inline SVG, each with its data for the CSV download.

A `Chart` is a table (columns and rows) plus how to draw it: bars for a ranking, lines for a
trend. The same object answers the page (svg()), "Download CSV" (csv_response()) and
"Download image (SVG)" (svg_response(); the PNG link draws that SVG in the browser, app.js), so a
chart and its downloads can never disagree.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpResponse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]


@dataclass
class Chart:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    kind: str = "bars"  # bars: label + values per row; lines: x + one series per column
    series: list[int] = field(default_factory=lambda: [1])  # which columns are drawn
    note: str = ""

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([str(c) for c in self.columns])
        for row in self.rows:
            writer.writerow([_safe_cell(v) for v in row])
        return "\ufeff" + out.getvalue()  # BOM: Excel reads UTF-8 Japanese correctly

    def csv_response(self) -> HttpResponse:
        response = HttpResponse(self.csv_text(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.key}.csv"'
        return response

    def svg_response(self) -> HttpResponse:
        body = '<?xml version="1.0" encoding="UTF-8"?>\n' + str(self.svg(standalone=True))
        response = HttpResponse(body, content_type="image/svg+xml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.key}.svg"'
        return response

    def svg(self, standalone: bool = False) -> SafeString:
        if not self.rows:
            return mark_safe("")  # noqa: S308 - nothing to draw
        return _lines(self, standalone) if self.kind == "lines" else _bars(self, standalone)


def _safe_cell(value: Any) -> Any:
    """Cells that a spreadsheet would run as a formula are quoted (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _open(width: int, height: int, title: str, standalone: bool) -> str:
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    return (f'<svg{ns} class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
            f'<rect width="{width}" height="{height}" fill="#fff"/>')


def _bars(chart: Chart, standalone: bool) -> SafeString:
    rows = chart.rows[:20]
    label_w, bar_w, row_h = 220, 320, 18
    width, height = label_w + bar_w + 70, 24 + row_h * len(rows) * len(chart.series)
    top = max([_num(r[i]) for r in rows for i in chart.series] + [1])
    parts = [_open(width, height, chart.title, standalone),
             f'<text x="4" y="14" font-weight="bold">{escape(chart.title)}</text>']
    if len(chart.series) > 1:  # a legend, top right
        for j, i in enumerate(chart.series):
            colour = PALETTE[j % len(PALETTE)]
            parts.append(f'<rect x="{width - 150}" y="{4 + 12 * j}" width="8" height="8" fill="{colour}"/>'
                         f'<text x="{width - 138}" y="{12 + 12 * j}">{escape(str(chart.columns[i])[:22])}</text>')
        height += 12 * len(chart.series)
        parts[0] = _open(width, height, chart.title, standalone)
    y = 22 + (12 * len(chart.series) if len(chart.series) > 1 else 0)
    for row in rows:
        label = str(row[0])
        parts.append(f'<text x="4" y="{y + 12}">{escape(label[:34] + ("…" if len(label) > 34 else ""))}</text>')
        for j, i in enumerate(chart.series):
            w = round(bar_w * _num(row[i]) / top, 1)
            colour = PALETTE[j % len(PALETTE)]
            parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}" fill="{colour}"/>'
                         f'<text x="{label_w + w + 4}" y="{y + 12}">{escape(_fmt(row[i]))}</text>')
            y += row_h
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _lines(chart: Chart, standalone: bool) -> SafeString:
    rows = chart.rows
    width, height, left, bottom, right = 640, 220, 40, 30, 130
    plot_w, plot_h = width - left - right, height - bottom - 24
    top = max([_num(r[i]) for r in rows for i in chart.series] + [1])
    parts = [_open(width, height, chart.title, standalone),
             f'<text x="4" y="14" font-weight="bold">{escape(chart.title)}</text>',
             f'<line x1="{left}" y1="{24 + plot_h}" x2="{left + plot_w}" y2="{24 + plot_h}" stroke="#999"/>',
             f'<text x="4" y="30">{escape(_fmt(top))}</text><text x="4" y="{24 + plot_h}">0</text>']
    n = len(rows)

    def x(k: int) -> float:
        return round(left + (plot_w * k / (n - 1) if n > 1 else plot_w / 2), 1)

    for j, i in enumerate(chart.series):
        colour = PALETTE[j % len(PALETTE)]
        points = " ".join(f"{x(k)},{round(24 + plot_h - plot_h * _num(r[i]) / top, 1)}" for k, r in enumerate(rows))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        parts.append(f'<rect x="{left + plot_w + 10}" y="{24 + 16 * j}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 24}" y="{33 + 16 * j}">{escape(str(chart.columns[i])[:18])}</text>')
    for k in sorted({0, n // 2, n - 1}):
        parts.append(f'<text x="{x(k)}" y="{height - 10}" text-anchor="middle">{escape(str(rows[k][0]))}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value if value is not None else "")


def respond(request, charts: list[Chart]) -> HttpResponse | None:
    """The download a ?format=csv|svg&chart=<key> request asks for, or None for the page itself."""
    fmt = request.GET.get("format", "")
    if fmt not in ("csv", "svg"):
        return None
    wanted = request.GET.get("chart", "")
    for chart in charts:
        if chart.key == wanted:
            return chart.csv_response() if fmt == "csv" else chart.svg_response()
    return HttpResponse(_("No chart named “%(name)s” on this report.") % {"name": wanted[:60]}, status=404,
                        content_type="text/plain; charset=utf-8")
