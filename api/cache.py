"""Reads kept in memory until the data behind them changes (the API's answer to many clients polling).

A `ReadCache` maps a key (a route and its parameters) to a value computed from the database and the
version of the topics it read (ired_dcd/services/change_feed.py):

- while the version stands, the value is served from memory;
- when another process changed a topic, or the value is REFRESH_SECONDS old, the value is still
  served while the new one is computed in the background (stale-while-revalidate: neither how often
  workers write nor a lost notification ever makes a reader wait), at most every
  MIN_REFRESH_SECONDS (a busy cluster's heartbeats cost the API a bounded share of its CPU);
- when this process changed a topic, or nobody asked for MAX_AGE_SECONDS, requests wait for the new value.

Computing runs in the thread pool, once per key at a time however many requests ask (a caller may
also pass a `CapacityLimiter` that bounds how many heavy computations run at once). Without a live
change feed (SQLite, Postgres restarting) nothing is kept, but a request still shares a computation of
the same key that started after this process's last write, so that concurrent identical requests cost
one computation there too. A cache holds at most `capacity` values and, when given, `max_bytes` of
rendered answers: how many distinct requests arrive cannot grow it further.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from anyio import CapacityLimiter, to_thread
from prometheus_client import CollectorRegistry, Counter

from ired_dcd.services.change_feed import ChangeFeed, Version, local_writes

T = TypeVar("T")

MIN_REFRESH_SECONDS = 0.5
"""Another process's change is computed in the background at most this often per value."""
REFRESH_SECONDS = 30.0
"""A value in use is computed again this often, notified or not: what bounds staleness if a change
ever went unheard (a connection dead without a word is found by TCP keepalive within ~25 s)."""
MAX_AGE_SECONDS = 2 * REFRESH_SECONDS
"""Never served older: after a quiet spell the first request waits for a new value."""
ANSWERS_MAX_BYTES = 64 * 1024 * 1024
"""Rendered answers (job pages, comparisons, dashboard sections) kept per API process, all together."""

REGISTRY = CollectorRegistry()
"""The caches' counters, served at GET /metrics beside the job and run gauges (per API process)."""
LOOKUPS = Counter(
    "ired_read_cache_lookups", "Reads served by the API, by cache and outcome", ["cache", "outcome"], registry=REGISTRY
)
"""outcome: hit (current value from memory), stale (previous value while the new one is computed),
miss (computed), shared (waited for the same computation), uncached (no change feed: computed, or
waited for the same computation)."""


def _size(value: Any) -> int:
    """What a value weighs against `max_bytes`: the length of rendered answers (bytes, text, tuples of them)."""
    if isinstance(value, tuple):
        return sum(_size(item) for item in value)
    return len(value) if isinstance(value, bytes | str) else 0


@dataclass(frozen=True)
class Entry(Generic[T]):
    version: Version
    computed_at: float
    value: T


class ReadCache:
    """At most `capacity` values (and `max_bytes` of rendered ones), least recently used dropped first,
    each with its topics' version."""

    def __init__(
        self,
        name: str,
        feed: ChangeFeed | None,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int | None = None,
    ) -> None:
        self.name, self.feed, self.capacity, self.clock, self.max_bytes = name, feed, capacity, clock, max_bytes
        self._entries: OrderedDict[Hashable, Entry[Any]] = OrderedDict()
        self._bytes = 0
        self._computing: dict[Hashable, tuple[Version, asyncio.Future[Any]]] = {}
        self._uncached: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}

    async def get(
        self, key: Hashable, topics: Sequence[str], compute: Callable[[], T], *, limiter: CapacityLimiter | None = None
    ) -> T:
        """The value of `key`: from memory unless `topics` changed since it was computed, else `compute()`
        (in a worker thread; with `limiter`, only as many at once as it allows)."""
        version = self.feed.version(topics) if self.feed is not None else None
        if version is None:
            LOOKUPS.labels(self.name, "uncached").inc()
            return await self._shared_uncached(key, compute, limiter)
        entry = self._entries.get(key)
        age = self.clock() - entry.computed_at if entry is not None else MAX_AGE_SECONDS
        if entry is not None and entry.version == version and age < REFRESH_SECONDS:
            self._entries.move_to_end(key)
            LOOKUPS.labels(self.name, "hit").inc()
            return entry.value
        computing = self._computing.get(key)
        if entry is not None and entry.version.own == version.own and age < MAX_AGE_SECONDS:
            if computing is None and age >= MIN_REFRESH_SECONDS:  # one at a time, however fast others write
                self._compute(key, version, compute, limiter)
            LOOKUPS.labels(self.name, "stale").inc()
            return entry.value
        if computing is not None and computing[0].at_least(version):
            LOOKUPS.labels(self.name, "shared").inc()
            future = computing[1]
        else:
            LOOKUPS.labels(self.name, "miss").inc()
            future = self._compute(key, version, compute, limiter)
        return await asyncio.shield(future)  # a client that hangs up must not cancel the others' read

    async def _shared_uncached(self, key: Hashable, compute: Callable[[], T], limiter: CapacityLimiter | None) -> T:
        """`compute()`, or the result of the same key's computation that started after this process's
        last write (what this process wrote is always read back): nothing is kept afterwards."""
        writes = local_writes()
        running = self._uncached.get(key)
        if running is None or running[0] != writes:
            future: asyncio.Future[T] = asyncio.ensure_future(to_thread.run_sync(compute, limiter=limiter))
            self._uncached[key] = running = (writes, future)

            def forget(done: asyncio.Future[T]) -> None:
                if key in self._uncached and self._uncached[key][1] is done:
                    del self._uncached[key]

            future.add_done_callback(forget)
        return await asyncio.shield(running[1])

    def _compute(
        self, key: Hashable, version: Version, compute: Callable[[], T], limiter: CapacityLimiter | None
    ) -> asyncio.Future[T]:
        started = self.clock()
        future = asyncio.ensure_future(to_thread.run_sync(compute, limiter=limiter))
        self._computing[key] = (version, future)

        def store(done: asyncio.Future[T]) -> None:
            if key in self._computing and self._computing[key][1] is done:  # not a later computation's
                del self._computing[key]
            if done.cancelled() or done.exception() is not None:
                return
            current = self._entries.get(key)
            if current is None or version.at_least(current.version):  # a slower, older computation loses
                self._put(key, Entry(version, started, done.result()))

        future.add_done_callback(store)
        return future

    def _put(self, key: Hashable, entry: Entry[Any]) -> None:
        """Keep `entry`, then drop the least recently used values while over `capacity` or `max_bytes`."""
        previous = self._entries.pop(key, None)
        self._bytes += _size(entry.value) - (_size(previous.value) if previous is not None else 0)
        self._entries[key] = entry
        while len(self._entries) > self.capacity or (self.max_bytes is not None and self._bytes > self.max_bytes):
            _key, dropped = self._entries.popitem(last=False)
            self._bytes -= _size(dropped.value)


@dataclass(frozen=True)
class Reads:
    """The read caches of one API process: who holds a token, and rendered answers (job list, comparisons)."""

    identities: ReadCache
    answers: ReadCache

    @classmethod
    def on(cls, feed: ChangeFeed | None) -> Reads:
        answers = ReadCache("answers", feed, 256, max_bytes=ANSWERS_MAX_BYTES)
        return cls(identities=ReadCache("identities", feed, 1024), answers=answers)
