"""The monthly report as a PDF an operations manager can read and forward: all 12 statistics
with numbers formatted for people, alerts by day and severity, detection latency by day, and
the month's days as a table. Built with reportlab in invariant mode (no creation date, fixed
document id), so the same month's data gives the same bytes and checksum on every run.

Decisions for the reader: a day without calls has no latency, shown as a gap (never as 0 ms);
latency is drawn on a logarithmic scale so an ordinary day is not flattened by one slow day;
the P99 line is drawn over the average and marked, so it is never hidden; every axis has a
title with its unit and headroom above its highest value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reportlab import rl_config
from reportlab.graphics.charts.axes import LogYValueAxis
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Group, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from jobs.periods import Period

MARGIN = 2 * cm
_WIDTH = A4[0] - 2 * MARGIN
SEVERITIES = (("alerts_critical", "Critical", colors.HexColor("#b71c1c")),
              ("alerts_high", "High", colors.HexColor("#ef6c00")),
              ("alerts_medium", "Medium", colors.HexColor("#fbc02d")),
              ("alerts_low", "Low", colors.HexColor("#7cb342")))
P99_COLOUR, AVERAGE_COLOUR = colors.HexColor("#b71c1c"), colors.HexColor("#1565c0")
LABEL_SIZE = 8


def count(value: Any) -> str:
    return "no data" if value is None else f"{int(value):,}"


def milliseconds(value: Any) -> str:
    return "no calls" if value is None else f"{float(value):,.2f} ms"


def percent(value: Any) -> str:
    return "not measured" if value is None else f"{float(value):,.3f} %"


# Every statistic of the package, in the regulator's order, with how a person reads it.
STATISTICS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("total_calls", "Calls screened", count),
    ("alerts_total", "Fraud alerts", count),
    ("alerts_critical", "Critical alerts", count),
    ("alerts_high", "High alerts", count),
    ("alerts_medium", "Medium alerts", count),
    ("alerts_low", "Low alerts", count),
    ("calls_disconnected", "Calls disconnected", count),
    ("patterns_blocked", "Patterns blocked", count),
    ("detection_latency_p99_ms", "Detection latency, P99", milliseconds),
    ("detection_latency_avg_ms", "Detection latency, average", milliseconds),
    ("uptime_percent", "System uptime", percent),
    ("false_positive_rate_percent", "False positive rate", percent),
)


def nice_ceiling(value: float) -> float:
    """A round number above `value` with about 10 % headroom (1, 2, 2.5, 5 x 10^n)."""
    target = max(value * 1.1, 1.0)
    power = 10 ** math.floor(math.log10(target))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= target:
            return float(step * power)
    return float(10 * power)


def _axis_titles(drawing: Drawing, x: float, y: float, width: float, height: float,
                 x_title: str, y_title: str) -> None:
    drawing.add(String(x + width / 2, 4, x_title, fontSize=LABEL_SIZE, textAnchor="middle"))
    # Turned a quarter left, reading upwards along the value axis.
    drawing.add(Group(String(0, 0, y_title, fontSize=LABEL_SIZE, textAnchor="middle"),
                      transform=(0, 1, -1, 0, 10, y + height / 2)))


def alerts_chart(days: list[dict[str, Any]], month: str) -> Drawing:
    height = 8.5 * cm
    drawing = Drawing(_WIDTH, height)
    chart = VerticalBarChart()
    chart.x, chart.y = 50, 36
    chart.width, chart.height = int(_WIDTH - 60), int(height - 36 - 40)
    chart.data = [[float(day[key] or 0) for day in days] for key, _, _ in SEVERITIES]
    chart.categoryAxis.style = "stacked"
    chart.categoryAxis.categoryNames = [str(day["report_date"].day) for day in days]
    chart.categoryAxis.labels.fontSize = LABEL_SIZE - 1
    chart.valueAxis.labels.fontSize = LABEL_SIZE
    chart.valueAxis.labelTextFormat = lambda value: f"{value:,.0f}"
    peak = max((sum(float(day[key] or 0) for key, _, _ in SEVERITIES) for day in days),
               default=0.0)
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = nice_ceiling(peak)
    chart.valueAxis.valueStep = chart.valueAxis.valueMax / 5
    chart.barSpacing = 1
    for index, (_, _, colour) in enumerate(SEVERITIES):
        chart.bars[index].fillColor = colour
        chart.bars[index].strokeColor = None
    legend = Legend()
    legend.alignment = "right"
    legend.columnMaximum = 1
    legend.fontSize = LABEL_SIZE
    legend.x, legend.y = chart.x, int(height - 8)
    legend.deltax = 70
    legend.colorNamePairs = [(colour, name) for _, name, colour in SEVERITIES]
    drawing.add(chart)
    drawing.add(legend)
    _axis_titles(drawing, chart.x, chart.y, chart.width, chart.height,
                 f"Day of {month}", "Fraud alerts per day")
    return drawing


def _runs(points: Sequence[tuple[int, float | None]]) -> list[list[tuple[int, float]]]:
    """Consecutive days with a value: a day without calls breaks the line."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for day, value in points:
        if value is None or value <= 0:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((day, value))
    if current:
        runs.append(current)
    return runs


