"""Which data changed, told by the database: what lets the API keep reads in memory safely.

Triggers on Postgres (migration 0005) send `NOTIFY ired_changes, '<topic>'` on commit, for the topics
`users`, `jobs` and `results`, whichever process wrote: API, worker, CLI or SQL by hand. A `ChangeFeed`
listens on one connection of its own, in a thread, and counts the notifications of each topic: a
cached read made at version v of its topics is current exactly while their version is still v.

A version has two parts. `heard` counts other processes' notifications per topic: a read may lag
such a commit by the notification's delivery, milliseconds, and a cache may answer with the previous
value while it computes the new one. `own` counts this process's commits that wrote (through
SQLAlchemy) and the listener's reconnections, whatever the topic: what this process wrote is read
back at once, and a value from before a reconnection, when changes may have gone unheard, is never
served again.

While the listener is not connected (the database restarting, SQLite, not started), `version` is
None and nothing may be cached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import event, make_url
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from ired_dcd.db import CONNECT_TIMEOUT_SECONDS, backoff_delays

CHANNEL = "ired_changes"
TOPICS = ("users", "jobs", "results")
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,  # find a connection that died without closing (server off the network) in ~25 s
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
POLL_SECONDS = 0.5
"""How often the listener looks up from waiting, to see whether it should stop."""

log = logging.getLogger(__name__)

WROTE = "ired_dcd.wrote"
"""Set in `Session.info` by a flush or an INSERT, UPDATE or DELETE: its commit changed data."""


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _flush: UOWTransaction) -> None:
    session.info[WROTE] = True


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[WROTE] = True


_local_writes = 0
_local_lock = threading.Lock()


@event.listens_for(Session, "after_commit")  # registered before any ChangeFeed's, so it sees WROTE first
def _count_local_write(session: Session) -> None:
    global _local_writes
    if session.info.get(WROTE):
        with _local_lock:
            _local_writes += 1


def local_writes() -> int:
    """How many commits that wrote this process has made, with or without a feed (SQLite too): a read
    that started before the latest of them may not be handed to a request that came after it."""
    return _local_writes


def listen_url(sqlalchemy_url: str) -> str | None:
    """The libpq URL for a Postgres SQLAlchemy URL; None for other databases (no NOTIFY)."""
    url = make_url(sqlalchemy_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Version:
    """Where some topics stand: this process's changes (`own`) and the notifications of each (`heard`)."""

    own: int
    heard: tuple[int, ...]

    def at_least(self, other: Version) -> bool:
        """Whether this is `other` or later (every count is as high)."""
        return self.own >= other.own and all(a >= b for a, b in zip(self.heard, other.heard, strict=True))


class ChangeFeed:
    """Versions of the topics, moved on by the database's notifications and by this process's commits."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._own = 0
        self._heard = dict.fromkeys(TOPICS, 0)
        self._listening = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="change-feed", daemon=True)

    def start(self) -> ChangeFeed:
        """Listen in a background thread and follow this process's commits."""
        event.listen(Session, "after_commit", self._after_commit)
        self._thread.start()
        return self

    def stop(self) -> None:
        event.remove(Session, "after_commit", self._after_commit)
        self._stop.set()
        self._thread.join(timeout=2 * POLL_SECONDS + CONNECT_TIMEOUT_SECONDS)

    def version(self, topics: Iterable[str]) -> Version | None:
        """Where `topics` stand; None while changes could go unheard (cache nothing then)."""
        with self._lock:
            if not self._listening:
                return None
            return Version(own=self._own, heard=tuple(self._heard[topic] for topic in topics))

    def _move_own(self) -> None:
        with self._lock:
            self._own += 1

    def _hear(self, topic: str) -> None:
        with self._lock:
            if topic in self._heard:
                self._heard[topic] += 1

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(WROTE, False):  # what this process wrote is read back at once, not after its notification
            self._move_own()

    def _set_listening(self, listening: bool) -> None:
        self._move_own()  # what was read before a reconnection may have missed a change
        with self._lock:
            self._listening = listening

    def _listen(self) -> None:
        delays = backoff_delays()
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, **CONNECTION_OPTIONS) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._set_listening(True)
                    delays = backoff_delays()
                    self._receive(conn)
            except psycopg.Error as exc:
                log.warning("change feed not listening (%s); reads are not cached until it is", exc)
            finally:
                if self._listening:
                    self._set_listening(False)
            self._stop.wait(next(delays))

    def _receive(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            for notification in conn.notifies(timeout=POLL_SECONDS):
                self._hear(notification.payload)
