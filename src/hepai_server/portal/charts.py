"""Bar charts as plain geometry, drawn as inline SVG by the templates: no chart library, no
script, readable by screen readers through each bar's title."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int
    #: What the axis shows under the bar (the label, shortened).
    short: str


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    #: Left margin for the value axis, bottom margin for the labels.
    left: int
    bottom: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    #: The labels drawn under the bars (every few bars when there are many).
    labels: tuple[Bar, ...]

    @property
    def is_empty(self) -> bool:
        return all(bar.value == 0 for bar in self.bars)


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(
    points: Sequence[tuple[str, int]],
    *,
    width: int = 720,
    height: int = 200,
    max_labels: int = 10,
    short: Callable[[str], str] = str,
) -> BarChart:
    left, bottom, top = 56, 24, 8
    plot_width, plot_height = width - left, height - bottom - top
    ceiling = nice_ceiling(max((value for _, value in points), default=0))
    slot = plot_width / max(len(points), 1)
    bars = tuple(
        Bar(
            x=left + index * slot + slot * 0.1,
            y=top + plot_height - plot_height * value / ceiling,
            width=max(slot * 0.8, 1.0),
            height=plot_height * value / ceiling,
            label=label,
            value=value,
            short=short(label),
        )
        for index, (label, value) in enumerate(points)
    )
    every = max(1, -(-len(bars) // max_labels))
    # A middle line only where it lands on a whole number (not at 0.5 of a ceiling of 1).
    values = sorted({0, ceiling // 2 if ceiling % 2 == 0 else 0, ceiling})
    ticks = tuple(Tick(y=top + plot_height - plot_height * v / ceiling, value=v) for v in values)
    return BarChart(width, height, left, bottom, bars, ticks, bars[::every])
