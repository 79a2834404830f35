"""Render a `Comparison` as an aligned terminal table, markdown, or CSV.

Text and markdown show the columns a reader needs to judge a config (n, mean, sd, CI, Δ% and its
bootstrap CI, Welch and Mann-Whitney p, Hedges g, Holm p with significance marks), and, when the
comparison has them, the held-out standard error, the paired tests by seed and the failed runs; then
the ablation steps, the plan's success level (with its baseline and the configs that failed) and the
notes. CSV holds every field of every row at full precision, one row per config, in the order of
`CSV_COLUMNS`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Literal

from ired_core.stats import ConfigRow
from ired_core.verdict import AblationStep, Comparison, SuccessLevel

ReportFormat = Literal["text", "markdown", "csv"]
MISSING = "n/a"
SIGNIFICANCE_LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
SIGNIFICANCE_LEGEND = "marks on Holm-adjusted p: * p < 0.05, ** p < 0.01, *** p < 0.001"

_ROW_FIELDS = tuple(f.name for f in fields(ConfigRow) if f.name != "name")
CSV_COLUMNS = ("metric", "baseline", "config", *_ROW_FIELDS, "significance")
"""The CSV header, stable: one column per `ConfigRow` field, plus context and the marks."""


def significance_marks(p: float | None) -> str:
    """Marks for a p value: *** below 0.001, ** below 0.01, * below 0.05, else none."""
    if p is None:
        return ""
    return next((marks for threshold, marks in SIGNIFICANCE_LEVELS if p < threshold), "")


def _fmt(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def _interval(low: float | None, high: float | None, spec: str, suffix: str = "") -> str:
    if low is None or high is None:
        return MISSING
    return f"[{low:{spec}}{suffix}, {high:{spec}}{suffix}]"


def _holm_cell(row: ConfigRow) -> str:
    if row.is_baseline:
        return "baseline"
    return MISSING if row.holm_p is None else f"{row.holm_p:.3g} {significance_marks(row.holm_p)}".rstrip()


def _paired_holm_cell(row: ConfigRow) -> str:
    if row.is_baseline:
        return "baseline"
    p = row.paired_holm_p
    return MISSING if p is None else f"{p:.3g} {significance_marks(p)}".rstrip()


def _failed_cell(row: ConfigRow) -> str:
    return f"{row.runs_failed} of {row.n + row.runs_failed}" if row.runs_failed else "0"


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of the per-config table; optional columns only when some row has them."""
    level = f"{100 * (1 - comparison.alpha):g}%"
    rows = comparison.rows
    columns: list[tuple[str, Callable[[ConfigRow], str]]] = [
        ("config", lambda row: row.name),
        ("n", lambda row: str(row.n)),
        ("mean", lambda row: _fmt(row.mean, ".6g")),
    ]
    if any(row.held_out_se is not None for row in rows):
        columns.append(("held-out SE", lambda row: "≤ " + _fmt(row.held_out_se, ".2g") if row.held_out_se else MISSING))
    columns += [
        ("sd", lambda row: _fmt(row.sd, ".3g")),
        (f"{level} CI", lambda row: _interval(row.ci_low, row.ci_high, ".6g")),
        ("Δ%", lambda row: _fmt(row.delta_pct, "+.2f")),
        (f"Δ% {level} CI", lambda row: _interval(row.delta_pct_ci_low, row.delta_pct_ci_high, "+.2f")),
        ("Welch p", lambda row: _fmt(row.welch_p, ".3g")),
        ("MW p", lambda row: _fmt(row.mannwhitney_p, ".3g")),
        ("Hedges g", lambda row: _fmt(row.hedges_g, "+.2f")),
        ("Holm p", _holm_cell),
    ]
    if any(row.paired_n for row in rows):
        columns += [
            ("pairs", lambda row: str(row.paired_n) if row.paired_n else MISSING),
            ("paired t p", lambda row: _fmt(row.paired_p, ".3g")),
            ("Wilcoxon p", lambda row: _fmt(row.wilcoxon_p, ".3g")),
            ("paired Holm p", _paired_holm_cell),
        ]
    if any(row.runs_failed for row in rows):
        columns.append(("failed", _failed_cell))
    return [name for name, _ in columns], [[cell(row) for _, cell in columns] for row in rows]


