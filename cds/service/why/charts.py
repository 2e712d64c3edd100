"""Charts as inline SVG, drawn server-side with matplotlib (Agg): no JavaScript, no CDN, works offline.

Why server-side SVG: the page is opened inside EHR frames that may block scripts, and an SVG keeps
its text as text (``svg.fonttype = none``), so a screen reader, a search and a browser test all read
the values and thresholds on the chart. matplotlib is imported on the first chart only (it costs
about half a second), through the object API (``Figure``), never ``pyplot``'s global state, so pages
can be drawn in several threads.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

__all__ = ["bar_chart", "dose_chart", "lab_chart"]

_LOCK = threading.Lock()  # matplotlib's font cache and rcParams are process-wide
_READY = False
_COLOURS = {"info": "#4a78b5", "warning": "#d08a1e", "critical": "#c0392b", "accepted": "#2e8b57",
            "overridden": "#c0392b"}


def _setup() -> None:
    global _READY
    if not _READY:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "sir-cds", "font.size": 9,
                                    "axes.spines.top": False, "axes.spines.right": False})
        _READY = True


def _svg(figure: Any, title: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Title": title, "Date": None})
    text = buffer.getvalue()
    text = text[text.find("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG is inline in HTML
    return re.sub(r"<svg ", f'<svg role="img" aria-label="{_attr(title)}" class="chart" ', text, count=1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(value: float) -> str:
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:.2f}".rstrip("0").rstrip(".")


def lab_chart(series: Any, thresholds: Sequence[Any], now: datetime, *, scale: dict[str, float] | None = None) -> str:
    """A lab's values over time: the value the rule used ringed and labelled, values outside the
    look-back hollow, the look-back window shaded, each threshold the rule compares drawn and labelled.

    ``scale``: thresholds on a derived fact drawn in the lab's unit (``alt_x_uln`` x ULN -> U/L).
    """
    with _LOCK:
        _setup()
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7.2, 2.7))
        ax = figure.subplots()
        points = series.points
        dates = [p.value.date for p in points]
        first = min(dates + [series.lookback_start or now]) if dates else (series.lookback_start or now)
        left, right = first - timedelta(days=20), now + timedelta(days=20)
        if series.lookback_start is not None:
            ax.axvspan(float(date2num(series.lookback_start)), float(date2num(now)), color="#eef3fa", zorder=0,
                       label=f"look-back ({series.lookback_months} months)")
        ax.axvline(float(date2num(now)), color="#777777", linewidth=0.8, linestyle=":", zorder=1)
        inside = [p for p in points if p.in_lookback]
        outside = [p for p in points if not p.in_lookback]
        if len(points) > 1:
            ax.plot(dates, [p.value.value for p in points], color="#9aa7b8", linewidth=1, zorder=2)
        if inside:
            ax.scatter([p.value.date for p in inside], [p.value.value for p in inside], color="#2c5d9b", s=22, zorder=3)
        if outside:
            ax.scatter([p.value.date for p in outside], [p.value.value for p in outside], facecolors="white",
                       edgecolors="#2c5d9b", s=22, zorder=3, label="outside the look-back")
        for p in points:
            if p.value.comparator == "~" and p.value.low is not None and p.value.high is not None:
                ax.vlines(p.value.date, p.value.low, p.value.high, color="#2c5d9b", linewidth=2, zorder=3)
        used = series.used
        if used is not None:
            value = used.value
            ax.scatter([value.date], [value.value], s=120, facecolors="none", edgecolors="#111111", linewidths=1.6,
                       zorder=4, label="value the rule used")
            ax.annotate(f"{value.shown} {series.unit}\n{value.date.date().isoformat()}", (value.date, value.value),
                        textcoords="offset points", xytext=(8, 6), fontsize=8.5, fontweight="bold", zorder=5)
        drawn: set[tuple[str, float]] = set()
        for threshold in thresholds:
            factor = (scale or {}).get(threshold.fact, 1.0)
            level = threshold.value * factor
            if (threshold.op, level) in drawn:
                continue
            drawn.add((threshold.op, level))
            unit = f" {series.unit}" if factor == 1.0 else f" {series.unit} ({_fmt(threshold.value)} x ULN)"
            colour = "#c0392b" if threshold.holds else "#7f8c8d"
            ax.axhline(level, color=colour, linewidth=1.1, linestyle="--", zorder=2)
            ax.annotate(f"{threshold.op} {_fmt(level)}{unit}  [{threshold.where}]", (right, level),
                        xycoords="data", textcoords="offset points", xytext=(-4, 3), ha="right", fontsize=7.5,
                        color=colour, zorder=5)
        levels = [p.value.value for p in points] + [t.value * (scale or {}).get(t.fact, 1.0) for t in thresholds]
        if levels:
            low, high = min(levels), max(levels)
            pad = (high - low) * 0.18 or max(abs(high) * 0.2, 1.0)
            ax.set_ylim(min(0.0, low - pad) if low >= 0 else low - pad, high + pad)
        ax.set_xlim(float(date2num(left)), float(date2num(right)))
        locator = AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_ylabel(series.unit)
        ax.set_title(f"{series.title} ({series.unit})", loc="left", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        return _svg(figure, f"{series.title} over time")


def dose_chart(title: str, unit: str, value: float | None, at_least: bool, thresholds: Sequence[Any]) -> str:
    """One derived value now (the insulin total daily dose, U/kg/day) against the rule's thresholds."""
    with _LOCK:
        _setup()
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7.2, 1.5))
        ax = figure.subplots()
        shown = value if value is not None else 0.0
        ax.barh([0], [shown], color="#2c5d9b" if value is not None else "#dddddd", height=0.5)
        label = "unknown" if value is None else f"{'at least ' if at_least else ''}{_fmt(value)} {unit}"
        ax.annotate(label, (shown, 0), textcoords="offset points", xytext=(6, -3), fontsize=9, fontweight="bold")
        top = max([shown] + [t.value for t in thresholds] + [1.0])
        for threshold in thresholds:
            colour = "#c0392b" if threshold.holds else "#7f8c8d"
            ax.axvline(threshold.value, color=colour, linestyle="--", linewidth=1.1)
            ax.annotate(f"{threshold.op} {_fmt(threshold.value)} {unit}", (threshold.value, 0.42), fontsize=7.5,
                        color=colour, ha="center")
        ax.set_xlim(0, top * 1.3)
        ax.set_ylim(-0.6, 0.7)
        ax.set_yticks([])
        ax.set_title(f"{title} ({unit}), at the time of the call", loc="left", fontsize=10)
        return _svg(figure, title)


def bar_chart(title: str, categories: Sequence[str], stacks: dict[str, Sequence[float]], *, ylabel: str) -> str:
    """Stacked bars per category (dashboard: cards by indicator per rule, feedback outcomes per rule)."""
    with _LOCK:
        _setup()
        from matplotlib.figure import Figure

        height = max(1.8, 0.32 * len(categories) + 1.0)
        figure = Figure(figsize=(7.6, height))
        ax = figure.subplots()
        left = [0.0] * len(categories)
        positions = list(range(len(categories)))
        for name, values in stacks.items():
            ax.barh(positions, list(values), left=left, color=_COLOURS.get(name, None), label=name, height=0.6)
            left = [a + b for a, b in zip(left, values)]
        for y, total in zip(positions, left):
            if total:
                ax.annotate(_fmt(total), (total, y), textcoords="offset points", xytext=(4, -3), fontsize=8)
        ax.set_yticks(positions, list(categories))
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_xlim(0, max(left + [1.0]) * 1.15)
        ax.set_title(title, loc="left", fontsize=10)
        if stacks:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        return _svg(figure, title)
