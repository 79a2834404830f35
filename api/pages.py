"""The HTML dashboard: one server-rendered page (Jinja2 template, inline SVG plots, local assets).

Served at `GET /` and, for browsers, at `GET /results/compare`; both take the compare parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from api import plots
from ired_core.report import (  # the text report's cells, so the page and the terminal show the same numbers
    SIGNIFICANCE_LEGEND,
    ablation_table,
    comparison_table,
    report_notes,
    significance_marks,
    success_lines,
)
from ired_core.stats import BUILTIN_BASELINES
from ired_dcd.services import jobs, results
from ired_dcd.services.errors import ServiceError
from ired_dcd.states import ACTIVE

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
JOBS_SHOWN = 20
CURVE_TITLES = {
    "loss": "loss (train)",
    "energy_pos": "energy_pos E(y⁺)",
    "energy_neg": "energy_neg E(y⁻)",
    "grad_energy_norm": "grad_energy_norm ‖∇E‖",
}
"""Chart titles where the metric name alone says too little."""


class CompareParams(BaseModel):
    """Query parameters of a comparison, shared by the JSON, CSV, markdown and HTML answers."""

    model_config = ConfigDict(frozen=True)  # hashable: the key of a cached comparison

    configs: Annotated[
        str | None,
        Query(
            description="comma-separated configs, e.g. q201,q202,q203,q204 (default: the plan's four "
            "and every config with results)"
        ),
    ] = None
    baseline: Annotated[
        str, Query(description=f"{', '.join(BUILTIN_BASELINES)}, a config such as q201, or tag:NAME")
    ] = "plan"
    metric: Annotated[str, Query(description="metric to compare, lower is better")] = "val_mse"
    tag: Annotated[str | None, Query(description="only jobs and imported results with this tag")] = None

    def config_list(self) -> list[str] | None:
        """`q201, q204` → ["q201", "q204"]; None when not given."""
        return None if self.configs is None else [name.strip() for name in self.configs.split(",")]

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of `results.comparison_data` / `results.compare_results`."""
        return {"configs": self.config_list(), "baseline": self.baseline, "metric": self.metric, "tag": self.tag}


CompareParamsDep = Annotated[CompareParams, Query()]


def _strip_plot(data: results.ComparisonData, palette: dict[str, str]) -> Markup:
    """Every counted seed of every config, with the comparison's baseline as the reference line."""
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


def _curve_charts(session: Session, params: CompareParams, names: list[str], palette: dict[str, str]) -> list[Markup]:
    """One chart per curve metric (`results.CURVE_METRICS`), a line per config."""
    curves = results.config_curves(session=session, configs=names, tag=params.tag)
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
    return charts


def _comparison_context(session: Session, params: CompareParams) -> dict[str, Any]:
    """Table cells, success level, plots and notes of the comparison the parameters ask for."""
    data = results.comparison_data(session=session, **params.service_kwargs())
    comparison = data.comparison
    names = list(data.samples)
    palette = plots.colors(names)
    headers, cells = comparison_table(comparison)
    ablation_headers, ablation_cells = ablation_table(comparison.ablation)
    return {
        "comparison": comparison,
        "table": {"headers": headers, "rows": list(zip(comparison.rows, cells, strict=True))},
        "ablation": {"headers": ablation_headers, "rows": ablation_cells},
        "marks": {row.name: significance_marks(row.holm_p) for row in comparison.rows},
        "success_lines": success_lines(comparison),
        "trivial": results.trivial_predictors_line(comparison.metric),
        "legend": SIGNIFICANCE_LEGEND,
        "palette": palette,
        "strip_plot": _strip_plot(data, palette),
        "curve_charts": _curve_charts(session, params, names, palette),
        "notes": report_notes(comparison),
    }


def render_dashboard(request: Request, session: Session, params: CompareParams) -> HTMLResponse:
    """The page for `params`; an invalid parameter is shown on the page (422) with the form to fix it.

    The job list shows the latest jobs (with `tag`, those with the tag), which the page's script follows.
    """
    job_list, _count = jobs.list_jobs(session=session, tag=params.tag, limit=JOBS_SHOWN)
    context: dict[str, Any] = {
        "params": params,
        "baselines": list(BUILTIN_BASELINES),
        "jobs": job_list,
        "jobs_active": any(job.state in ACTIVE for job in job_list),
        "jobs_shown": JOBS_SHOWN,
        "error": None,
    }
    status = 200
    try:
        context |= _comparison_context(session, params)
    except ServiceError as exc:
        context["error"], status = str(exc), 422
    return TEMPLATES.TemplateResponse(request, "dashboard.html", context, status_code=status)
