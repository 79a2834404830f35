"""The one way anything is submitted to SLURM: an sbatch script whose tasks run `ired-dcd train`.

`ired-dcd sbatch` prints it for submitting by hand; the server writes it into the job's folder and
submits it (`ired_dcd.slurm.cluster.SlurmExecutor.submit`). Either way a task trains its seeds into
`out_dir` in the layout of `ired_core.run_files.JobDirectory`, resuming from the checkpoint there.

Stopping: the script asks for `--requeue`, so SLURM requeues tasks on preemption and node failure by
itself, and for `--signal=B:USR1@signal_seconds`, a warning to the batch shell before the time limit.
The shell then stops training (SIGTERM makes `ired-dcd train` checkpoint and exit), requeues its task
with `scontrol requeue` and exits; the requeued task resumes from the checkpoint. SIGTERM from
preemption or `scancel` is passed on the same way, without the requeue.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ired_core.configs import CONFIG_FILE_SUFFIX, ENGINES, Engine, format_seeds, resolve_config
from ired_core.input_rules import check_seeds
from ired_dcd.slurm.settings import ArrayMode, SlurmSettings, mem_option


@dataclass(frozen=True)
class SbatchScript:
    """A rendered script and what its submission starts."""

    text: str
    job_name: str
    log_dir: str
    seed_groups: list[list[int]]
    """What each task trains: one group per array task (`per_seed`), or one group for a plain job."""
    is_array: bool

    def task_ids(self, slurm_job_id: str) -> list[str]:
        """The tasks sbatch started under `slurm_job_id`: '1234_0', '1234_1', … for an array, else '1234'."""
        if not self.is_array:
            return [slurm_job_id]
        return [f"{slurm_job_id}_{index}" for index in range(len(self.seed_groups))]


def seed_groups(seeds: Sequence[int], array_mode: ArrayMode) -> list[list[int]]:
    """How seeds are split over tasks: one per task (`per_seed`) or all in one (`all_seeds_one_task`)."""
    seeds = check_seeds(seeds)
    return [[s] for s in seeds] if array_mode == "per_seed" else [list(seeds)]


def log_folder(settings: SlurmSettings, out_dir: str) -> str:
    """Where a submission's script and task logs go: `settings.log_dir`, else `<out_dir>/slurm`."""
    return settings.log_dir or f"{out_dir.rstrip('/') or '.'}/slurm"


def task_log(log_dir: str | Path, config_name: str, task_id: str, stream: str = "err") -> Path:
    """The file a task writes its stdout ('out') or stderr ('err', tracebacks included) to."""
    return Path(log_dir) / f"{config_name}_{task_id}.{stream}"


def _override_arg(key: str, value: Any) -> str:
    """`key=value` that `parse_overrides` reads back as exactly `value` (JSON unless a plain string)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def render_sbatch(
    config: str,
    seeds: Sequence[int],
    settings: SlurmSettings,
    out_dir: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    job_name: str | None = None,
    engine: Engine | None = None,
) -> SbatchScript:
    """A ready-to-submit sbatch script running `ired-dcd train` for `config` and `seeds`.

    `config`: a preset, or a config file (`.json`, see `ired_core.configs.resolve_config`) the nodes can
    read. per_seed: an array with one task per seed (`SLURM_ARRAY_TASK_ID` indexes `SEEDS`);
    all_seeds_one_task: one task training every seed as an ensemble. The tasks start Python with
    `settings.python` (default: this interpreter) and write their logs to `settings.log_dir` (default
    `<out_dir>/slurm`). `job_name` (default `ired-<preset>`) is how the job is found again; `engine`
    (default: `ired-dcd train`'s) how a step is computed. ValueError names a bad config, seed, override
    or engine.
    """
    # 1. validate what the job will run with
    groups = seed_groups(seeds, settings.array_mode)
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    overrides = dict(overrides or {})
    name = resolve_config(config, overrides).name
    job_name = job_name or f"ired-{name.split('_', 1)[0]}"
    per_seed = settings.array_mode == "per_seed"
    q = shlex.quote
    log_dir = log_folder(settings, out_dir)
    log_id = "%A_%a" if per_seed else "%j"

    # 2. #SBATCH header
    options: list[tuple[str, Any]] = [
        ("job-name", job_name),
        ("partition", settings.partition),
        ("account", settings.account),
        ("qos", settings.qos),
        ("time", settings.time_minutes),
        ("cpus-per-task", settings.cpus_per_task),
        ("gpus-per-task", settings.gpus_per_task or None),
        ("mem", mem_option(settings.mem_gb) if settings.mem_gb else None),
        ("array", f"0-{len(groups) - 1}%{min(settings.max_parallel, len(groups))}" if per_seed else None),
        ("output", task_log(log_dir, name, log_id, "out")),
        ("error", task_log(log_dir, name, log_id, "err")),
        ("open-mode", "append"),
        ("requeue", True),
        ("signal", f"B:USR1@{settings.signal_seconds}"),
    ]
    header = [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={q(str(v))}" for k, v in options if v is not None]
    header += settings.extra_sbatch_lines

    # 3. the training command; SEED / OUT are shell variables set below
    python = settings.python or q(sys.executable)  # a shell command: the server's setting, not a user's
    device = "cuda" if settings.gpus_per_task else "cpu"
    seeds_arg = '"$SEED"' if per_seed else format_seeds(groups[0])
    config_arg = config if config.endswith(CONFIG_FILE_SUFFIX) else name  # a preset by its file stem
    words = [
        "-m",
        "ired_dcd",
        "train",
        "--config",
        config_arg,
        "--seeds",
        seeds_arg,
        "--out",
        '"$OUT"',
        "--device",
        device,
        *(["--engine", engine] if engine else []),
    ]
    quoted = [word if word.startswith('"$') else q(word) for word in words]
    for key, value in overrides.items():
        quoted += ["--set", q(_override_arg(key, value))]
    train = " ".join([python, *quoted])

    seeds_text = format_seeds([seed for group in groups for seed in group])
    mode = "one array task per seed" if per_seed else "one task for all seeds"
    lines = [
        "#!/bin/bash",
        f"# ired-dcd {name}, seeds {seeds_text}, {mode}. Generated by ired-dcd.",
        f"# Submit: mkdir -p {q(log_dir)} && sbatch <this file>",
        *header,
        "",
        *settings.setup_commands,
        "set -euo pipefail",
        "",
    ]
    if per_seed:
        lines += [
            f"SEEDS=({' '.join(str(group[0]) for group in groups)})",
            'SEED="${SEEDS[$SLURM_ARRAY_TASK_ID]}"',
        ]
    lines += [
        f"OUT={q(out_dir)}",
        "",
        "# USR1 comes signal_seconds before the time limit: stop training (SIGTERM makes it checkpoint),",
        "# then requeue this task; it resumes from its checkpoint. Preemption sends SIGTERM: pass it on",
        "# and wait for the checkpoint; with --requeue SLURM puts the task back in the queue.",
        'stop_training() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; }',
        'on_time_limit() { stop_training; scontrol requeue "$SLURM_JOB_ID"; exit 0; }',
        "on_term() { stop_training; exit 143; }",
        "trap on_time_limit USR1",
        "trap on_term TERM",
        "",
        f"{train} &",
        "pid=$!",
        'wait "$pid"',
        "",
    ]
    return SbatchScript(
        text="\n".join(lines),
        job_name=job_name,
        log_dir=log_dir,
        seed_groups=groups,
        is_array=per_seed,
    )
