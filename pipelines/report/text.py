"""How the report's figures read as text: one spelling of units, unknown values and UTC times
for the HTML page and the Markdown summary alike."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pipelines.report.data import SOURCE_NAMES


def number(value: float | None, digits: int = 0, unit: str = "") -> str:
    """`1,234.5 km`; an unknown value says so rather than showing 0."""
    if value is None:
        return "not known"
    text = f"{value:,.{digits}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0:
        text = text[1:]
    return f"{text}\u202f{unit}" if unit else text


def percent(value: float | None, digits: int = 1) -> str:
    return "not known" if value is None else f"{value * 100:,.{digits}f}\u202f%"


def money(value: float | None, currency: str) -> str:
    return number(value, 2, currency) if value is not None else "not known"


def utc(at: datetime | None) -> str:
    return "unknown" if at is None else at.strftime("%Y-%m-%d %H:%M UTC")


def sources_text(sources: Iterable[str]) -> str:
    return ", ".join(SOURCE_NAMES.get(s, s) for s in sources) or "none"
