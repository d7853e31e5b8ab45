"""The report's pictures, drawn with matplotlib's Agg renderer into inline SVG (the HTML page)
or a small PNG (the Dagster UI's Markdown metadata).

Figures are built on `matplotlib.figure.Figure`, never pyplot: no global figure state, so a
report built in a Dagster step, a CLI call or a test thread leaks nothing. The SVG is cut down
to what an HTML page needs inline: no XML prologue, DOCTYPE, RDF metadata or namespace URLs, so
the page references nothing outside itself.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context
from matplotlib.dates import DateFormatter, DayLocator
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from pipelines.report.data import Day, RefuelCheck, VehicleFigures

INK = "#1f2933"
MUTED = "#7b8794"
KM = "#3e7cb1"
IDLE = "#e07a1f"
FUEL = "#5a9367"
REFUEL = "#9b6bb3"
FLAG = "#c0392b"

STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, the page's font
    "svg.hashsalt": "fleet-report",  # element ids do not change from build to build
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.edgecolor": "#cbd2d9",
    "axes.labelcolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e4e7eb",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}

_THOUSANDS = FuncFormatter(lambda x, _pos: f"{x:,.0f}")


def svg(fig: Figure) -> str:
    """The figure as an `<svg>` element to paste into HTML."""
    buffer = io.StringIO()
    with rc_context(STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    # Sized by the page: the drawing scales with the column instead of overflowing it.
    text = re.sub(r'(<svg[^>]*?)\s+width="[^"]*"\s+height="[^"]*"', r"\1", text, count=1)
    return text.replace("<svg", '<svg class="chart" role="img"', 1)


def png(fig: Figure, dpi: int = 72) -> bytes:
    buffer = io.BytesIO()
    with rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    with rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def trend(days: Sequence[Day], with_fuel: bool = True) -> Figure:
    """Km per day (bars) with the idle share (line); below, litres used and refuelled per day."""
    with rc_context(STYLE):
        fig = _figure(10, 5.2 if with_fuel else 2.9)
        axes = fig.subplots(2 if with_fuel else 1, 1, sharex=True, squeeze=False)[:, 0]
        x = [d.day for d in days]
        top = axes[0]
        top.bar(x, [d.km for d in days], color=KM, width=0.7, label="km driven")
        top.set_ylabel("km per day")
        top.yaxis.set_major_formatter(_THOUSANDS)
        share = top.twinx()
        share.plot(
            x,
            [d.idle_share * 100 if d.idle_share is not None else float("nan") for d in days],
            color=IDLE,
            marker="o",
            markersize=3,
            linewidth=1.6,
            label="idle share",
        )
        share.set_ylim(0, max([30.0] + [(d.idle_share or 0) * 130 for d in days]))
        share.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        share.set_ylabel("idle share of engine time", color=IDLE)
        share.grid(False)
        share.spines["right"].set_visible(True)
        handles = top.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
        top.legend(
            handles,
            [str(h.get_label()) for h in handles],
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=2,
        )
        top.set_title("Distance and idling per UTC day", loc="left", color=INK, fontsize=10)
        if with_fuel:
            low = axes[1]
            offset = 0.18
            low.bar(
                [_shift(d, -offset) for d in x],
                [d.fuel_l or 0 for d in days],
                width=0.36,
                color=FUEL,
                label="litres used (where known)",
            )
            low.bar(
                [_shift(d, offset) for d in x],
                [d.refuel_l or 0 for d in days],
                width=0.36,
                color=REFUEL,
                label="litres refuelled",
            )
            low.set_ylabel("litres per day")
            low.yaxis.set_major_formatter(_THOUSANDS)
            low.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2)
            low.set_title("Fuel per UTC day", loc="left", color=INK, fontsize=10)
        bottom = axes[-1]
        step = max(1, len(days) // 14)
        bottom.xaxis.set_major_locator(DayLocator(interval=step))
        bottom.xaxis.set_major_formatter(DateFormatter("%d %b"))
        return fig


def _shift(day: object, by_days: float) -> float:
    from matplotlib.dates import date2num

    return float(date2num(day)) + by_days


def idle_ranking(
    vehicles: Sequence[VehicleFigures], idle_cost: Sequence[float | None], currency: str
) -> Figure:
    """Idle hours of the vehicles that idle most, each labelled with what it cost."""
    with rc_context(STYLE):
        fig = _figure(10, 0.9 + 0.24 * max(len(vehicles), 1))
        ax = fig.subplots()
        labels = [f"{v.vehicle_id} {v.name}" for v in vehicles][::-1]
        hours = [v.idle_h for v in vehicles][::-1]
        costs = list(idle_cost)[::-1]
        bars = ax.barh(labels, hours, color=IDLE, height=0.65)
        for bar, cost in zip(bars, costs, strict=True):
            if cost is not None:
                ax.annotate(
                    f" {cost:,.{0 if cost >= 100 else 2}f} {currency}",
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    va="center",
                    fontsize=8,
                    color=MUTED,
                )
        ax.set_xlabel("idle hours")
        ax.grid(axis="x")
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, max([*hours, 1.0]) * 1.18)
        ax.set_title("Vehicles idling most (label: idle cost)", loc="left", color=INK, fontsize=10)
        return fig


def refuel_scatter(checks: Sequence[RefuelCheck]) -> Figure:
    """Litres used against litres refuelled per vehicle: honest vehicles lie near the diagonal,
    within a tankful; flagged ones are red and named."""
    judged = [c for c in checks if c.gap_l is not None]
    with rc_context(STYLE):
        fig = _figure(6.4, 4.6)
        ax = fig.subplots()
        used = [c.vehicle.fuel_l or 0.0 for c in judged]
        refuelled = [c.vehicle.refuel_l or 0.0 for c in judged]
        top = max(used + refuelled + [10.0]) * 1.08
        ax.plot([0, top], [0, top], color=MUTED, linewidth=0.8, linestyle="--")
        ax.annotate("refuelled = used", (top * 0.62, top * 0.66), color=MUTED, fontsize=8)
        ax.scatter(
            [u for u, c in zip(used, judged, strict=True) if not c.flagged],
            [r for r, c in zip(refuelled, judged, strict=True) if not c.flagged],
            s=22,
            color=FUEL,
            alpha=0.8,
            label="within a tankful",
        )
        flagged = [c for c in judged if c.flagged]
        if flagged:
            ax.scatter(
                [c.vehicle.fuel_l or 0.0 for c in flagged],
                [c.vehicle.refuel_l or 0.0 for c in flagged],
                s=34,
                color=FLAG,
                label="worth a look",
            )
            for c in flagged:
                ax.annotate(
                    f" {c.vehicle.vehicle_id}",
                    (c.vehicle.fuel_l or 0.0, c.vehicle.refuel_l or 0.0),
                    color=FLAG,
                    fontsize=8,
                )
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.xaxis.set_major_formatter(_THOUSANDS)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.set_xlabel("litres used")
        ax.set_ylabel("litres refuelled")
        ax.grid(axis="x")
        ax.legend(loc="upper left")
        ax.set_title("Refuelled against used, per vehicle", loc="left", color=INK, fontsize=10)
        return fig
