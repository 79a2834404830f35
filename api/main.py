"""The FastAPI app: middleware, error handlers and routers, nothing else (add a router to ROUTERS).

Every router in ROUTERS needs a signed-in user when authentication is on (`Authorization: Bearer`);
PUBLIC_ROUTERS (the health check, the dashboard's static files, the browser sign-in) never do. The API server also runs
the reconciler (`reconcile_seconds`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import errors, security
from api.deps import get_current_user
from api.routes import artifacts, configs, dashboard, health, jobs, login, metrics, results, runs
from ired_dcd.services.reconciler import Reconciler
from ired_dcd.settings import Settings, get_settings

ROUTERS = [
    configs.router,
    jobs.router,
    runs.router,
    artifacts.router,
    metrics.router,
    results.router,
    dashboard.router,
]
PUBLIC_ROUTERS = [health.router, dashboard.assets, login.router]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Run the reconciler beside the API while it serves (not when `reconcile_seconds` is 0)."""
    interval = get_settings().reconcile_seconds
    reconciler = Reconciler(interval).start() if interval > 0 else None
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, with the body limit and CORS of `settings` (default: the environment's)."""
    app = FastAPI(
        title="IRED-DCD lab service",
        summary="Submit IRED-DCD ablation jobs, follow their runs, read their learning curves.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    security.install(app, settings or get_settings(), per_path={"/results/import": results.MAX_IMPORT_BYTES})
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(get_current_user)])
    return app


app = create_app()
