"""The HTML dashboard: one server-rendered page (Jinja2 templates, inline SVG plots, local assets).

Served at `GET /` and, for browsers, at `GET /results/compare`; both take the compare parameters.

The page is three sections, each rendered to HTML once per change of what it shows and kept in the
read cache (`api/cache.py`) like any other answer: the comparison (table, success level, per-seed plot,
notes; topic `results`), the learning curves and the job list (topic `jobs`). Every section has a
size bound that does not grow with the data: at most one row per preset, per-seed dots only up to
`plots.MAX_DOTS` per config (a box summarises the rest), curves thinned to `plots.MAX_POINTS`, notes
naming at most a few seeds, and the jobs in pages of `JOBS_SHOWN`.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from anyio import CapacityLimiter
from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import URL

from api import plots
from api.cache import Reads
from ired_core.configs import format_seeds
from ired_core.report import (  # the text report's cells, so the page and the terminal show the same numbers
    SIGNIFICANCE_LEGEND,
    ablation_table,
    comparison_table,
    report_notes,
    significance_marks,
    success_lines,
)
from ired_core.verdict import AUTO_BASELINE, BUILTIN_BASELINES
from ired_dcd.db import new_session
from ired_dcd.services import jobs, results, sweeps
from ired_dcd.services.errors import ServiceError
from ired_dcd.states import ACTIVE

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
JOBS_SHOWN = 20
"""Jobs per page of the dashboard's job list."""
SWEEPS_SHOWN = 5
"""The latest sweeps the dashboard lists above its jobs."""
CURVE_TITLES = {
    "loss": "loss (train)",
    "energy_pos": "energy_pos E(y⁺)",
    "energy_neg": "energy_neg E(y⁻)",
    "grad_energy_norm": "grad_energy_norm ‖∇E‖",
}
"""Chart titles where the metric name alone says too little."""


class CompareParams(BaseModel):
    """Query parameters of a comparison, shared by the JSON, CSV, markdown and HTML answers."""

    model_config = ConfigDict(frozen=True)

    configs: Annotated[
        str | None,
        Query(
            description="comma-separated configs, e.g. q201,q202,q203,q204 (default: the plan's four "
            "and every config with results)"
        ),
    ] = None
    baseline: Annotated[
        str,
        Query(
            description=f"{AUTO_BASELINE} (q100 trained here under the same tag when it has results, else "
            f"plan), {', '.join(BUILTIN_BASELINES)}, a config such as q201, or tag:NAME"
        ),
    ] = AUTO_BASELINE
    metric: Annotated[str, Query(description="metric to compare, lower is better")] = "val_mse"
    tag: Annotated[str | None, Query(description="only jobs and imported results with this tag")] = None
    group_by: Annotated[
        str,
        Query(
            description="preset: one row per preset (a note lists a preset's settings); setting: one row per "
            "preset with its overrides, labelled `preset · key=value`"
        ),
    ] = "preset"

    def config_list(self) -> list[str] | None:
        """`q201, q204` → ["q201", "q204"]; None when not given or empty (the page's form sends `configs=`)."""
        if self.configs is None or not self.configs.strip():
            return None
        return [name.strip() for name in self.configs.split(",")]

    def query(self) -> results.CompareQuery:
        """The canonical comparison these parameters ask for (the key of its cached answers);
        InvalidInput naming a bad parameter."""
        return results.CompareQuery.of(
            configs=self.config_list(), baseline=self.baseline, metric=self.metric, tag=self.tag, group_by=self.group_by
        )


CompareParamsDep = Annotated[CompareParams, Query()]


def wants_html(request: Request) -> bool:
    """A browser navigating to the URL (its Accept lists text/html); API clients send */* or JSON."""
    return "text/html" in request.headers.get("accept", "")


def _strip_plot(data: results.ComparisonData, palette: dict[str, str]) -> Markup:
    """Every counted seed of every config (a box alone above MAX_DOTS), with the baseline line."""
    comparison = data.comparison
    groups = [
        plots.Group(
            name, palette[name], [s.value for s in samples], [s.seed for s in samples], [s.source for s in samples]
        )
        for name, samples in data.samples.items()
    ]
    base = comparison.baseline
    return plots.strip_plot(
        groups, metric=comparison.metric, baseline=base.mean, baseline_label=f"baseline {base.name} {base.mean:.6g}"
    )


