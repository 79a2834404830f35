"""ired_dcd.slurm without a cluster: state mapping, sbatch text, settings, parsing, polling logic."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ired_core.configs import parse_overrides
from ired_dcd.cli import slurm as slurm_cli
from ired_dcd.services.slurm_jobs import last_error
from ired_dcd.slurm.cluster import SlurmError, SlurmExecutor, parse_pipe_table, parse_scontrol
from ired_dcd.slurm.sbatch import render_sbatch, seed_groups, task_log
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.slurm.states import map_slurm_state
from ired_dcd.states import State

# --- state mapping --------------------------------------------------------------------------------

STATE_TABLE = [
    ("PENDING", State.QUEUED, False),
    ("CONFIGURING", State.QUEUED, False),
    ("REQUEUED", State.QUEUED, False),
    ("REQUEUE_HOLD", State.QUEUED, False),
    ("REQUEUE_FED", State.QUEUED, False),
    ("RESV_DEL_HOLD", State.QUEUED, False),
    ("RUNNING", State.RUNNING, False),
    ("COMPLETING", State.RUNNING, False),
    ("SUSPENDED", State.RUNNING, False),
    ("STOPPED", State.RUNNING, False),
    ("RESIZING", State.RUNNING, False),
    ("SIGNALING", State.RUNNING, False),
    ("STAGE_OUT", State.RUNNING, False),
    ("COMPLETED", State.SUCCEEDED, False),
    ("FAILED", State.FAILED, False),
    ("OUT_OF_MEMORY", State.FAILED, False),
    ("DEADLINE", State.FAILED, False),
    ("SPECIAL_EXIT", State.FAILED, False),
    ("CANCELLED", State.CANCELLED, False),
    ("REVOKED", State.CANCELLED, False),
    ("PREEMPTED", State.FAILED, True),
    ("TIMEOUT", State.FAILED, True),
    ("NODE_FAIL", State.FAILED, True),
    ("BOOT_FAIL", State.FAILED, True),
]


@pytest.mark.parametrize(("slurm_state", "run_state", "requeue"), STATE_TABLE)
def test_state_mapping(slurm_state: str, run_state: State, requeue: bool) -> None:
    change = map_slurm_state(slurm_state)
    assert (change.state, change.requeue) == (run_state, requeue)
    assert change.final == (run_state in (State.SUCCEEDED, State.FAILED, State.CANCELLED))
    assert change.reason


@pytest.mark.parametrize("decorated", ["CANCELLED by 1000", "CANCELLED+", " cancelled ", "Cancelled by 0"])
def test_state_mapping_accepts_slurm_decorations(decorated: str) -> None:
    assert map_slurm_state(decorated).state == State.CANCELLED


def test_cancelled_by_names_the_uid() -> None:
    assert "1000" in map_slurm_state("CANCELLED by 1000").reason


@pytest.mark.parametrize("bad", ["", "DONE", "R", "UNKNOWN"])
def test_unknown_state_lists_valid_ones(bad: str) -> None:
    with pytest.raises(ValueError, match=r"unknown SLURM state.*valid: .*COMPLETED"):
        map_slurm_state(bad)


# --- settings ---------------------------------------------------------------------------------------


def test_settings_merge_applies_job_overrides() -> None:
    base = SlurmSettings(partition="gpu", time_minutes=60)
    merged = base.merged({"time_minutes": 30, "qos": "high", "array_mode": "all_seeds_one_task"})
    assert (merged.partition, merged.time_minutes, merged.qos) == ("gpu", 30, "high")
    assert merged.array_mode == "all_seeds_one_task"
    assert base.time_minutes == 60  # the server's settings are untouched


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"time_minutes": 0}, "time_minutes"),
        ({"gpus_per_task": -1}, "gpus_per_task"),
        ({"cpus_per_task": "many"}, "cpus_per_task"),
        ({"mem_gb": 0}, "mem_gb"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"array_mode": "per_gpu"}, "array_mode"),
        ({"partition": "gpu; rm -rf /"}, "partition"),
        ({"account": "a b"}, "account"),
        ({"qos": "x\ny"}, "qos"),
        ({"extra_sbatch_lines": ["--array=0-99"]}, "extra_sbatch_lines"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"python": "/bin/sh -c evil"}, "python"),
        ({"setup_commands": ["curl x | sh"]}, "setup_commands"),
        ({"log_dir": "/etc"}, "log_dir"),
    ],
)
def test_settings_errors_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        SlurmSettings().merged(overrides)


@pytest.mark.parametrize(
    ("line", "normalised"),
    [
        ("--constraint=a100", "#SBATCH --constraint=a100"),
        ("--constraint a100", "#SBATCH --constraint=a100"),
        ("#SBATCH --constraint=a100|h100", "#SBATCH --constraint='a100|h100'"),
        ("#SBATCH   --exclusive", "#SBATCH --exclusive"),
        ("--comment='two words'", "#SBATCH --comment='two words'"),
    ],
)
def test_extra_sbatch_lines_are_normalised(line: str, normalised: str) -> None:
    assert SlurmSettings(extra_sbatch_lines=[line]).extra_sbatch_lines == [normalised]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-C a100", "long option"),
        ("module load cuda", "long option"),
        ("--output=/etc/passwd", "--output is set"),
        ("--partition=x", "--partition is set"),
        ("--comment=a b", "one value"),
        ("--comment='open", "unbalanced"),
        ("--constraint=a100\n#SBATCH --array=1", "control characters"),
    ],
)
def test_bad_extra_sbatch_lines(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SlurmSettings.from_mapping({"extra_sbatch_lines": [line]})


def test_sbatch_options_from_extra_lines() -> None:
    settings = SlurmSettings(extra_sbatch_lines=["--constraint=a100|h100", "--exclusive", "--comment='a b'"])
    assert settings.sbatch_options() == {"constraint": "a100|h100", "exclusive": True, "comment": "a b"}


def test_seed_groups() -> None:
    assert seed_groups([3, 1, 2], "per_seed") == [[3], [1], [2]]
    assert seed_groups([3, 1, 2], "all_seeds_one_task") == [[3, 1, 2]]
    with pytest.raises(ValueError, match="seeds"):
        seed_groups([], "per_seed")


# --- sbatch text ------------------------------------------------------------------------------------

STUB_PYTHON = "recorded-python"  # run_rendered puts a stub by this name on PATH
CPU = SlurmSettings(gpus_per_task=0, cpus_per_task=2, mem_gb=None, time_minutes=30, python=STUB_PYTHON)


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_per_seed_array_header() -> None:
    settings = SlurmSettings(partition="gpu", account="lab", qos="normal", max_parallel=4)
    rendered = render_sbatch("Q-204", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], settings, "/scratch/runs")
    script = rendered.text
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=ired-q204",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=normal",
        "#SBATCH --time=240",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --mem=32G",
        "#SBATCH --array=0-9%4",
        "#SBATCH --output=/scratch/runs/slurm/q204_dcd_full_%A_%a.out",
        "#SBATCH --error=/scratch/runs/slurm/q204_dcd_full_%A_%a.err",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
    ]
    assert "SEEDS=(0 1 2 3 4 5 6 7 8 9)" in script
    assert 'SEED="${SEEDS[$SLURM_ARRAY_TASK_ID]}"' in script
    python = shlex.quote(sys.executable)  # the interpreter that rendered it, unless settings.python says
    assert f'{python} -m ired_dcd train --config q204_dcd_full --seeds "$SEED" --out "$OUT" --device cuda' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script and "trap on_time_limit USR1" in script
    assert rendered.job_name == "ired-q204" and rendered.log_dir == "/scratch/runs/slurm"
    assert rendered.task_ids("31") == [f"31_{index}" for index in range(10)]
    assert task_log(rendered.log_dir, "q204_dcd_full", "31_4") == Path("/scratch/runs/slurm/q204_dcd_full_31_4.err")


def test_array_parallelism_never_exceeds_the_seeds() -> None:
    assert "#SBATCH --array=0-2%3" in render_sbatch("q201", [4, 7, 9], SlurmSettings(max_parallel=16), "runs").text


def test_all_seeds_one_task_has_no_array() -> None:
    settings = CPU.merged({"array_mode": "all_seeds_one_task", "extra_sbatch_lines": ["--constraint=a100"]})
    rendered = render_sbatch("q203_dcd_replay", [0, 1, 2, 5], settings, "runs", {"train_steps": 50})
    script, lines = rendered.text, sbatch_lines(rendered.text)
    assert not any("--array" in line for line in lines)
    assert "#SBATCH --output=runs/slurm/q203_dcd_replay_%j.out" in lines
    assert lines[-1] == "#SBATCH --constraint=a100"
    assert not any("gpus" in line or "--mem" in line for line in lines)
    assert '--seeds 0-2,5 --out "$OUT" --device cpu --set train_steps=50' in script
    assert "SEEDS=" not in script
    assert rendered.task_ids("31") == ["31"] and rendered.seed_groups == [[0, 1, 2, 5]]


def test_log_dir_setting() -> None:
    script = render_sbatch("q201", [0], CPU.model_copy(update={"log_dir": "/logs"}), "runs").text
    assert "#SBATCH --output=/logs/q201_dcd_baseline_%A_%a.out" in script


def test_a_config_file_is_passed_to_the_nodes_as_it_is(tmp_path: Path) -> None:
    # what the server submits: the job's resolved config in a file, with its overrides again on top
    config_file = tmp_path / "job_config.json"
    config_file.write_text(json.dumps({"name": "q204_dcd_full", "train_steps": 12, "rank": 4}))
    rendered = render_sbatch(str(config_file), [2], CPU, "runs", {"train_steps": 12}, job_name="ired-job7-abc")
    argv = run_rendered(rendered.text, tmp_path, 0)
    assert argv[:5] == ["-m", "ired_dcd", "train", "--config", str(config_file)]
    assert "#SBATCH --job-name=ired-job7-abc" in rendered.text
    assert "#SBATCH --output=runs/slurm/q204_dcd_full_%A_%a.out" in rendered.text
    with pytest.raises(ValueError, match=r"config file .*missing\.json"):
        render_sbatch(str(tmp_path / "missing.json"), [0], CPU, "runs")


@pytest.mark.parametrize(
    ("preset", "seeds", "overrides", "message"),
    [
        ("q999", [0], {}, "unknown preset"),
        ("q204", [], {}, "seeds: must not be empty"),
        ("q204", [1, 1], {}, "seeds: duplicate seed"),
        ("q204", [-1], {}, "seeds: -1 is out of range"),
        ("q204", [0], {"lr": -1}, "^lr: "),
        ("q204", [0], {"no_such_knob": 1}, "^no_such_knob: "),
        ("q204", [0], {"name": "x"}, "^name: cannot be overridden"),
    ],
)
def test_render_rejects_bad_input(preset: str, seeds: list[int], overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_sbatch(preset, seeds, CPU, "runs", overrides)


ODD_OVERRIDES = {
    "description": 'it\'s "odd" $(touch /tmp/pwned) `id` ; echo x | tee y & \\ * ~ %A σ',
    "train_steps": 12,
    "lr": 0.0003,
    "energy_head": "scalar",
    "replay": True,
    "residual_filter_tau": None,
    "residual_filter_quantile": [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4],
}
ODD_OUT = "/tmp/runs with 'quotes' and $HOME"


def run_rendered(script: str, tmp_path: Path, task_id: int) -> list[str]:
    """Run the script with bash (no SLURM) and a stub Python (STUB_PYTHON) that records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / STUB_PYTHON
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": str(task_id)}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def option_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


