"""The dashboard in real headless Chromium (Debian's), driven by Playwright, against the API on uvicorn.

The page is loaded with seeded results (the plan's four configs, five seeds each, and one job still
running): the table shows the seeded statistics, the SVG plots are drawn, the job list follows the
running job live and the page reloads with its result when it ends. A screenshot is saved under the
test's tmp dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sqlalchemy import select

from ired_dcd.models import Run
from ired_dcd.services.runs import set_state
from ired_dcd.states import State
from tests.conftest import Lab
from tests.utils.gates import unavailable
from tests.utils.results_factories import add_job, add_sweep, seed_plan_study, seeded_values, unique_tag
from tests.utils.services import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}

pytestmark = [pytest.mark.browser, pytest.mark.services]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright; both are gates (`tests.utils.gates.unavailable`)."""
    if not CHROMIUM.exists():
        unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed (pip extra dev): {exc}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def seeded(lab: Lab) -> tuple[str, dict[str, dict[int, float]], int]:
    """(tag, config → seed → val_mse, id of the run still going) under a tag of this test's own."""
    tag = unique_tag()
    with lab.session() as session:
        values = seed_plan_study(session, tag)
        running = add_job(session, "q204", {9: None}, tags=[tag], state=State.RUNNING)
        return tag, values, running.runs[0].id


def signed_in(lab: Lab) -> dict[str, str]:
    """The lab server asks for a token on every page and API call (the page's own polling included)."""
    return {"Authorization": f"Bearer {lab.token}"}


def cell_texts(page: Page, config: str) -> list[str]:
    return page.locator(f'table.compare tr[data-config="{config}"] > *').all_inner_texts()