def _render(template: str, context: dict[str, Any]) -> Markup:
    return Markup(TEMPLATES.get_template(template).render(context))


def comparison_section(query: results.CompareQuery) -> tuple[Markup, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The comparison's HTML (success level, table, ablation, per-seed plot, notes), its rows' names and,
    grouped by setting, each setting's config hash (for its curves)."""
    with new_session() as session:
        data = results.compare_query(session=session, query=query)
    comparison = data.comparison
    names = tuple(data.samples)
    palette = plots.colors(names)
    headers, cells = comparison_table(comparison)
    ablation_headers, ablation_cells = ablation_table(comparison.ablation)
    link = URL("/results/compare").include_query_params(**query.query_string())
    context = {
        "comparison": comparison,
        "table": {"headers": headers, "rows": list(zip(comparison.rows, cells, strict=True))},
        "ablation": {"headers": ablation_headers, "rows": ablation_cells},
        "marks": {row.name: significance_marks(row.holm_p) for row in comparison.rows},
        "success_lines": success_lines(comparison),
        "trivial": results.trivial_predictors_line(comparison.metric),
        "legend": SIGNIFICANCE_LEGEND,
        "swatches": {name: plots.swatch(color) for name, color in palette.items()},
        "strip_plot": _strip_plot(data, palette),
        "notes": report_notes(comparison),
        "downloads": {fmt: str(link.include_query_params(format=fmt)) for fmt in ("csv", "markdown", "json")},
    }
    return _render("_comparison.html", context), names, tuple(data.settings.items())


def curves_section(names: tuple[str, ...], tag: str | None, settings: tuple[tuple[str, str], ...]) -> Markup:
    """One chart per curve metric (`results.CURVE_METRICS`), a line per config or setting, with the colour key."""
    with new_session() as session:
        by_setting = dict(settings) if settings else None
        curves = results.config_curves(session=session, configs=names, tag=tag, settings=by_setting)
    palette = plots.colors(names)
    charts = []
    for metric, by_config in curves.items():
        lines = [
            plots.Line(
                name,
                palette[name],
                [p.step for p in points],
                [p.mean for p in points],
                [p.low for p in points],
                [p.high for p in points],
            )
            for name, points in by_config.items()
        ]
        charts.append(plots.line_chart(CURVE_TITLES.get(metric, metric), lines))
    swatches = {name: plots.swatch(color) for name, color in palette.items()}
    return _render("_curves.html", {"charts": charts, "swatches": swatches})


def jobs_section(tag: str | None, page: int) -> tuple[Markup, bool, int]:
    """One page of the latest jobs (with `tag`, the jobs with that tag), whether any of them is active,
    and how many jobs there are in all."""
    with new_session() as session:
        offset = (page - 1) * JOBS_SHOWN
        job_list, count = jobs.list_jobs(session=session, tag=tag, offset=offset, limit=JOBS_SHOWN, with_runs=False)
        counted = jobs.run_counts(session=session, job_ids=[job.id for job in job_list])
        rows = [
            {
                "id": job.id,
                "preset": job.preset,
                "seeds": format_seeds(job.seeds),
                "state": job.state,
                "pct": counted[job.id].percent,
                "tags": ", ".join(job.tags),
                "owner": job.owner.name,
                "created": job.created_at.strftime("%Y-%m-%d %H:%M"),
            }
            for job in job_list
        ]
    active = any(row["state"] in ACTIVE for row in rows)
    context = {"rows": rows, "page": page, "tag": tag, "shown": JOBS_SHOWN, "active": active}
    return _render("_jobs.html", context), active, count


def sweeps_section() -> Markup:
    """The latest sweeps, each a link to its page; nothing when there is none."""
    with new_session() as session:
        summaries, count = sweeps.list_sweeps(session=session, limit=SWEEPS_SHOWN)
        rows = [
            {
                "id": summary.sweep.id,
                "preset": summary.sweep.preset,
                "grid": sweeps.point_text(summary.sweep.grid),
                "points": math.prod(len(values) for values in summary.sweep.grid.values()),
                "seeds": format_seeds(summary.sweep.seeds),
                "state": summary.state,
                "pct": summary.progress.percent,
                "owner": summary.sweep.owner.name,
            }
            for summary in summaries
        ]
    return _render("_sweeps.html", {"rows": rows, "count": count}) if rows else Markup("")


async def render_dashboard(
    request: Request, reads: Reads, params: CompareParams, *, jobs_page: int = 1, limiter: CapacityLimiter
) -> HTMLResponse:
    """The page for `params`; an invalid parameter is shown on the page (422) with the form to fix it.

    The job list shows the latest jobs (with `tag`, those with the tag), which the page's script follows.
    """
    context: dict[str, Any] = {"params": params, "baselines": [AUTO_BASELINE, *BUILTIN_BASELINES], "error": None}
    status = 200
    tag = None
    try:
        query = params.query()
        tag = query.tag
        section, names, settings = await reads.answers.get(
            ("dashboard", query), ("results",), partial(comparison_section, query), limiter=limiter
        )
        curves = await reads.answers.get(
            ("curves", names, tag, settings), ("jobs",), partial(curves_section, names, tag, settings)
        )
        context |= {"comparison_section": section, "curves_section": curves, "metric": query.metric}
    except ServiceError as exc:
        context["error"], status = str(exc), 422
    jobs_html, active, count = await reads.answers.get(
        ("dashboard-jobs", tag, jobs_page), ("jobs",), partial(jobs_section, tag, jobs_page)
    )
    context |= {"jobs_section": jobs_html, "jobs_active": active, "jobs_shown": JOBS_SHOWN, "tag": tag}
    context["sweeps_section"] = await reads.answers.get(("dashboard-sweeps",), ("jobs",), sweeps_section)
    pages = max(1, -(-count // JOBS_SHOWN))
    context |= {"jobs_offset": (jobs_page - 1) * JOBS_SHOWN, "jobs_page": jobs_page, "jobs_pages": pages}
    context |= {"jobs_count": count}
    return TEMPLATES.TemplateResponse(request, "dashboard.html", context, status_code=status)


MISSING_CELL = "–"


def sweep_page(request: Request, status: sweeps.SweepStatus) -> HTMLResponse:
    """A sweep in the browser: progress, its points sorted by mean (with the comparison's cells: CI, Δ%,
    tests) and, per swept field, the metric against the field's values (each point's mean and 95% CI)."""
    sweep, comparison = status.sweep, status.comparison
    headers, cells = comparison_table(comparison)
    by_setting = {row.name: (row, row_cells[1:]) for row, row_cells in zip(comparison.rows, cells, strict=True)}
    palette = plots.colors([point.setting or str(point.job_id) for point in status.points])

    def mean_of(point: sweeps.SweepPoint) -> float:
        row = by_setting.get(point.setting or "", (None, []))[0]
        return row.mean if row is not None and row.mean is not None else float("inf")

    points = sorted(status.points, key=mean_of)
    rows = [
        {
            "point": point,
            "values": [json.dumps(point.values[name]) for name in sweep.grid],
            "cells": by_setting.get(point.setting or "", (None, [MISSING_CELL] * (len(headers) - 1)))[1],
            "swatch": plots.swatch(palette[point.setting or str(point.job_id)]),
        }
        for point in points
    ]
    charts = []
    for name, values in sweep.grid.items():
        categories = [json.dumps(value) for value in values]
        estimates = [
            plots.Estimate(
                point.setting,
                palette[point.setting],
                values.index(point.values[name]),
                row.mean,
                row.ci_low,
                row.ci_high,
            )
            for point in status.points
            if point.setting in by_setting and (row := by_setting[point.setting][0]).mean is not None
        ]
        charts.append(plots.effect_plot(comparison.metric, name, categories, estimates))
    compare_link = URL("/").include_query_params(
        configs=sweep.preset, tag=sweeps.sweep_tag(sweep.id), group_by="setting"
    )
    context = {
        "sweep": sweep,
        "status": status,
        "percent": status.progress.percent,
        "active": status.state in ACTIVE,
        "fields": list(sweep.grid),
        "headers": headers[1:],
        "rows": rows,
        "charts": charts,
        "comparison": comparison,
        "notes": report_notes(comparison),
        "compare_link": str(compare_link),
    }
    return TEMPLATES.TemplateResponse(request, "sweep.html", context)