def ablation_table(steps: Sequence[AblationStep]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of the ablation table."""
    headers = ["component", "config", "vs", "Δ mean", "Δ%", "Welch p", "Hedges g"]
    rows = [
        [
            step.component,
            step.config,
            step.reference,
            _fmt(step.delta_mean, "+.3g"),
            _fmt(step.delta_pct, "+.2f"),
            _fmt(step.welch_p, ".3g"),
            _fmt(step.hedges_g, "+.2f"),
        ]
        for step in steps
    ]
    return headers, rows


def _header_line(comparison: Comparison) -> str:
    return (
        f"{comparison.metric} vs baseline {comparison.baseline.describe()}; "
        "Δ% = 100·(mean − baseline)/baseline, negative is better"
    )


def _level_lines(comparison: Comparison, success: SuccessLevel, full: str) -> list[str]:
    gain = success.q204_better_pct
    how_much = "" if gain is None else f" ({full} {abs(gain):.2f}% {'better' if gain >= 0 else 'worse'})"
    verdict = "yes" if success.significant else "no"
    lines = [
        f"level: {success.level}{how_much}",
        f"significant at Holm p < {comparison.alpha:g}: {verdict} "
        f"(level supported by significant configs alone: {success.significant_level})",
        f"against: {success.baseline or comparison.baseline.describe()}",
    ]
    if success.failed_configs:
        lines.append(f"failed, counted as no improvement: {', '.join(success.failed_configs)}")
    return lines


def success_lines(comparison: Comparison) -> list[str]:
    """The plan's success level, from point estimates and from Holm-significant evidence; then the same
    for the stabilised arms when the comparison shows them."""
    lines = _level_lines(comparison, comparison.success, "Q-204")
    stabilised = comparison.stabilised_success
    if stabilised is not None:
        lines.append(f"with the stabilised arms ({', '.join(stabilised.arms[1:])}):")
        lines += ["  " + line for line in _level_lines(comparison, stabilised, "Q-204s")]
    return lines


def report_notes(comparison: Comparison) -> list[str]:
    """Every note, the row's or step's name first."""
    notes = list(comparison.notes)
    notes += [f"{row.name}: {note}" for row in comparison.rows for note in row.notes]
    notes += [f"{step.config} vs {step.reference}: {note}" for step in comparison.ablation for note in step.notes]
    stabilised = comparison.stabilised_success
    return notes + list(comparison.success.notes) + (list(stabilised.notes) if stabilised else [])


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """First column left-aligned, the rest right-aligned, two spaces between columns."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        aligned = (cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        return "  ".join([first.ljust(widths[0]), *aligned])

    return [line(headers), *(line(r) for r in rows)]


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured table; the first column left-aligned, numbers right-aligned."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join([":---", *["---:"] * (len(headers) - 1)]) + "|", *map(line, rows)]


def _document(
    comparison: Comparison,
    table: Callable[[list[str], list[list[str]]], list[str]],
    heading: Callable[[str], str],
    bullet: str,
) -> str:
    """The shared layout of the text and markdown reports."""
    lines = [heading(_header_line(comparison)), "", *table(*comparison_table(comparison))]
    lines += ["", SIGNIFICANCE_LEGEND]
    if comparison.ablation:
        lines += [
            "",
            heading("ablation: what each component adds to the previous config"),
            "",
            *table(*ablation_table(comparison.ablation)),
        ]
    lines += ["", heading("the plan's success level"), *(bullet + line for line in success_lines(comparison))]
    notes = report_notes(comparison)
    if notes:
        lines += ["", heading("notes"), *(bullet + note for note in notes)]
    return "\n".join(lines) + "\n"


def format_text(comparison: Comparison) -> str:
    """Plain-text report with aligned columns, for a terminal."""
    return _document(comparison, _text_table, heading=lambda title: title, bullet="  - ")


def format_markdown(comparison: Comparison) -> str:
    """Markdown report: headings, pipe tables, a bullet list of notes."""
    return _document(comparison, _markdown_table, heading=lambda title: f"### {title}", bullet="- ")


def _csv_cell(value: object) -> str:
    """Full precision for floats, lowercase booleans, '; '-joined notes, empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "; ".join(value)
    return str(value)


def format_csv(comparison: Comparison) -> str:
    """One row per config, columns in the order of `CSV_COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in comparison.rows:
        cells = [
            comparison.metric,
            comparison.baseline.name,
            row.name,
            *(getattr(row, name) for name in _ROW_FIELDS),
            significance_marks(row.holm_p),
        ]
        writer.writerow([_csv_cell(cell) for cell in cells])
    return buffer.getvalue()


_RENDERERS: dict[str, Callable[[Comparison], str]] = {
    "text": format_text,
    "markdown": format_markdown,
    "csv": format_csv,
}


def render(comparison: Comparison, fmt: ReportFormat) -> str:
    """The comparison in `fmt`; ValueError listing the valid formats otherwise."""
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(_RENDERERS)}")
    return _RENDERERS[fmt](comparison)
