"""The FastAPI app: middleware, error handlers and routers, nothing else (add a router to ROUTERS).

Every router in ROUTERS needs a signed-in user when authentication is on (`Authorization: Bearer`);
PUBLIC_ROUTERS (the health check, the dashboard's static files, the browser sign-in) never do. The API server also runs
the reconciler (`reconcile_seconds`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api import errors, security
from api.cache import Reads
from api.deps import get_identity
from api.routes import artifacts, configs, dashboard, health, jobs, login, metrics, results, runs, sweeps
from ired_dcd.services.change_feed import ChangeFeed, listen_url
from ired_dcd.services.monitoring import HealthMonitor
from ired_dcd.services.reconciler import Reconciler
from ired_dcd.settings import Settings, get_settings

ROUTERS = [
    configs.router,
    jobs.router,
    sweeps.router,
    runs.router,
    artifacts.router,
    metrics.router,
    results.router,
    dashboard.router,
]
PUBLIC_ROUTERS = [health.router, dashboard.assets, login.router]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the API serves: the reconciler (unless `reconcile_seconds` is 0) and, on Postgres, the
    change feed that lets reads be answered from memory (api/cache.py; unless `read_cache` is off)."""
    settings = get_settings()
    reconciler = Reconciler(settings.reconcile_seconds).start() if settings.reconcile_seconds > 0 else None
    url = listen_url(settings.sqlalchemy_url) if settings.read_cache else None
    feed = ChangeFeed(url).start() if url is not None else None
    reads, health = Reads.on(feed), await run_in_threadpool(HealthMonitor(settings.health_seconds).start)
    app.state.reads, app.state.health = reads, health
    app.state.import_slots = CapacityLimiter(results.IMPORT_CONCURRENCY)  # one per event loop
    app.state.compare_slots = CapacityLimiter(results.COMPARE_CONCURRENCY)
    try:
        yield
    finally:
        if feed is not None:  # first: a feed that outlives its server would miss this process's writes
            feed.stop()
        if app.state.reads is reads:  # not a later lifespan's (tests serve one app object many times)
            app.state.reads, app.state.health = Reads.on(None), None
        health.stop()
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
    app.state.reads = Reads.on(None)  # nothing cached until the lifespan starts a change feed
    app.state.health = None  # until the lifespan starts the health monitor, /health checks per request
    app.state.import_slots = CapacityLimiter(results.IMPORT_CONCURRENCY)
    app.state.compare_slots = CapacityLimiter(results.COMPARE_CONCURRENCY)
    errors.install(app)
    security.install(app, settings or get_settings(), per_path={"/results/import": results.MAX_IMPORT_BYTES})
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(get_identity)])
    return app


app = create_app()
