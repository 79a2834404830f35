"""Issue 16, finding 1 on the real Postgres: comparisons and the dashboard stay bounded whatever is stored.

Before: 65,000 imported rows of one config made one comparison take 23 s and 10 GiB (a 10,000 × n
bootstrap matrix); six compares of that config spelled six ways shared no cache entry and got the API
killed; the default dashboard page had grown to 8.7 MB. `bench/abuse.py` measures the same at larger
scale; these tests pin the behaviour: one computation per comparison however it is spelled, a memory
peak that does not grow with n × resamples, a page whose size does not grow with the results.
"""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from api import cache as cache_module
from api.cache import ReadCache
from api.pages import JOBS_SHOWN
from api.plots import MAX_DOTS
from ired_core.input_rules import IMPORT_MAX_ROWS
from ired_dcd.services.results import comparison_data
from tests.api.test_read_cache import counted, settle
from tests.conftest import Lab
from tests.utils.results_factories import add_job, seeded_values, unique_tag

pytestmark = pytest.mark.services

SPELLINGS = ["q203", "Q-203", "q203_dcd_replay", "q203 ", "q203,q203", "q203, Q-203"]
MIB = 1 << 20


@pytest.fixture(scope="module")
def many(lab: Lab) -> str:
    """IMPORT_MAX_ROWS imported q203 results (one import, the most one takes) under a tag of their own."""
    tag = unique_tag()
    document = "config,seed,val_mse,tags\n" + "".join(
        f"q203,{seed},{0.0095 + (seed % 997) * 1e-8!r},{tag}\n" for seed in range(IMPORT_MAX_ROWS)
    )
    response = lab.http.post("/results/import", content=document.encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    return tag


def compare(lab: Lab, configs: str, tag: str, **params: str) -> Any:
    response = lab.http.get("/results/compare", params={"configs": configs, "tag": tag, **params})
    assert response.status_code == 200, response.text
    return response


def test_every_spelling_of_a_comparison_is_one_cache_entry(lab: Lab, many: str) -> None:
    settle(lab, lambda: compare(lab, "q203", many))
    first = compare(lab, "q203", many).content
    moved = counted(lab, lambda: [compare(lab, spelling, many).content == first for spelling in SPELLINGS])
    assert moved[("answers", "hit")] == len(SPELLINGS) and ("answers", "miss") not in moved  # nothing computed
    assert compare(lab, " Q-203 ", f" {many} ").content == first  # the tag is canonical too
    other = counted(lab, lambda: compare(lab, "q201,q203", many))
    assert other.get(("answers", "miss")) == 1  # another comparison is another entry


def test_concurrent_compares_under_several_spellings_all_answer(lab: Lab, many: str) -> None:
    spellings = [*SPELLINGS, "q201,q203"] * 3
    with ThreadPoolExecutor(len(spellings)) as pool:
        asks = [{"configs": configs, "tag": many} for configs in spellings]
        responses = list(pool.map(lambda params: lab.http.get("/results/compare", params=params), asks))
    assert [r.status_code for r in responses] == [200] * len(spellings)
    assert len({r.content for r, s in zip(responses, spellings, strict=True) if s != "q201,q203"}) == 1
    row = next(r for r in responses[0].json()["rows"] if r["name"] == "q203_dcd_replay")
    assert row["n"] == IMPORT_MAX_ROWS and row["delta_pct_ci_low"] < row["delta_pct"] < row["delta_pct_ci_high"]


def test_a_comparison_of_the_most_results_holds_memory_in_proportion_to_n(lab: Lab, many: str) -> None:
    tracemalloc.start()
    try:
        with lab.session() as session:  # q203 against itself: two sides of n values, bootstrapped
            data = comparison_data(session=session, configs=["q201", "q203"], baseline="q203", tag=many)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data.samples["q203_dcd_replay"]) == IMPORT_MAX_ROWS
    # the 10,000 × n index matrix of one side alone was 10,000 · 10⁵ · 8 bytes = 7.5 GiB
    assert peak < 200 * MIB, f"{peak / MIB:.0f} MiB"


def test_the_dashboard_page_stays_small_however_many_results(lab: Lab, many: str) -> None:
    html = lab.http.get("/", params={"tag": many}, headers={"Accept": "text/html"})
    assert html.status_code == 200
    assert len(html.content) < 150_000, len(html.content)  # 8.7 MB before, with 65,000 dots
    assert "q203_dcd_replay (n=100000, box only)" in html.text and html.text.count('class="point"') == 0
    with lab.session() as session:  # a config with few results keeps its dots
        add_job(session, "q201", seeded_values(0.0097, range(MAX_DOTS)), tags=[many], curves=False)
    small = lab.http.get("/", params={"tag": many, "configs": "q201,q203"}, headers={"Accept": "text/html"})
    assert small.text.count('class="point"') == MAX_DOTS


def test_the_dashboards_job_list_is_paged(lab: Lab) -> None:
    tag = unique_tag()
    with lab.session() as session:
        ids = [add_job(session, "q201", {0: 0.0097}, tags=[tag], curves=False).id for _ in range(2 * JOBS_SHOWN + 5)]
    first = lab.http.get("/", params={"tag": tag}, headers={"Accept": "text/html"}).text
    assert first.count("<tr data-job-id=") == JOBS_SHOWN and f'data-job-id="{ids[-1]}"' in first
    assert "jobs_page=2" in first and 'rel="next"' in first
    last = lab.http.get("/", params={"tag": tag, "jobs_page": 3}, headers={"Accept": "text/html"}).text
    assert last.count("<tr data-job-id=") == 5 and f'data-job-id="{ids[0]}"' in last and 'rel="prev"' in last


@pytest.fixture
def no_feed() -> Iterator[list[int]]:
    """This process's write count as the uncached path sees it, set by the test."""
    writes = [0]
    saved = cache_module.local_writes
    cache_module.local_writes = lambda: writes[0]
    yield writes
    cache_module.local_writes = saved


def test_without_a_change_feed_identical_requests_share_one_computation(no_feed: list[int]) -> None:
    cache = ReadCache("test", None, capacity=2)
    release, calls = threading.Event(), []

    def compute() -> str:
        calls.append(1)
        number = len(calls)
        release.wait(5)
        return f"answer {number}"

    async def scenario() -> list[str]:
        early = [asyncio.ensure_future(cache.get("key", ("results",), compute)) for _ in range(10)]
        await asyncio.sleep(0.1)
        no_feed[0] += 1  # this process wrote: a request from now on must not get the earlier computation
        late = asyncio.ensure_future(cache.get("key", ("results",), compute))
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.gather(*early, late)

    answers = asyncio.run(scenario())
    assert answers == ["answer 1"] * 10 + ["answer 2"] and len(calls) == 2
    assert asyncio.run(cache.get("key", ("results",), lambda: "again")) == "again"  # nothing was kept


def test_the_answers_cache_is_bounded_in_bytes() -> None:
    from tests.api.test_read_cache import _Feed

    cache = ReadCache("test", _Feed(), capacity=100, max_bytes=1000)  # type: ignore[arg-type]

    async def fill() -> None:
        for key in range(10):
            await cache.get(key, ("results",), lambda: b"x" * 300)

    asyncio.run(fill())
    assert len(cache._entries) == 3 and cache._bytes == 900
