"""The job/run state machine: every legal transition, every illegal one, and job state derivation."""

from __future__ import annotations

import itertools

import pytest

from ired_dcd.states import TERMINAL, TRANSITIONS, IllegalTransition, State, check_transition, job_state

LEGAL = {
    (State.QUEUED, State.RUNNING),
    (State.QUEUED, State.CANCELLED),
    (State.QUEUED, State.FAILED),
    (State.RUNNING, State.SUCCEEDED),
    (State.RUNNING, State.FAILED),
    (State.RUNNING, State.CANCELLED),
    (State.RUNNING, State.DIVERGED),
    (State.FAILED, State.QUEUED),
    (State.DIVERGED, State.QUEUED),
}


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL))
def test_legal_transitions_pass(source: State, target: State) -> None:
    assert check_transition(source, target) is target


@pytest.mark.parametrize(("source", "target"), [pair for pair in itertools.product(State, State) if pair not in LEGAL])
def test_every_other_transition_is_refused(source: State, target: State) -> None:
    with pytest.raises(IllegalTransition, match=f"illegal transition {source.value} → {target.value}"):
        check_transition(source, target)


def test_table_matches_the_documented_machine() -> None:
    assert {(s, t) for s, targets in TRANSITIONS.items() for t in targets} == LEGAL
    assert TRANSITIONS[State.SUCCEEDED] == TRANSITIONS[State.CANCELLED] == frozenset()


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError):
        check_transition("queued", "paused")


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (["queued"], State.QUEUED),
        (["queued", "queued"], State.QUEUED),
        (["queued", "running"], State.RUNNING),
        (["queued", "succeeded"], State.RUNNING),  # split seeds: some done, some waiting
        (["running", "failed"], State.RUNNING),
        (["succeeded", "succeeded"], State.SUCCEEDED),
        (["succeeded", "diverged"], State.DIVERGED),
        (["diverged", "failed", "succeeded"], State.FAILED),
        (["cancelled", "failed", "succeeded"], State.CANCELLED),
        (["succeeded", "cancelled"], State.CANCELLED),
    ],
)
def test_job_state_is_derived_from_runs(runs: list[str], expected: State) -> None:
    assert job_state(runs) is expected


def test_job_without_runs_is_an_error() -> None:
    with pytest.raises(ValueError):
        job_state([])


def test_terminal_states_have_no_way_on_but_retry() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] <= {State.QUEUED}