@pytest.mark.parametrize("task_id", [0, 1, 2])
def test_array_task_maps_to_its_seed_and_odd_values_survive_bash(tmp_path: Path, task_id: int) -> None:
    script = render_sbatch("q204", [3, 7, 11], CPU, ODD_OUT, ODD_OVERRIDES).text
    argv = run_rendered(script, tmp_path, task_id)
    assert argv[:5] == ["-m", "ired_dcd", "train", "--config", "q204_dcd_full"]
    assert option_values(argv, "--seeds") == [str([3, 7, 11][task_id])]
    assert option_values(argv, "--out") == [ODD_OUT]
    assert option_values(argv, "--device") == ["cpu"]
    assert parse_overrides(option_values(argv, "--set")) == ODD_OVERRIDES
    assert not Path("/tmp/pwned").exists()


def test_strings_that_look_like_json_stay_strings(tmp_path: Path) -> None:
    overrides = {"description": "0.5"}
    argv = run_rendered(render_sbatch("q201", [0], CPU, "runs", overrides).text, tmp_path, 0)
    assert parse_overrides(option_values(argv, "--set")) == overrides


def test_header_values_are_shell_quoted() -> None:
    script = render_sbatch("q201", [0], CPU.model_copy(update={"log_dir": "/logs/my runs"}), "runs").text
    output = next(line for line in sbatch_lines(script) if "--output" in line)
    assert shlex.split(output.removeprefix("#SBATCH ")) == ["--output=/logs/my runs/q201_dcd_baseline_%A_%a.out"]