def latency_chart(days: list[dict[str, Any]], month: str) -> Drawing:
    height = 8 * cm
    drawing = Drawing(_WIDTH, height)
    plot = LinePlot()
    plot.x, plot.y = 50, 36
    plot.width, plot.height = int(_WIDTH - 60), int(height - 36 - 40)
    series: list[tuple[str, Any]] = [("detection_latency_avg_ms", AVERAGE_COLOUR),
                                     ("detection_latency_p99_ms", P99_COLOUR)]
    data: list[list[tuple[int, float]]] = []
    styles: list[tuple[Any, bool]] = []
    values: list[float] = []
    for key, colour in series:  # the average first, so that P99 is drawn over it
        points = [(day["report_date"].day,
                   None if day[key] is None else float(day[key])) for day in days]
        for run in _runs(points):
            data.append(run)
            styles.append((colour, key == "detection_latency_p99_ms"))
            values += [value for _, value in run]
    if not data:  # a month without a single call: an empty frame, said in words
        drawing.add(String(_WIDTH / 2, height / 2, "No calls this month: no latency to show",
                           fontSize=LABEL_SIZE + 1, textAnchor="middle"))
        return drawing
    plot.data = data
    for index, (colour, is_p99) in enumerate(styles):
        plot.lines[index].strokeColor = colour
        plot.lines[index].strokeWidth = 1.6 if is_p99 else 1.0
        plot.lines[index].strokeDashArray = None if is_p99 else [3, 2]
        plot.lines[index].symbol = makeMarker(  # type: ignore[no-untyped-call]
            "FilledCircle" if is_p99 else "Circle", size=3)
    plot.xValueAxis.valueMin = 0.5
    plot.xValueAxis.valueMax = len(days) + 0.5
    plot.xValueAxis.valueSteps = [day["report_date"].day for day in days]
    plot.xValueAxis.labels.fontSize = LABEL_SIZE - 1
    plot.xValueAxis.labelTextFormat = "%d"
    axis = LogYValueAxis()
    axis.valueMin = 10 ** math.floor(math.log10(min(values)))
    axis.valueMax = 10 ** math.ceil(math.log10(max(values) * 1.5))
    axis.labels.fontSize = LABEL_SIZE
    axis.labelTextFormat = lambda value: f"{value:,.0f}" if value >= 1 else f"{value:g}"
    plot.yValueAxis = axis
    legend = Legend()
    legend.alignment = "right"
    legend.columnMaximum = 1
    legend.fontSize = LABEL_SIZE
    legend.x, legend.y = plot.x, int(height - 8)
    legend.deltax = 150
    legend.colorNamePairs = [(P99_COLOUR, "P99 (solid)"), (AVERAGE_COLOUR, "Average (dashed)")]
    drawing.add(plot)
    drawing.add(legend)
    _axis_titles(drawing, plot.x, plot.y, plot.width, plot.height,
                 f"Day of {month} (a gap: no calls that day)", "Latency, ms (log scale)")
    return drawing


def _table(rows: list[list[str]], widths: list[float], font_size: float) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTSIZE", (0, 0), (-1, -1), font_size),
        ("LEADING", (0, 0), (-1, -1), font_size + 2),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
        ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return table


def day_table(days: list[dict[str, Any]]) -> Table:
    header = ["Day", "Calls", "Alerts", "Critical", "Disconnected", "Blocked", "P99",
              "Average", "Uptime"]
    rows = [header] + [[day["report_date"].strftime("%a %d"), count(day["total_calls"]),
                        count(day["alerts_total"]), count(day["alerts_critical"]),
                        count(day["calls_disconnected"]), count(day["patterns_blocked"]),
                        milliseconds(day["detection_latency_p99_ms"]),
                        milliseconds(day["detection_latency_avg_ms"]),
                        percent(day["uptime_percent"])] for day in days]
    widths = [1.6 * cm, 1.9 * cm, 1.5 * cm, 1.5 * cm, 2.1 * cm, 1.6 * cm, 2.1 * cm, 2.1 * cm,
              2.6 * cm]
    return _table(rows, widths, 7.5)


def monthly_pdf(path: Path, period: Period, license_number: str,
                days: list[dict[str, Any]], totals: dict[str, Any]) -> None:
    rl_config.invariant = 1
    styles = getSampleStyleSheet()
    month = period.first_day.strftime("%B %Y")
    document = SimpleDocTemplate(
        str(path), pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
        bottomMargin=MARGIN, title=f"ACM monthly report {license_number} {period.label}",
        author=license_number, subject="NCC anti call masking monthly compliance report",
        creator="acm-platform ncc-report")
    totals_table = _table([["Statistic", month]]
                          + [[label, show(totals[key])] for key, label, show in STATISTICS],
                          [9 * cm, 6 * cm], 9.5)
    heading = styles["Heading2"]
    document.build([
        Paragraph(f"Anti call masking: monthly compliance report, {month}", styles["Title"]),
        Paragraph(f"Licence {license_number}. Period {period.start:%d %B %Y %H:%M} to "
                  f"{period.end:%d %B %Y %H:%M} West Africa Time.", styles["Normal"]),
        Spacer(1, 0.4 * cm), Paragraph("The month in figures", heading), totals_table,
        Spacer(1, 0.4 * cm),
        KeepTogether([Paragraph("Fraud alerts by day and severity", heading),
                      alerts_chart(days, month)]),
        PageBreak(),
        KeepTogether([Paragraph("Detection latency by day", heading),
                      latency_chart(days, month)]),
        Spacer(1, 0.3 * cm),
        KeepTogether([Paragraph("Day by day", heading), day_table(days)]),
    ])