def test_dashboard_shows_the_table_plots_and_live_jobs(
    lab: Lab, browser: Browser, seeded: tuple[str, dict[str, dict[int, float]], int], tmp_path: Path
) -> None:
    tag, values, running_run = seeded
    # Playwright's wait_for_function evaluates its predicate in the page, which the page's CSP forbids
    # (no 'unsafe-eval'): this test follows the live job list; the CSP is tested below on its own
    page = browser.new_page(viewport=LAPTOP, extra_http_headers=signed_in(lab), bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(f"{lab.base_url}/?tag={tag}")

    # 1. the compare table: the seeded statistics, the baseline, significance marks and the success level
    headers = page.locator("table.compare thead th").all_inner_texts()
    for config, by_seed in values.items():
        row = dict(zip(headers, cell_texts(page, config), strict=True))
        sample = np.array(list(by_seed.values()))
        assert row["config"] == config and row["n"] == "5"
        assert row["mean"] == format(sample.mean(), ".6g") and row["sd"] == format(sample.std(ddof=1), ".3g")
    assert dict(zip(headers, cell_texts(page, "q204_dcd_full"), strict=True))["Holm p"].endswith("***")
    assert page.locator("#success .level").inner_text().lower() == "moderate"
    assert "plan (constant 0.0096761, measured elsewhere" in page.locator("#success").inner_text()
    assert page.locator("table.ablation tbody tr").count() == 3

    # 2. the plots rendered: one dot per seed and the baseline line; a curve per config in each chart
    strip = page.locator("svg.plot-strip")
    assert strip.locator("circle.point").count() == 20 and strip.locator("line.baseline").count() == 1
    assert strip.locator("rect.box").count() == 4
    assert strip.bounding_box()["height"] > 150
    charts = page.locator("svg.plot-curve")
    assert charts.count() == 6
    for i in range(charts.count()):
        paths = charts.nth(i).locator("path.series")
        assert paths.count() == 4
        assert all(len(paths.nth(k).get_attribute("d") or "") > 20 for k in range(4))
        assert charts.nth(i).bounding_box()["width"] > 300

    # 3. usable on a laptop: nothing wider than the window
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # 4. the job list follows the running job (JS polls /jobs), then the page reloads with its result
    job_row = page.locator("table.jobs tbody tr").first
    assert job_row.locator(".state").inner_text() == "running" and job_row.locator(".pct").inner_text() == "50%"
    with lab.session() as session:
        session.get(Run, running_run).step = 300
        session.commit()
    page.wait_for_function("document.querySelector('table.jobs tbody tr .pct').textContent === '75%'", timeout=20_000)
    with lab.session() as session:
        run = session.scalars(select(Run).where(Run.id == running_run)).one()
        run.step, run.final_metrics = 400, {"val_mse": 0.0094}
        set_state(run, State.SUCCEEDED)
        session.commit()
    page.wait_for_function(
        "document.querySelector('table.compare tr[data-config=\"q204_dcd_full\"] td').textContent === '6'",
        timeout=20_000,
    )
    assert page.locator("table.jobs tbody tr .state").first.inner_text() == "succeeded"
    page.screenshot(path=str(tmp_path / "dashboard-after-job.png"), full_page=True)
    assert errors == []
    print(f"screenshots: {tmp_path / 'dashboard.png'}, {tmp_path / 'dashboard-after-job.png'}")


def test_dashboard_plots_render_without_javascript(
    lab: Lab, browser: Browser, seeded: tuple[str, dict[str, dict[int, float]], int]
) -> None:
    tag, _values, _running = seeded
    context = browser.new_context(java_script_enabled=False, viewport=LAPTOP, extra_http_headers=signed_in(lab))
    page = context.new_page()
    page.goto(f"{lab.base_url}/results/compare?tag={tag}")  # a browser asks for HTML: the dashboard
    assert page.locator("svg.plot-strip circle.point").count() == 20
    assert page.locator("svg.plot-curve path.series").count() == 24
    assert page.locator('meta[http-equiv="refresh"]').count() == 1  # jobs are running: refresh without JS
    context.close()


CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener(
  "securitypolicyviolation", (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI)
);
"""


def test_the_pages_work_under_their_content_security_policy(lab, browser, seeded):
    """Issue 16: the CSP (script-src 'self', style-src 'self', no framing) blocks nothing the pages use."""
    tag, _values, _running = seeded
    page = browser.new_page(viewport=LAPTOP, extra_http_headers=signed_in(lab))
    page.add_init_script(CSP_LISTENER)
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    response = page.goto(f"{lab.base_url}/?tag={tag}")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.locator("svg.plot-strip circle.point").count() == 20
    assert page.locator("table.compare svg.swatch rect").count() == 4  # colour keys drawn without a style attribute
    assert page.evaluate("getComputedStyle(document.querySelector('header h1')).fontWeight") != ""  # the stylesheet
    assert page.evaluate("window.__cspViolations") == [] and errors == []

    login = browser.new_page()
    login.add_init_script(CSP_LISTENER)
    login.goto(f"{lab.base_url}/login")
    assert login.locator("form input[name=token]").count() == 1
    assert login.evaluate("window.__cspViolations") == []


def test_a_sweep_page_sorts_its_points_by_mean_and_plots_the_metric_against_each_field(lab, browser, tmp_path):
    """Reached from the dashboard's list of sweeps, as a researcher would."""
    means = {(0.1, 0.5): 0.0097, (0.1, 1): 0.0095, (1, 0.5): 0.0096, (1, 1): 0.0094}
    values = {point: seeded_values(mean, [0, 1, 2], seed=i) for i, (point, mean) in enumerate(means.items())}
    points = {(("energy_reg_weight", w), ("langevin_sigma_mult", m)): v for (w, m), v in values.items()}
    with lab.session() as session:
        sweep_id = add_sweep(session, "q202", points).id
    page = browser.new_page(viewport=LAPTOP, extra_http_headers=signed_in(lab))
    page.add_init_script(CSP_LISTENER)
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    # the dashboard's cached list moves on when Postgres's notification of the new jobs arrives: a moment
    wait_for(lambda: f'data-sweep-id="{sweep_id}"' in lab.http.get("/").text, timeout=10, what="the sweep listed")
    page.goto(f"{lab.base_url}/")
    listed = page.locator(f'#sweeps tr[data-sweep-id="{sweep_id}"]')  # the newest sweep: in the latest shown
    assert listed.locator("> *").all_inner_texts()[1:5] == [
        "q202_dcd_cdloss",
        "energy_reg_weight=[0.1, 1] · langevin_sigma_mult=[0.5, 1]",
        "4",
        "0-2",
    ]
    listed.locator("a").click()
    page.wait_for_url(f"{lab.base_url}/sweeps/{sweep_id}")

    # the points, best mean first, each with the comparison's cells (n, mean, 95% CI, Δ%)
    rows = page.locator("table.points tbody tr")
    assert rows.count() == 4
    headers = page.locator("table.points thead th").all_inner_texts()
    shown = [dict(zip(headers, rows.nth(i).locator("> *").all_inner_texts(), strict=True)) for i in range(4)]
    expected = sorted(values, key=lambda point: np.mean(list(values[point].values())))
    assert [(float(row["energy_reg_weight"]), float(row["langevin_sigma_mult"])) for row in shown] == expected
    assert all(row["n"] == "3" and row["95% CI"].startswith("[") and row["state"] == "succeeded" for row in shown)
    assert page.locator("#progress .state").inner_text() == "succeeded"

    # one chart per swept field: a mean and a CI bar per point
    charts = page.locator("svg.plot-sweep")
    assert charts.count() == 2
    for i in range(2):
        assert charts.nth(i).locator("circle.estimate").count() == 4 and charts.nth(i).locator("line.ci").count() == 4
        assert charts.nth(i).bounding_box()["width"] > 300
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("window.__cspViolations") == [] and errors == []
    page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