# --- the CLI ----------------------------------------------------------------------------------------


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ired-dcd")
    slurm_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["sbatch", "q204", "--seeds", "0-9", "--partition", "gpu", "--time", "90", "--gpus", "2"]
    argv += ["--cpus", "8", "--mem", "64", "--account", "lab", "--qos", "high", "--max-parallel", "5"]
    argv += ["--out", str(tmp_path), "--set", "train_steps=100", "--set", "energy_head=scalar"]
    code, out, err = cli(argv, capsys)
    assert (code, err) == (0, "")
    for line in ["--partition=gpu", "--time=90", "--gpus-per-task=2", "--cpus-per-task=8", "--mem=64G"]:
        assert f"#SBATCH {line}" in out
    assert "#SBATCH --account=lab" in out and "#SBATCH --qos=high" in out
    assert "#SBATCH --array=0-9%5" in out
    assert f"OUT={tmp_path}" in out
    assert "--set train_steps=100 --set energy_head=scalar" in out
    assert f"{shlex.quote(sys.executable)} -m ired_dcd train --config q204_dcd_full" in out


def test_an_engine_is_passed_on_to_training(tmp_path: Path) -> None:
    argv = run_rendered(render_sbatch("q201", [0], CPU, "runs", engine="compiled").text, tmp_path, 0)
    assert option_values(argv, "--engine") == ["compiled"]
    assert "--engine" not in run_rendered(render_sbatch("q201", [0], CPU, "runs").text, tmp_path, 0)
    with pytest.raises(ValueError, match=r"^engine: 'fast' is not one of eager, reuse, compiled"):
        render_sbatch("q201", [0], CPU, "runs", engine="fast")  # type: ignore[arg-type]


