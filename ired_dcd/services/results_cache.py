"""Comparisons cached until the results behind them change (GET /results/compare under load).

A comparison reads succeeded runs and imported results only, and neither changes once written: a run
that has succeeded keeps its final metrics, its job's preset and tags never change, and imports are
insert-only. So the results *version* — count, id sum and latest finish of the succeeded runs, count
and last id of the imports — changes exactly when a comparison could; one cheap query checks it.
Each process keeps the last `CAPACITY` comparisons (by their parameters) with the version they saw.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ired_core.stats import Comparison
from ired_dcd.models import ImportedResult, Run
from ired_dcd.services.results import compare_results
from ired_dcd.states import State

CAPACITY = 64

_cache: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], Comparison]] = OrderedDict()
_lock = threading.Lock()


def results_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever a run succeeds, a job with succeeded runs is deleted, or results are imported."""
    succeeded = select(func.count(Run.id), func.sum(Run.id), func.max(Run.finished_at)).where(
        Run.state == State.SUCCEEDED
    )
    imported = select(func.count(ImportedResult.id), func.max(ImportedResult.id))
    return (*session.execute(succeeded).one(), *session.execute(imported).one())


def cached_comparison(
    *,
    session: Session,
    configs: Sequence[str] | None = None,
    baseline: str = "plan",
    metric: str = "val_mse",
    tag: str | None = None,
) -> Comparison:
    """`compare_results` with the same arguments, computed again only when the results changed."""
    key = (None if configs is None else tuple(configs), baseline, metric, tag)
    version = results_version(session)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == version:
            _cache.move_to_end(key)
            return hit[1]
    comparison = compare_results(session=session, configs=configs, baseline=baseline, metric=metric, tag=tag)
    with _lock:
        _cache[key] = (version, comparison)
        _cache.move_to_end(key)
        while len(_cache) > CAPACITY:
            _cache.popitem(last=False)
    return comparison
