"""Server-side SVG charts for the dashboard: per-seed strip/box plots and learning curves.

Pure functions from numbers to inline SVG markup (`markupsafe.Markup`, every text escaped): no
JavaScript, no chart library, so the page works offline and with scripts off. Charts scale with their
container (`viewBox`, width 100%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup, escape

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#7f7f7f", "#f0e442")
"""Okabe–Ito colours (distinguishable with colour-blindness), assigned to configs in display order."""
MAX_POINTS = 400
"""Points per curve drawn; longer curves are thinned evenly (the last point always kept)."""
LOG_SPAN = 30.0
"""A curve whose positive values span more than this factor is drawn on a log axis."""
MAX_DOTS = 200
"""Per-seed dots drawn per config; a config with more results is drawn as its box, whiskers and mean
alone, so the page stays small however many results are stored."""


def colors(names: Sequence[str]) -> dict[str, str]:
    """One palette colour per name, in order (cycling after eight)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def swatch(color: str) -> Markup:
    """A small square of `color` beside a label: an SVG fill, not a `style` attribute, which the
    pages' Content-Security-Policy (`style-src 'self'`) would block."""
    return Markup(
        '<svg class="swatch" viewBox="0 0 10 10" aria-hidden="true" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="10" height="10" rx="2" fill="{escape(color)}"/></svg>'
    )


# ---------------------------------------------------------------------------------------------
# axes


def _nice_step(span: float, count: int) -> float:
    """A 1-2-5 × 10^k step giving about `count` intervals over `span`."""
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] to pixels in [start, end] (linear, or log10 when `log`)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    @classmethod
    def fit(cls, values: Sequence[float], start: float, end: float, *, log: bool = False) -> Scale:
        """A scale covering `values` with 5% padding (a unit around a single value); decades when log."""
        lo, hi = min(values), max(values)
        if log:
            return cls(10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi)), start, end, log=True)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        return cls(lo - pad, hi + pad, start, end)

    def __call__(self, value: float) -> float:
        if self.log:
            lo, hi, value = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            lo, hi = self.lo, self.hi
        return self.start + (value - lo) / (hi - lo) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[tuple[float, str]]:
        """(value, label) pairs: powers of ten on a log scale, 1-2-5 multiples on a linear one."""
        if self.log:
            decades = range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)
            return [(10.0**k, f"1e{k}" if abs(k) > 2 else format(10.0**k, "g")) for k in decades]
        step = _nice_step(self.hi - self.lo, count)
        first = math.ceil(self.lo / step)
        values = [k * step for k in range(first, math.floor(self.hi / step) + 1)]
        return [(v, _label(v, step)) for v in values]


def _label(value: float, step: float) -> str:
    """A tick label with just enough digits to tell neighbours `step` apart; k and M for thousands."""
    if step >= 1:
        if abs(value) >= 1e6:
            return f"{value / 1e6:g}M"
        return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"
    if value == 0:
        return "0"
    digits = max(1, math.floor(math.log10(abs(value))) - math.floor(math.log10(step)) + 1)
    return format(value, f".{digits}g")


def _number(value: float) -> str:
    """A value for a tooltip."""
    return format(value, ".6g")


@dataclass(frozen=True)
class Frame:
    """The plot area inside the SVG canvas (pixels of the viewBox)."""

    width: int
    height: int
    left: int = 64
    right: int = 12
    top: int = 28
    bottom: int = 34

    @property
    def x0(self) -> int:
        return self.left

    @property
    def x1(self) -> int:
        return self.width - self.right

    @property
    def y0(self) -> int:
        return self.height - self.bottom

    @property
    def y1(self) -> int:
        return self.top