def test_cli_python_option(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sbatch", "q201", "--python", "apptainer exec lab.sif python", "--engine", "compiled"]
    code, out, _ = cli(argv, capsys)
    assert code == 0 and "\napptainer exec lab.sif python -m ired_dcd train --config q201_dcd_baseline" in out
    assert " --engine compiled" in out


def test_cli_all_seeds_one_task(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["sbatch", "q201", "--seeds", "0-3", "--array-mode", "all_seeds_one_task"], capsys)
    assert code == 0 and "--array" not in out and "--seeds 0-3" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sbatch", "q999"], "unknown preset"),
        (["sbatch", "q204", "--seeds", "0-x"], "seeds"),
        (["sbatch", "q204", "--set", "lr=-1"], "lr: "),
        (["sbatch", "q204", "--set", "oops"], "expected key=value"),
        (["sbatch", "q204", "--time", "0"], "time_minutes: "),
        (["sbatch", "q204", "--partition", "a b"], "partition: "),
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("ired-dcd sbatch: ") and message in err and "Traceback" not in err


# --- parsing SLURM output ---------------------------------------------------------------------------


def test_parse_sacct_prefers_a_tasks_own_record_to_a_pending_range() -> None:
    # sacct lags: an array's pending range record can still list a task that already runs
    text = "41_1|RUNNING\n41_[1-3%1]|PENDING\n41_0|CANCELLED by 0\n41_0.batch|CANCELLED\n42|COMPLETED\n"
    assert parse_pipe_table(text) == {
        "41_0": "CANCELLED by 0",
        "41_1": "RUNNING",
        "41_2": "PENDING",
        "41_3": "PENDING",
        "42": "COMPLETED",
    }


def test_parse_squeue() -> None:
    assert parse_pipe_table("7_2|PENDING\n7_0|RUNNING\n8|COMPLETING\n") == {
        "7_0": "RUNNING",
        "7_2": "PENDING",
        "8": "COMPLETING",
    }


def test_parse_scontrol() -> None:
    text = (
        "JobId=12 ArrayJobId=11 ArrayTaskId=1-3%1 JobName=x UserId=root(0) JobState=PENDING Reason=None\n"
        "JobId=11 ArrayJobId=11 ArrayTaskId=0 JobName=x JobState=TIMEOUT Reason=TimeLimit\n"
        "JobId=20 JobName=y UserId=root(0) JobState=COMPLETED Reason=None\n"
    )
    assert parse_scontrol(text) == {
        "11_0": "TIMEOUT",
        "11_1": "PENDING",
        "11_2": "PENDING",
        "11_3": "PENDING",
        "20": "COMPLETED",
    }


# --- polling: batching, rate limit, cache, fallbacks ------------------------------------------------


class FakeSlurm:
    """Answers SLURM commands from canned text and records every call."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        key = f"scontrol {command[-1]}" if command[0] == "scontrol" else command[0]
        code, out = self.answers.get(key, (1, ""))
        return subprocess.CompletedProcess(command, code, out, "error" if code else "")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def executor(fake: FakeSlurm, clock: Clock, **settings: object) -> SlurmExecutor:
    return SlurmExecutor(SlurmSettings(poll_interval_s=30, **settings), run=fake, clock=clock)


def test_sacct_polling_is_batched_rate_limited_and_cached() -> None:
    fake = FakeSlurm({"sacct": (0, "5_0|COMPLETED\n5_1|RUNNING\n6|PENDING\n")})
    clock = Clock()
    ex = executor(fake, clock, state_source="sacct")
    first = ex.status(["5_0", "5_1", "6"])
    assert {k: v.change.state for k, v in first.items()} == {
        "5_0": State.SUCCEEDED,
        "5_1": State.RUNNING,
        "6": State.QUEUED,
    }
    assert {v.source for v in first.values()} == {"sacct"}
    assert fake.calls == [["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", "5,6"]]
    clock.now += 10
    assert ex.status(["5_0", "5_1", "6"]) == first  # within the interval: no call
    assert len(fake.calls) == 1
    clock.now += 30
    ex.status(["5_0", "5_1"])
    assert fake.calls[-1][-1] == "5"  # the completed task is not asked again; only array 5 for 5_1


def test_unpolled_ids_wait_for_the_next_round() -> None:
    fake = FakeSlurm({"sacct": (0, "5_0|RUNNING\n")})
    clock = Clock()
    ex = executor(fake, clock, state_source="sacct")
    ex.status(["5_0"])
    assert ex.status(["9_0"]) == {}  # asked within the interval of the last round
    assert len(fake.calls) == 1


def test_auto_source_probes_sacct_once() -> None:
    fake = FakeSlurm({"squeue": (0, "5_0|RUNNING\n")})  # sacct fails: no accounting
    clock = Clock()
    ex = executor(fake, clock)
    assert ex.status(["5_0"])["5_0"].source == "squeue"
    clock.now += 60
    ex.status(["5_0"])
    assert sum(call[0] == "sacct" for call in fake.calls) == 1


def test_squeue_mode_falls_back_to_scontrol_for_jobs_that_left_the_queue() -> None:
    fake = FakeSlurm(
        {
            "squeue": (0, "5_2|RUNNING\n"),
            "scontrol 5": (0, "JobId=9 ArrayJobId=5 ArrayTaskId=0 JobState=COMPLETED Reason=None\n"),
        }
    )
    clock = Clock()
    ex = executor(fake, clock, state_source="squeue")
    found = ex.status(["5_0", "5_1", "5_2"])
    assert {k: (v.slurm_state, v.source) for k, v in found.items()} == {
        "5_0": ("COMPLETED", "scontrol"),
        "5_1": ("PENDING", "submitted"),  # known nowhere yet: within the grace period
        "5_2": ("RUNNING", "squeue"),
    }
    assert ["scontrol", "-o", "show", "job", "5"] in fake.calls
    assert not any(call[0] == "sacct" for call in fake.calls)


def test_unknown_task_is_pending_during_the_grace_period_then_lost() -> None:
    fake = FakeSlurm({"squeue": (0, "")})
    clock = Clock()
    ex = executor(fake, clock, state_source="squeue")
    early = ex.status(["77_0"])["77_0"]
    assert (early.change.state, early.source) == (State.QUEUED, "submitted")
    clock.now += 600
    late = ex.status(["77_0"])["77_0"]
    assert (late.change.state, late.change.requeue, late.source) == (State.FAILED, True, "lost")


def test_requeue_type_failures_are_asked_again() -> None:
    fake = FakeSlurm({"sacct": (0, "5_0|PREEMPTED\n")})
    clock = Clock()
    ex = executor(fake, clock, state_source="sacct")
    assert ex.status(["5_0"])["5_0"].change.requeue
    fake.answers["sacct"] = (0, "5_0|PENDING\n")  # SLURM put it back by itself
    clock.now += 30
    assert ex.status(["5_0"])["5_0"].change.state == State.QUEUED


def test_cancel_runs_scancel_and_forgets_the_cache() -> None:
    fake = FakeSlurm({"sacct": (0, "5_0|RUNNING\n5_1|RUNNING\n"), "scancel": (0, "")})
    clock = Clock()
    ex = executor(fake, clock, state_source="sacct")
    ex.status(["5_0", "5_1"])
    ex.cancel("5")
    assert fake.calls[-1] == ["scancel", "5"]
    fake.answers["sacct"] = (0, "5_0|CANCELLED by 0\n5_1|CANCELLED by 0\n")
    after = ex.status(["5_0", "5_1"])  # no waiting for the interval after a cancel
    assert {v.change.state for v in after.values()} == {State.CANCELLED}


@pytest.mark.parametrize("bad", ["--me", "-u root", "5;rm", "5_[0-3]", ""])
def test_job_ids_are_checked_before_reaching_a_command(bad: str) -> None:
    fake = FakeSlurm({"sacct": (0, ""), "scancel": (0, "")})
    ex = executor(fake, Clock(), state_source="sacct")
    with pytest.raises(ValueError, match="SLURM job id"):
        ex.cancel(bad)
    with pytest.raises(ValueError, match="SLURM job id"):
        ex.status(["5_0", bad])
    assert fake.calls == []


def test_slurm_errors_are_raised() -> None:
    ex = executor(FakeSlurm({}), Clock(), state_source="sacct")
    with pytest.raises(SlurmError, match="sacct"):
        ex.status(["5_0"])
    with pytest.raises(SlurmError, match="scancel"):
        ex.cancel("5")


# --- submitting -------------------------------------------------------------------------------------


def test_submit_writes_the_script_and_its_log_dir_then_sbatches_it(tmp_path: Path) -> None:
    fake = FakeSlurm({"sbatch": (0, "812;cluster-a\n")})
    settings = CPU.model_copy(update={"log_dir": str(tmp_path / "logs")})
    script = render_sbatch("q204", [0, 1], settings, str(tmp_path / "out"))
    path = tmp_path / "job" / "ired-job1.sbatch"
    assert executor(fake, Clock()).submit(script, path) == ["812_0", "812_1"]
    assert fake.calls == [["sbatch", "--parsable", str(path)]]
    assert path.read_text() == script.text and (tmp_path / "logs").is_dir()


def test_submit_refuses_an_answer_that_is_not_a_job_id(tmp_path: Path) -> None:
    fake = FakeSlurm({"sbatch": (0, "Submitted batch job 812\n")})
    script = render_sbatch("q204", [0], CPU, str(tmp_path / "out"))
    with pytest.raises(SlurmError, match="not a job id"):
        executor(fake, Clock()).submit(script, tmp_path / "a.sbatch")
    fake.answers["sbatch"] = (1, "")
    with pytest.raises(SlurmError, match="sbatch --parsable"):
        executor(fake, Clock()).submit(script, tmp_path / "a.sbatch")


# --- reading a task's log -----------------------------------------------------------------------------

CHAINED = """Traceback (most recent call last):
  File "a.py", line 1, in <module>
KeyError: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
ValueError: bad
value on two lines
"""


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (CHAINED, "ValueError: bad"),
        (CHAINED + "\r 50%|█████     | 1/2 [00:01<00:01]\n", "ValueError: bad"),
        ("slurmstepd: error: *** JOB 12 ON vm CANCELLED ***\n\n", "slurmstepd: error: *** JOB 12 ON vm CANCELLED ***"),
        ("\n \r\n", None),
    ],
)
def test_last_error_is_the_exception_of_the_last_traceback(log: str, error: str | None) -> None:
    assert last_error(log) == error
