"""A small HTTP client for the job API (used by the CLI; handy in notebooks).

from ired_dcd.client import Client
client = Client("http://lab-server:8000", token="ired_…")    # or $IRED_SERVER and $IRED_TOKEN
job = client.submit("q204", seeds=range(10), overrides={"train_steps": 20000})
job = client.wait(job["id"])
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from ired_dcd.states import TERMINAL

DEFAULT_SERVER = "http://127.0.0.1:8000"


class ClientError(Exception):
    """The server refused the request (its `detail` is the message) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def server_url(server: str | None = None) -> str:
    """`server`, else $IRED_SERVER, else the embedded default on 127.0.0.1:8000."""
    return (server or os.environ.get("IRED_SERVER") or DEFAULT_SERVER).rstrip("/")


class Client:
    def __init__(self, server: str | None = None, *, token: str | None = None, timeout: float = 30.0) -> None:
        """`token`: the API token (default $IRED_TOKEN), sent as `Authorization: Bearer`."""
        self.server = server_url(server)
        token = token or os.environ.get("IRED_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, timeout=timeout, headers=headers)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._send(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.server}: {exc}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(f"{detail} (HTTP {response.status_code})", response.status_code)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The request; a read (GET) is sent once more when the server dropped the connection without
        answering: a kept-alive connection the server closed just as the request left (a long `wait`
        polls on one), or a restart. A write is never repeated: the first may have been applied."""
        try:
            return self._http.request(method, path, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if method != "GET":
                raise
            return self._http.request(method, path, **kwargs)

    def submit(
        self,
        config: str,
        seeds: Iterable[int] | Mapping[str, int],
        *,
        overrides: Mapping[str, Any] | None = None,
        priority: int = 5,
        tags: Iterable[str] = (),
        executor: str = "celery",
        slurm: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit a job; seeds as a list or {"start": s, "count": n}; `slurm`: overrides for executor slurm."""
        body: dict[str, Any] = {
            "config": config,
            "seeds": dict(seeds) if isinstance(seeds, Mapping) else list(seeds),
            "overrides": dict(overrides or {}),
            "priority": priority,
            "tags": list(tags),
            "executor": executor,
        }
        if slurm:
            body["slurm"] = dict(slurm)
        return self._request("POST", "/jobs", json=body)

    def sweep(
        self,
        config: str,
        grid: Mapping[str, Iterable[Any]],
        seeds: Iterable[int] | Mapping[str, int],
        *,
        overrides: Mapping[str, Any] | None = None,
        priority: int = 5,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Submit a sweep: one job per combination of the grid's values, each over every seed."""
        body: dict[str, Any] = {
            "config": config,
            "grid": {name: list(values) for name, values in grid.items()},
            "seeds": dict(seeds) if isinstance(seeds, Mapping) else list(seeds),
            "overrides": dict(overrides or {}),
            "priority": priority,
            "tags": list(tags),
        }
        return self._request("POST", "/sweeps", json=body)

    def sweep_status(self, sweep_id: int, **params: str) -> dict[str, Any]:
        """GET /sweeps/{id}: progress, points and their comparison (params: baseline, metric)."""
        return self._request("GET", f"/sweeps/{sweep_id}", params=params)

    def sweeps(self, **filters: Any) -> dict[str, Any]:
        """`{"data": [...], "count": n}`: sweeps newest first with their progress; filters: owner, offset, limit."""
        return self._request("GET", "/sweeps", params={k: v for k, v in filters.items() if v is not None})

    def cancel_sweep(self, sweep_id: int) -> dict[str, Any]:
        return self._request("POST", f"/sweeps/{sweep_id}/cancel")

    def jobs(self, **filters: Any) -> dict[str, Any]:
        """`{"data": [...], "count": n}`, each job summarised (its runs counted per state); filters: state,
        config, owner, tag, offset, limit; view=full lists every job with its config and runs."""
        return self._request("GET", "/jobs", params={k: v for k, v in filters.items() if v is not None})

    def job(self, job_id: int) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/cancel")

    def retry(self, job_id: int) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/retry")

    def delete(self, job_id: int) -> None:
        self._request("DELETE", f"/jobs/{job_id}")

    def run(self, run_id: int) -> dict[str, Any]:
        return self._request("GET", f"/runs/{run_id}")

    def metrics(self, run_id: int, names: Iterable[str] = ()) -> dict[str, Any]:
        params = {"names": ",".join(names)} if names else {}
        return self._request("GET", f"/runs/{run_id}/metrics", params=params)

    def configs(self) -> dict[str, Any]:
        return self._request("GET", "/configs")

    def wait(self, job_id: int, *, timeout: float | None = None, poll: float = 2.0) -> dict[str, Any]:
        """Poll until the job has ended (or `timeout` seconds passed) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in TERMINAL or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(poll)
