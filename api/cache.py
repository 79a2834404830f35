"""Reads kept in memory until the data behind them changes (the API's answer to many clients polling).

A `ReadCache` maps a key (a route and its parameters) to a value computed from the database and the
version of the topics it read (ired_dcd/services/change_feed.py):

- while the version stands, the value is served from memory;
- when another process changed a topic, or the value is REFRESH_SECONDS old, the value is still
  served while the new one is computed in the background (stale-while-revalidate: neither how often
  workers write nor a lost notification ever makes a reader wait), at most every
  MIN_REFRESH_SECONDS (a busy cluster's heartbeats cost the API a bounded share of its CPU);
- when this process changed a topic, or nobody asked for MAX_AGE_SECONDS, requests wait for the new value.

Computing runs in the thread pool, once per key at a time however many requests ask. Without a live
change feed (SQLite, Postgres restarting) every read computes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool

from ired_dcd.services.change_feed import ChangeFeed, Version

T = TypeVar("T")

MIN_REFRESH_SECONDS = 0.5
"""Another process's change is computed in the background at most this often per value."""
REFRESH_SECONDS = 30.0
"""A value in use is computed again this often, notified or not: what bounds staleness if a change
ever went unheard (a connection dead without a word is found by TCP keepalive within ~25 s)."""
MAX_AGE_SECONDS = 2 * REFRESH_SECONDS
"""Never served older: after a quiet spell the first request waits for a new value."""

REGISTRY = CollectorRegistry()
"""The caches' counters, served at GET /metrics beside the job and run gauges (per API process)."""
LOOKUPS = Counter(
    "ired_read_cache_lookups", "Reads served by the API, by cache and outcome", ["cache", "outcome"], registry=REGISTRY
)
"""outcome: hit (current value from memory), stale (previous value while the new one is computed),
miss (computed), shared (waited for the same computation), uncached (no change feed)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    version: Version
    computed_at: float
    value: T


class ReadCache:
    """At most `capacity` values, least recently used dropped first, each with its topics' version."""

    def __init__(
        self, name: str, feed: ChangeFeed | None, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name, self.feed, self.capacity, self.clock = name, feed, capacity, clock
        self._entries: OrderedDict[Hashable, Entry[Any]] = OrderedDict()
        self._computing: dict[Hashable, tuple[Version, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, topics: Sequence[str], compute: Callable[[], T]) -> T:
        """The value of `key`: from memory unless `topics` changed since it was computed, else `compute()`."""
        version = self.feed.version(topics) if self.feed is not None else None
        if version is None:
            LOOKUPS.labels(self.name, "uncached").inc()
            return await run_in_threadpool(compute)
        entry = self._entries.get(key)
        age = self.clock() - entry.computed_at if entry is not None else MAX_AGE_SECONDS
        if entry is not None and entry.version == version and age < REFRESH_SECONDS:
            self._entries.move_to_end(key)
            LOOKUPS.labels(self.name, "hit").inc()
            return entry.value
        computing = self._computing.get(key)
        if entry is not None and entry.version.own == version.own and age < MAX_AGE_SECONDS:
            if computing is None and age >= MIN_REFRESH_SECONDS:  # one at a time, however fast others write
                self._compute(key, version, compute)
            LOOKUPS.labels(self.name, "stale").inc()
            return entry.value
        if computing is not None and computing[0].at_least(version):
            LOOKUPS.labels(self.name, "shared").inc()
            future = computing[1]
        else:
            LOOKUPS.labels(self.name, "miss").inc()
            future = self._compute(key, version, compute)
        return await asyncio.shield(future)  # a client that hangs up must not cancel the others' read

    def _compute(self, key: Hashable, version: Version, compute: Callable[[], T]) -> asyncio.Future[T]:
        started = self.clock()
        future = asyncio.ensure_future(run_in_threadpool(compute))
        self._computing[key] = (version, future)

        def store(done: asyncio.Future[T]) -> None:
            if key in self._computing and self._computing[key][1] is done:  # not a later computation's
                del self._computing[key]
            if done.cancelled() or done.exception() is not None:
                return
            current = self._entries.get(key)
            if current is None or version.at_least(current.version):  # a slower, older computation loses
                self._entries[key] = Entry(version, started, done.result())
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)

        future.add_done_callback(store)
        return future


@dataclass(frozen=True)
class Reads:
    """The read caches of one API process: who holds a token, and rendered answers (job list, comparisons)."""

    identities: ReadCache
    answers: ReadCache

    @classmethod
    def on(cls, feed: ChangeFeed | None) -> Reads:
        return cls(identities=ReadCache("identities", feed, 1024), answers=ReadCache("answers", feed, 256))
