"""The job/run state machine: the only place a state changes legally.

A run (one seed) goes queued → running → succeeded | failed | cancelled | diverged. A queued run may
be cancelled or failed before it starts (cancel, lost from the queue); a failed or diverged run may be
queued again by a retry. Succeeded and cancelled are final. A job has no state of its own: it is
derived from its runs by `job_state`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.DIVERGED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),
    State.CANCELLED: frozenset(),
    State.DIVERGED: frozenset({State.QUEUED}),
}
"""Legal run transitions: state → the states it may move to."""

TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.DIVERGED})
ACTIVE = frozenset({State.QUEUED, State.RUNNING})
RETRYABLE = frozenset({State.FAILED, State.DIVERGED})


class IllegalTransition(ValueError):
    """A state change the machine does not allow."""


def check_transition(current: str, target: str) -> State:
    """Return `target` as a State if `current → target` is legal, else raise IllegalTransition."""
    source, dest = State(current), State(target)
    if dest not in TRANSITIONS[source]:
        allowed = ", ".join(sorted(TRANSITIONS[source])) or "none (final)"
        raise IllegalTransition(f"illegal transition {source} → {dest}; allowed from {source}: {allowed}")
    return dest


def job_state(run_states: Iterable[str]) -> State:
    """A job's state from its runs' states.

    All queued → queued; any run still active while others started or ended → running; all ended →
    cancelled if any was cancelled (the user's decision wins), else failed if any failed, else
    diverged if any diverged, else succeeded.
    """
    states = [State(s) for s in run_states]
    if not states:
        raise ValueError("a job has at least one run")
    if all(s is State.QUEUED for s in states):
        return State.QUEUED
    if any(s in ACTIVE for s in states):
        return State.RUNNING
    for outcome in (State.CANCELLED, State.FAILED, State.DIVERGED):
        if outcome in states:
            return outcome
    return State.SUCCEEDED
