"""ired_core.report: the text, markdown and CSV renderings of a comparison."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from ired_core.report import CSV_COLUMNS, format_csv, format_markdown, format_text, render, significance_marks
from ired_core.stats import Baseline
from ired_core.verdict import Q201, Q202, Q203, Q204, builtin_baseline, compare

RNG = np.random.default_rng(7)
VALUES = {
    Q201: list(0.00972 + 0.00002 * RNG.standard_normal(10)),
    Q202: list(0.00968 + 0.00002 * RNG.standard_normal(10)),
    Q203: list(0.00960 + 0.00002 * RNG.standard_normal(10)),
    Q204: list(0.00950 + 0.00002 * RNG.standard_normal(10)),
    "single": [0.0097],
}


@pytest.fixture(scope="module")
def comparison():
    return compare(VALUES, builtin_baseline("plan"))


@pytest.mark.parametrize(
    ("p", "marks"),
    [
        (0.0009, "***"),
        (0.001, "**"),
        (0.0099, "**"),
        (0.01, "*"),
        (0.049, "*"),
        (0.05, ""),
        (0.7, ""),
        (None, ""),
    ],
)
def test_significance_marks(p, marks):
    assert significance_marks(p) == marks


def table_lines(text: str) -> list[str]:
    """The per-config table of a text report: from its header to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config "))
    end = lines.index("", start)
    return lines[start:end]


def test_text_table_is_aligned_and_marks_holm_p(comparison):
    lines = table_lines(format_text(comparison))
    assert len(lines) == 1 + len(VALUES)
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    q204 = next(line for line in lines if line.startswith(Q204))
    row = next(r for r in comparison.rows if r.name == Q204)
    assert f"{row.holm_p:.3g} ***" in q204
    assert f"{row.delta_pct:+.2f}" in q204
    single = next(line for line in lines if line.startswith("single"))
    assert single.split()[1] == "1" and "n/a" in single


def test_text_report_has_baseline_ablation_success_and_notes(comparison):
    text = format_text(comparison)
    assert "baseline plan (constant 0.0096761, measured elsewhere, on another held-out set)" in text
    assert "CD loss + Langevin" in text and "residual filter + energy schedule" in text
    assert f"level: {comparison.success.level}" in text
    assert f"Q-204 {comparison.success.q204_better_pct:.2f}% better" in text
    assert "single: n = 1" in text


def test_text_report_marks_the_baseline_row_and_omits_an_empty_ablation():
    text = format_text(compare({Q201: VALUES[Q201], "other": VALUES[Q204]}, Baseline.from_values(Q201, VALUES[Q201])))
    baseline_line = next(line for line in table_lines(text) if line.startswith(Q201))
    assert baseline_line.rstrip().endswith("baseline")
    assert "ablation" not in text


def test_a_worse_q204_reads_worse():
    text = format_text(compare({Q204: [0.0099, 0.0098]}, builtin_baseline("plan")))
    assert "level: none (Q-204 " in text and "% worse)" in text


def test_markdown_tables_are_well_formed(comparison):
    lines = format_markdown(comparison).splitlines()
    table = [line for line in lines if line.startswith("|")]
    cells_per_line = {line.count(" | ") for line in table if not line.startswith("|:")}
    assert len(cells_per_line) == 2  # the config table and the ablation table, each consistent
    header = lines.index(next(line for line in lines if line.startswith("| config |")))
    assert lines[header + 1].startswith("|:---|---:|")
    assert lines[header - 1] == ""  # a table needs a blank line before it
    assert any(line.startswith("### ") and "success level" in line for line in lines)


def test_csv_has_the_stable_columns_and_full_precision(comparison):
    records = list(csv.DictReader(io.StringIO(format_csv(comparison))))
    assert tuple(records[0]) == CSV_COLUMNS
    assert CSV_COLUMNS[:4] == ("metric", "baseline", "config", "n")
    assert [r["config"] for r in records] == list(VALUES)
    for record, row in zip(records, comparison.rows, strict=True):
        assert record["metric"] == "val_mse" and record["baseline"] == "plan"
        assert float(record["mean"]) == row.mean
        assert record["welch_p"] == ("" if row.welch_p is None else repr(row.welch_p))
        assert record["significance"] == significance_marks(row.holm_p)
        assert record["is_baseline"] == "false"
    single = records[-1]
    assert single["sd"] == "" and single["notes"] == "n = 1: sd, CI and tests need at least 2 values"


def test_render_dispatches_and_refuses_unknown_formats(comparison):
    assert render(comparison, "csv") == format_csv(comparison)
    assert render(comparison, "markdown") == format_markdown(comparison)
    assert render(comparison, "text") == format_text(comparison)
    with pytest.raises(ValueError, match="text, markdown, csv"):
        render(comparison, "html")