def _svg(frame: Frame, css_class: str, title: str, body: list[str]) -> Markup:
    """The <svg> element around `body`, labelled for screen readers."""
    head = (
        f'<svg class="plot {css_class}" viewBox="0 0 {frame.width} {frame.height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def _y_axis(frame: Frame, scale: Scale, label: str) -> list[str]:
    """Horizontal grid lines with tick labels, and the axis title."""
    parts = []
    for value, text in scale.ticks():
        y = scale(value)
        parts.append(f'<line class="grid" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{frame.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
    parts.append(f'<text class="axis-title" x="{frame.x0}" y="{frame.y1 - 12}">{escape(label)}</text>')
    return parts


def _empty(frame: Frame, css_class: str, title: str, message: str) -> Markup:
    """A frame with a message instead of data."""
    body = [
        f'<rect class="frame" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>',
        f'<text class="empty" x="{(frame.x0 + frame.x1) / 2}" y="{(frame.y0 + frame.y1) / 2}" '
        f'text-anchor="middle">{escape(message)}</text>',
        f'<text class="axis-title" x="{frame.x0}" y="{frame.y1 - 12}">{escape(title)}</text>',
    ]
    return _svg(frame, css_class, title, body)


# ---------------------------------------------------------------------------------------------
# per-seed strip / box plot


@dataclass(frozen=True)
class Group:
    """One config's per-seed values for the strip plot."""

    name: str
    color: str
    values: Sequence[float]
    seeds: Sequence[int]
    sources: Sequence[str] = ()  # where each value came from ("job 12", "import"), shown on hover


def _jitter(index: int, half_width: float) -> float:
    """A deterministic horizontal offset in [-half_width, half_width] (golden-ratio sequence)."""
    return ((index * 0.6180339887) % 1.0 - 0.5) * 2 * half_width


def _box(x: float, width: float, scale: Scale, values: np.ndarray, color: str) -> list[str]:
    """Box from the first to the third quartile, median line, whiskers to min and max."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    low, high = float(values.min()), float(values.max())
    left = x - width / 2
    return [
        f'<line class="whisker" x1="{x:.1f}" x2="{x:.1f}" y1="{scale(low):.1f}" y2="{scale(high):.1f}" '
        f'stroke="{color}"/>',
        f'<rect class="box" x="{left:.1f}" y="{scale(q3):.1f}" width="{width:.1f}" '
        f'height="{max(scale(q1) - scale(q3), 0.5):.1f}" stroke="{color}"/>',
        f'<line class="median" x1="{left:.1f}" x2="{left + width:.1f}" y1="{scale(median):.1f}" '
        f'y2="{scale(median):.1f}" stroke="{color}"/>',
    ]


def strip_plot(groups: Sequence[Group], *, metric: str, baseline: float | None, baseline_label: str) -> Markup:
    """Every seed's value as a dot per config, over a box (quartiles) and the mean, with the baseline line.

    A config with more than MAX_DOTS values gets no dots: its box, whiskers and mean summarise them.
    """
    frame = Frame(width=720, height=300, bottom=40)
    title = metric
    values = [v for group in groups for v in group.values]
    if not values:
        return _empty(frame, "plot-strip", title, "no results yet")
    scale = Scale.fit([*values, *([baseline] if baseline is not None else [])], frame.y0, frame.y1)
    body = _y_axis(frame, scale, title)
    slot = (frame.x1 - frame.x0) / max(len(groups), 1)
    for i, group in enumerate(groups):
        x = frame.x0 + slot * (i + 0.5)
        summary = len(group.values) > MAX_DOTS
        body.append(
            f'<text class="tick group-label" x="{x:.1f}" y="{frame.y0 + 16}" text-anchor="middle">'
            f"{escape(group.name)} (n={len(group.values)}{', box only' if summary else ''})</text>"
        )
        if not group.values:
            continue
        array = np.asarray(group.values, dtype=np.float64)
        if array.size >= 3:
            body += _box(x, slot * 0.4, scale, array, group.color)
        mean_y = scale(float(array.mean()))
        body.append(
            f'<line class="mean" x1="{x - slot * 0.3:.1f}" x2="{x + slot * 0.3:.1f}" y1="{mean_y:.1f}" '
            f'y2="{mean_y:.1f}" stroke="{group.color}"><title>mean {_number(float(array.mean()))}</title></line>'
        )
        if summary:
            continue
        for k, (value, seed) in enumerate(zip(group.values, group.seeds, strict=True)):
            source = f" ({group.sources[k]})" if group.sources else ""
            body.append(
                f'<circle class="point" cx="{x + _jitter(k, slot * 0.15):.1f}" cy="{scale(value):.1f}" r="4" '
                f'fill="{group.color}"><title>{escape(group.name)} seed {seed}{escape(source)}: {_number(value)}'
                "</title></circle>"
            )
    if baseline is not None:
        y = scale(baseline)
        body.append(
            f'<line class="baseline" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}">'
            f"<title>{escape(baseline_label)}</title></line>"
        )
        body.append(
            f'<text class="baseline-label" x="{frame.x1 - 4}" y="{y - 5:.1f}" text-anchor="end">'
            f"{escape(baseline_label)}</text>"
        )
    return _svg(frame, "plot-strip", title, body)


# ---------------------------------------------------------------------------------------------
# learning curves


@dataclass(frozen=True)
class Line:
    """One config's curve: the mean over seeds per step, with the min–max band across seeds."""

    name: str
    color: str
    steps: Sequence[int]
    means: Sequence[float]
    lows: Sequence[float]
    highs: Sequence[float]


def _thin(line: Line) -> Line:
    """At most MAX_POINTS points, evenly spaced, the last kept."""
    if len(line.steps) <= MAX_POINTS:
        return line
    keep = sorted(set(np.linspace(0, len(line.steps) - 1, MAX_POINTS).round().astype(int).tolist()))

    def pick(seq: Sequence[float]) -> list[float]:
        return [seq[i] for i in keep]

    return Line(line.name, line.color, pick(line.steps), pick(line.means), pick(line.lows), pick(line.highs))


def _use_log(values: Sequence[float]) -> bool:
    """Log axis when every value is positive and they span more than LOG_SPAN."""
    return min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _path(xs: Sequence[float], ys: Sequence[float]) -> str:
    return "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def line_chart(title: str, lines: Sequence[Line]) -> Markup:
    """Curves of one metric against the step, one colour per config, log y when the values span decades."""
    frame = Frame(width=420, height=230)
    lines = [_thin(line) for line in lines if line.steps]
    if not lines:
        return _empty(frame, "plot-curve", title, "no values logged yet")
    y_values = [v for line in lines for v in (*line.lows, *line.highs)]
    log = _use_log(y_values)
    steps = [s for line in lines for s in line.steps]
    x_scale = Scale(min(steps), max(max(steps), min(steps) + 1), frame.x0, frame.x1)
    y_scale = Scale.fit(y_values, frame.y0, frame.y1, log=log)
    body = _y_axis(frame, y_scale, f"{title} (log)" if log else title)
    for value, text in x_scale.ticks(4):
        x = x_scale(value)
        body.append(f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 16}" text-anchor="middle">{escape(text)}</text>')
    body.append(f'<text class="tick axis-x" x="{frame.x1}" y="{frame.height - 2}" text-anchor="end">step</text>')
    for line in lines:
        xs = [x_scale(s) for s in line.steps]
        if len(line.steps) > 1 and any(lo != hi for lo, hi in zip(line.lows, line.highs, strict=True)):
            band = _path([*xs, *reversed(xs)], [y_scale(v) for v in (*line.highs, *reversed(line.lows))])
            body.append(f'<path class="band" d="{band}Z" fill="{line.color}"/>')
        ys = [y_scale(v) for v in line.means]
        last = f"{escape(line.name)}: {_number(line.means[-1])} at step {line.steps[-1]}"
        if len(xs) == 1:
            body.append(
                f'<circle class="point" cx="{xs[0]:.1f}" cy="{ys[0]:.1f}" r="3" fill="{line.color}">'
                f"<title>{last}</title></circle>"
            )
        else:
            body.append(f'<path class="series" d="{_path(xs, ys)}" stroke="{line.color}"><title>{last}</title></path>')
    return _svg(frame, "plot-curve", title, body)


# ---------------------------------------------------------------------------------------------
# a metric against one swept field


@dataclass(frozen=True)
class Estimate:
    """One setting's mean with its 95% CI, at `position` on a categorical axis (the field's value)."""

    name: str
    color: str
    position: int
    mean: float
    low: float | None  # None with fewer than two seeds: no interval
    high: float | None


def effect_plot(metric: str, field: str, categories: Sequence[str], estimates: Sequence[Estimate]) -> Markup:
    """`metric` against the values of one swept field: each setting's mean and 95% CI at its value of the
    field, the settings sharing a value side by side (in the order given)."""
    frame = Frame(width=420, height=230, bottom=40)
    title = f"{metric} vs {field}"
    if not estimates:
        return _empty(frame, "plot-sweep", title, "no results yet")
    y_values = [v for e in estimates for v in (e.mean, e.low, e.high) if v is not None]
    scale = Scale.fit(y_values, frame.y0, frame.y1)
    body = _y_axis(frame, scale, title)
    slot = (frame.x1 - frame.x0) / max(len(categories), 1)
    for i, category in enumerate(categories):
        x = frame.x0 + slot * (i + 0.5)
        body.append(
            f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 16}" text-anchor="middle">{escape(category)}</text>'
        )
    body.append(
        f'<text class="tick axis-x" x="{frame.x1}" y="{frame.height - 2}" text-anchor="end">{escape(field)}</text>'
    )
    shared: dict[int, int] = {}
    for e in estimates:
        shared[e.position] = shared.get(e.position, 0) + 1
    seen: dict[int, int] = {}
    for e in estimates:
        k = seen[e.position] = seen.get(e.position, -1) + 1
        x = frame.x0 + slot * (e.position + 0.5) + (k - (shared[e.position] - 1) / 2) * min(10.0, slot / 8)
        interval = "" if e.low is None or e.high is None else f" [{_number(e.low)}, {_number(e.high)}]"
        tip = f"<title>{escape(e.name)}: {_number(e.mean)}{interval}</title>"
        if e.low is not None and e.high is not None:
            body.append(
                f'<line class="ci" x1="{x:.1f}" x2="{x:.1f}" y1="{scale(e.low):.1f}" y2="{scale(e.high):.1f}" '
                f'stroke="{e.color}">{tip}</line>'
            )
        body.append(
            f'<circle class="estimate" cx="{x:.1f}" cy="{scale(e.mean):.1f}" r="4" fill="{e.color}">{tip}</circle>'
        )
    return _svg(frame, "plot-sweep", title, body)
