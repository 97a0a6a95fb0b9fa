"""The monthly report as a PDF for the compliance officer: totals, alerts by day and severity,
detection latency by day. Built with reportlab in invariant mode (no creation date, fixed
document id), so the same month's data gives the same bytes and checksum on every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportlab import rl_config
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from jobs.periods import Period

SEVERITIES = (("alerts_critical", "Critical", colors.HexColor("#b71c1c")),
              ("alerts_high", "High", colors.HexColor("#ef6c00")),
              ("alerts_medium", "Medium", colors.HexColor("#fbc02d")),
              ("alerts_low", "Low", colors.HexColor("#7cb342")))
TOTALS = (("total_calls", "Calls screened"), ("alerts_total", "Fraud alerts"),
          ("alerts_critical", "Critical alerts"), ("calls_disconnected", "Calls disconnected"),
          ("patterns_blocked", "Patterns blocked"),
          ("detection_latency_p99_ms", "Detection latency P99 (ms)"),
          ("detection_latency_avg_ms", "Detection latency average (ms)"),
          ("uptime_percent", "Uptime (%)"),
          ("false_positive_rate_percent", "False positive rate (%)"))
_WIDTH = 17 * cm


def _text(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)


def alerts_chart(days: list[dict[str, Any]]) -> Drawing:
    drawing = Drawing(_WIDTH, 8 * cm)
    chart = VerticalBarChart()
    chart.x, chart.y = 40, 40
    chart.width, chart.height = int(_WIDTH - 140), int(6 * cm)
    chart.data = [[_number(day[key]) for day in days] for key, _, _ in SEVERITIES]
    chart.categoryAxis.style = "stacked"
    chart.categoryAxis.categoryNames = [str(day["report_date"].day) for day in days]
    chart.categoryAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    for index, (_, _, colour) in enumerate(SEVERITIES):
        chart.bars[index].fillColor = colour
    legend = Legend()
    legend.x, legend.y = int(_WIDTH - 90), int(6 * cm)
    legend.colorNamePairs = [(colour, name) for _, name, colour in SEVERITIES]
    drawing.add(chart)
    drawing.add(legend)
    drawing.add(String(40, 10, "Fraud alerts by day of month and severity", fontSize=8))
    return drawing


def latency_chart(days: list[dict[str, Any]]) -> Drawing:
    drawing = Drawing(_WIDTH, 8 * cm)
    chart = HorizontalLineChart()
    chart.x, chart.y = 40, 40
    chart.width, chart.height = int(_WIDTH - 140), int(6 * cm)
    chart.data = [[_number(day["detection_latency_p99_ms"]) for day in days],
                  [_number(day["detection_latency_avg_ms"]) for day in days]]
    chart.categoryAxis.categoryNames = [str(day["report_date"].day) for day in days]
    chart.categoryAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    chart.lines[0].strokeColor = colors.HexColor("#b71c1c")
    chart.lines[1].strokeColor = colors.HexColor("#1565c0")
    legend = Legend()
    legend.x, legend.y = int(_WIDTH - 90), int(6 * cm)
    legend.colorNamePairs = [(colors.HexColor("#b71c1c"), "P99"),
                             (colors.HexColor("#1565c0"), "Average")]
    drawing.add(chart)
    drawing.add(legend)
    drawing.add(String(40, 10, "Detection latency by day (ms)", fontSize=8))
    return drawing


def monthly_pdf(path: Path, period: Period, license_number: str,
                days: list[dict[str, Any]], totals: dict[str, Any]) -> None:
    rl_config.invariant = 1
    styles = getSampleStyleSheet()
    month = period.first_day.strftime("%B %Y")
    document = SimpleDocTemplate(
        str(path), pagesize=A4, title=f"ACM monthly report {license_number} {period.label}",
        author=license_number, subject="NCC anti call masking monthly compliance report",
        creator="acm-platform ncc-report")
    table = Table([["Statistic", month]] + [[label, _text(totals[key])] for key, label in TOTALS],
                  colWidths=[9 * cm, 6 * cm])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                               ("ALIGN", (1, 1), (1, -1), "RIGHT")]))
    document.build([
        Paragraph(f"Anti call masking: monthly compliance report, {month}", styles["Title"]),
        Paragraph(f"Licence {license_number}. Period {period.start.isoformat()} to "
                  f"{period.end.isoformat()} (West Africa Time).", styles["Normal"]),
        Spacer(1, 0.5 * cm), table, Spacer(1, 0.5 * cm),
        alerts_chart(days), Spacer(1, 0.3 * cm), latency_chart(days),
    ])
