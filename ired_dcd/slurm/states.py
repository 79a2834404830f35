"""SLURM's job states, and what each means for a run: its next state, whether to resubmit, why."""

from __future__ import annotations

from dataclasses import dataclass

from ired_dcd.states import TERMINAL, State


@dataclass(frozen=True)
class RunStateChange:
    """What a SLURM state means for our run.

    `requeue` (always with state failed): the attempt ended for an infrastructure reason
    (preemption, time limit, node or boot failure). SLURM has not put it back (a task it requeues
    itself reads PENDING again), so retry the seed group (failed → queued), which resumes from its
    checkpoint, unless the run has used up its attempts.
    """

    state: State
    requeue: bool
    reason: str

    @property
    def final(self) -> bool:
        """True when SLURM will do nothing more with this task (a requeue is then up to us)."""
        return self.state in TERMINAL


_STATE_TABLE: dict[str, tuple[State, bool, str]] = {
    "PENDING": (State.QUEUED, False, "waiting for resources or priority"),
    "CONFIGURING": (State.QUEUED, False, "nodes allocated, booting"),
    "REQUEUED": (State.QUEUED, False, "requeued by SLURM"),
    "REQUEUE_HOLD": (State.QUEUED, False, "requeued and held (scontrol release to run)"),
    "REQUEUE_FED": (State.QUEUED, False, "requeued by the federation"),
    "RESV_DEL_HOLD": (State.QUEUED, False, "held: its reservation was deleted"),
    "RUNNING": (State.RUNNING, False, "running"),
    "COMPLETING": (State.RUNNING, False, "finishing"),
    "SUSPENDED": (State.RUNNING, False, "suspended; resumes in place"),
    "STOPPED": (State.RUNNING, False, "stopped (SIGSTOP); resumes in place"),
    "RESIZING": (State.RUNNING, False, "changing size"),
    "SIGNALING": (State.RUNNING, False, "being signalled"),
    "STAGE_OUT": (State.RUNNING, False, "staging out"),
    "COMPLETED": (State.SUCCEEDED, False, "exit code 0"),
    "FAILED": (State.FAILED, False, "non-zero exit code"),
    "OUT_OF_MEMORY": (State.FAILED, False, "out of memory; ask for more mem_gb"),
    "DEADLINE": (State.FAILED, False, "deadline reached"),
    "SPECIAL_EXIT": (State.FAILED, False, "special exit state (held for inspection)"),
    "CANCELLED": (State.CANCELLED, False, "cancelled"),
    "REVOKED": (State.CANCELLED, False, "revoked: a sibling cluster runs it"),
    "PREEMPTED": (State.FAILED, True, "preempted; retry resumes from the checkpoint"),
    "TIMEOUT": (State.FAILED, True, "time limit reached; retry resumes from the checkpoint"),
    "NODE_FAIL": (State.FAILED, True, "node failure; retry resumes from the checkpoint"),
    "BOOT_FAIL": (State.FAILED, True, "node failed to boot; retry resumes from the checkpoint"),
}


def map_slurm_state(state: str) -> RunStateChange:
    """Map a SLURM job state (`squeue %T`, `sacct State`, `scontrol JobState`) onto our run states.

    Accepts decorations SLURM adds: 'CANCELLED by 1000', 'CANCELLED+' (sacct's truncation).
    ValueError on a state SLURM does not define.
    """
    words = state.strip().upper().split()
    key = words[0].rstrip("+") if words else ""
    if key not in _STATE_TABLE:
        raise ValueError(f"unknown SLURM state {state!r}; valid: {', '.join(sorted(_STATE_TABLE))}")
    run_state, requeue, reason = _STATE_TABLE[key]
    if key == "CANCELLED" and len(words) == 3 and words[1] == "BY":
        reason = f"cancelled by uid {words[2]}"
    return RunStateChange(run_state, requeue, reason)
