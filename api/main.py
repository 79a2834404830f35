"""The FastAPI app: error handlers and routers, nothing else (add a router to ROUTERS)."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.routes import configs, dashboard, health, jobs, metrics, results, runs

ROUTERS = [health.router, configs.router, jobs.router, runs.router, metrics.router, results.router, dashboard.router]

app = FastAPI(
    title="IRED-DCD lab service",
    summary="Submit IRED-DCD ablation jobs, follow their runs, read their learning curves.",
    version="0.1.0",
)
errors.install(app)
for router in ROUTERS:
    app.include_router(router)
