"""The report in the asset's Dagster metadata: the KPI table and the daily trend as Markdown,
the trend as a small inline PNG, since the Dagster UI shows Markdown but not an HTML page."""

from __future__ import annotations

import base64

from pipelines.report import charts
from pipelines.report.data import ReportData
from pipelines.report.kpis import NO_PREVIOUS, change, kpis


def markdown_summary(data: ReportData) -> str:
    """The KPI table and the daily trend as Markdown with a small PNG inline (data: URI), for
    the asset's materialization in the Dagster UI."""
    if data.empty:
        return f"**No data for {data.period}.**"
    lines = [
        f"**{data.period}** vs the {data.previous.count} days before",
        "",
        "| measure | this period | previous | change |",
        "|---|---:|---:|---:|",
    ]
    for kpi in kpis(data):
        text, _css = change(kpi) if data.previous_vehicles else (NO_PREVIOUS, "")
        lines.append(
            f"| {kpi.label} | {kpi.format(kpi.current)} | {kpi.format(kpi.previous)} | {text} |"
        )
    image = base64.b64encode(charts.png(charts.trend(data.daily, with_fuel=False))).decode()
    lines += ["", f"![km and idle share per UTC day](data:image/png;base64,{image})"]
    return "\n".join(lines).replace("\u202f", " ")
