"""Charts drawn on the server as SVG geometry (no JavaScript, no CDN, nothing the Content-Security-Policy
refuses: presentation attributes only, no inline style). Each chart on a page also has a table of the same
numbers; the geometry here is only what the template needs to draw (coordinates already scaled)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28  # room for the axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    lines: dict[str, str] = field(default_factory=dict)  # series name -> polyline points ("x,y x,y …")
    ticks: list[Tick] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    baseline: float = HEIGHT - BOTTOM
    left: int = LEFT
    right: int = WIDTH - RIGHT


def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least ``value`` (an axis that ends on a round number)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _format(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def chart(labels: list[str], *, bars: list[float | None] | None = None,
          lines: dict[str, list[float | None]] | None = None, every_nth_label: int = 1) -> Chart:
    """One chart over ``labels`` (x positions): bars and/or lines on one y axis from 0. None is a gap."""
    lines = lines or {}
    values = [v for v in (bars or []) if v is not None]
    values += [v for series in lines.values() for v in series if v is not None]
    top_value = nice_ceiling(max(values, default=0))
    result = Chart()
    plot_width, plot_height = result.right - result.left, result.baseline - TOP
    slot = plot_width / max(len(labels), 1)

    def y_of(value: float) -> float:
        return round(result.baseline - plot_height * value / top_value, 1)

    for index in range(5):
        tick = top_value * index / 4
        result.ticks.append(Tick(y=y_of(tick), label=_format(tick)))
    for index, label in enumerate(labels):
        if index % every_nth_label == 0 or index == len(labels) - 1:
            result.x_labels.append((round(result.left + slot * (index + 0.5), 1), label))
    for index, value in enumerate(bars or []):
        if value is None:
            continue
        y = y_of(value)
        result.bars.append(Bar(x=round(result.left + slot * index + slot * 0.15, 1), y=y, width=round(slot * 0.7, 1),
                               height=round(result.baseline - y, 1), label=labels[index], value=value))
    for name, series in lines.items():
        result.lines[name] = " ".join(
            f"{round(result.left + slot * (index + 0.5), 1)},{y_of(value)}"
            for index, value in enumerate(series) if value is not None
        )
    return result
