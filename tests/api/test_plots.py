"""The dashboard's server-side SVG charts: axes, the strip plot and the learning curves."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from api.plots import MAX_POINTS, Group, Line, Scale, colors, line_chart, strip_plot

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    """The chart as XML (it must be well-formed to be inlined in the page)."""
    return ET.fromstring(str(markup))


def by_class(root: ET.Element, tag: str, css_class: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if css_class in e.get("class", "").split()]


@pytest.mark.parametrize(
    ("lo", "hi", "labels"),
    [
        (0.00935, 0.00975, ["0.0094", "0.0095", "0.0096", "0.0097"]),
        (0, 20000, ["0", "5k", "10k", "15k", "20k"]),
        (-2.2, 0.1, ["-2", "-1.5", "-1", "-0.5", "0"]),
    ],
)
def test_linear_ticks_are_round_numbers_inside_the_range(lo, hi, labels):
    assert [label for _, label in Scale(lo, hi, 0, 100).ticks()] == labels


def test_log_scale_spans_whole_decades():
    scale = Scale.fit([0.0093, 0.9], 200, 20, log=True)
    assert (scale.lo, scale.hi) == (0.001, 1.0)
    assert [label for _, label in scale.ticks()] == ["1e-3", "0.01", "0.1", "1"]
    assert scale(0.001) == 200 and scale(1.0) == 20 and scale(0.01) == pytest.approx(140)


def test_a_single_value_gets_a_non_empty_range():
    scale = Scale.fit([0.0095], 100, 0)
    assert scale.lo < 0.0095 < scale.hi


def test_strip_plot_draws_every_seed_the_boxes_and_the_baseline():
    palette = colors(["a", "b", "c"])
    groups = [
        Group("a", palette["a"], [0.0095, 0.0096, 0.0094], [0, 1, 2]),
        Group("b", palette["b"], [0.0097], [5], ["job 12"]),
        Group("c", palette["c"], [], []),
    ]
    root = parse(strip_plot(groups, metric="val_mse", baseline=0.0096761, baseline_label="baseline plan"))
    points = by_class(root, "circle", "point")
    assert len(points) == 4 and {p.get("fill") for p in points} == {palette["a"], palette["b"]}
    assert [p.find(f"{SVG}title").text for p in points][-1] == "b seed 5 (job 12): 0.0097"
    assert len(by_class(root, "rect", "box")) == 1  # only a group with three values or more gets a box
    assert len(by_class(root, "line", "baseline")) == 1 and len(by_class(root, "line", "mean")) == 2
    labels = [t.text for t in by_class(root, "text", "group-label")]
    assert labels == ["a (n=3)", "b (n=1)", "c (n=0)"]


def test_strip_plot_keeps_the_baseline_in_view_and_lower_values_lower():
    root = parse(
        strip_plot([Group("a", "#000", [0.009, 0.0091], [0, 1])], metric="m", baseline=0.0097, baseline_label="b")
    )
    baseline_y = float(by_class(root, "line", "baseline")[0].get("y1"))
    point_ys = [float(p.get("cy")) for p in by_class(root, "circle", "point")]
    assert 0 < baseline_y < min(point_ys) < 300  # SVG y grows downwards: a lower MSE is drawn lower


def test_text_is_escaped():
    markup = strip_plot([Group("<q204>&", "#000", [1.0], [0])], metric="m", baseline=None, baseline_label="")
    assert "<q204>" not in markup and "&lt;q204&gt;&amp;" in markup
    parse(markup)


def test_empty_charts_say_so():
    assert "no results yet" in strip_plot([], metric="val_mse", baseline=0.0096761, baseline_label="b")
    assert "no values logged yet" in line_chart("loss", [Line("a", "#000", [], [], [], [])])


def test_line_chart_draws_a_path_per_config_and_a_band_where_seeds_differ():
    lines = [
        Line("a", "#111", [100, 200, 300], [0.5, 0.3, 0.2], [0.4, 0.25, 0.15], [0.6, 0.35, 0.25]),
        Line("b", "#222", [100, 200, 300], [0.6, 0.4, 0.3], [0.6, 0.4, 0.3], [0.6, 0.4, 0.3]),
    ]
    root = parse(line_chart("loss", lines))
    series = by_class(root, "path", "series")
    assert [p.get("stroke") for p in series] == ["#111", "#222"]
    assert all(len(re.findall(r"[ML]", p.get("d"))) == 3 for p in series)
    assert [b.get("fill") for b in by_class(root, "path", "band")] == ["#111"]


def test_line_chart_uses_a_log_axis_for_values_spanning_decades():
    falling = Line("a", "#111", [1, 2, 3], [1.0, 0.1, 0.0095], [1.0, 0.1, 0.0095], [1.0, 0.1, 0.0095])
    assert "val_mse (log)" in line_chart("val_mse", [falling])
    signed = Line("a", "#111", [1, 2, 3], [-2.0, 0.5, 3.0], [-2.0, 0.5, 3.0], [-2.0, 0.5, 3.0])
    assert "(log)" not in line_chart("energy_gap", [signed])


def test_long_curves_are_thinned_and_keep_their_last_point():
    steps = list(range(1, 5001))
    root = parse(line_chart("loss", [Line("a", "#111", steps, [1.0 / s for s in steps], [0] * 5000, [2] * 5000)]))
    d = by_class(root, "path", "series")[0].get("d")
    assert len(re.findall(r"[ML]", d)) == MAX_POINTS
    assert float(d.rsplit("L", 1)[1].split(",")[0]) == 408.0  # the last step, at the plot's right edge


def test_a_single_logged_step_is_a_dot():
    root = parse(line_chart("loss", [Line("a", "#111", [50], [0.3], [0.3], [0.3])]))
    assert len(by_class(root, "circle", "point")) == 1 and not by_class(root, "path", "series")
