"""Stacked bar charts as plain geometry, drawn as inline SVG by the templates: no chart library.

The SVG has no viewBox: across it, positions are percentages, so the chart fills any width
while its text keeps its size in CSS pixels (12 px) on a phone as on a desktop. Up it, they are
pixels. Each day (or other column) is one group the keyboard can reach, with its numbers in an
accessible name and a tooltip the portal's script shows on hover and focus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Series beyond this many are summed as one, "other".
MAX_SERIES = 5
#: Labels under the columns: at most this many; on a phone, every other one of them.
MAX_LABELS = 8


@dataclass(frozen=True, slots=True)
class Segment:
    y: float
    height: float
    #: The series' index, which picks its colour (``s0`` … ``s5``).
    series: int
    value: int


@dataclass(frozen=True, slots=True)
class Column:
    #: Left edge and width, in percent of the chart's width.
    x: float
    width: float
    label: str
    short: str
    total: int
    segments: tuple[Segment, ...]
    #: What the tooltip and the accessible name say: the label, the total, each series.
    lines: tuple[str, ...]
    #: None: no label under this column; "all": on every screen; "wide": not on a phone.
    labelled: str | None
    #: Where its label stands: centred, or flush with the chart's edge for the last column.
    anchor: str = "middle"

    @property
    def label_x(self) -> float:
        return self.x + self.width if self.anchor == "end" else self.x + self.width / 2


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True, slots=True)
class StackedChart:
    height: int
    bottom: int
    columns: tuple[Column, ...]
    ticks: tuple[Tick, ...]
    #: The series' names, in stacking order (the legend).
    series: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        return all(column.total == 0 for column in self.columns)


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def top_series(totals: Mapping[str, int], other: str) -> tuple[str, ...]:
    """The biggest series by their totals, and ``other`` when more are left over."""
    ranked = sorted((name for name, value in totals.items() if value), key=lambda n: -totals[n])
    if len(ranked) <= MAX_SERIES + 1:
        return tuple(ranked)
    return (*ranked[:MAX_SERIES], other)


def stacked_chart(
    labels: Sequence[str],
    values: Mapping[tuple[str, str], int],
    series: Sequence[str],
    *,
    other: str,
    total_label: str,
    short: Sequence[str] | None = None,
    height: int = 220,
) -> StackedChart:
    """Columns for ``labels``, each stacked from ``values[(label, name)]`` in ``series`` order;
    names not in ``series`` add to ``other`` when it is the last series."""
    top, bottom = 18, 24
    plot = height - top - bottom
    known = set(series)
    sums: list[dict[str, int]] = [{} for _ in labels]
    index = {label: n for n, label in enumerate(labels)}
    for (label, name), value in values.items():
        if label not in index or not value:
            continue
        key = name if name in known else other
        bucket = sums[index[label]]
        bucket[key] = bucket.get(key, 0) + value
    ceiling = nice_ceiling(max((sum(bucket.values()) for bucket in sums), default=0))
    slot = 100 / max(len(labels), 1)
    every = max(1, -(-len(labels) // MAX_LABELS))
    columns = []
    for n, label in enumerate(labels):
        bucket, base, segments = sums[n], float(top + plot), []
        for position, name in enumerate(series):
            value = bucket.get(name, 0)
            if not value:
                continue
            size = plot * value / ceiling
            base -= size
            segments.append(Segment(base, size, min(position, MAX_SERIES), value))
        total = sum(bucket.values())
        lines = (
            label,
            f"{total_label}: {total:,}",
            *(f"{name}: {bucket[name]:,}" for name in series if bucket.get(name)),
        )
        step = (len(labels) - 1 - n) // every
        labelled = None if (len(labels) - 1 - n) % every else ("all" if step % 2 == 0 else "wide")
        columns.append(
            Column(
                x=n * slot,
                width=slot,
                label=label,
                short=short[n] if short else label,
                total=total,
                segments=tuple(segments),
                lines=lines,
                labelled=labelled,
                anchor="end" if n == len(labels) - 1 and len(labels) > 1 else "middle",
            )
        )
    middle = ceiling // 2 if ceiling % 2 == 0 else 0
    ticks = tuple(
        Tick(y=top + plot - plot * v / ceiling, value=v) for v in sorted({0, middle, ceiling})
    )
    return StackedChart(height, bottom, tuple(columns), ticks, tuple(series))
