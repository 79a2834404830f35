"""The GPU pilot in one command: presets × seeds on one GPU at once, stopped at a wall-clock budget.

Each config trains as one ensemble (all its seeds in one set of batched kernels) in a process of its
own; the processes run in parallel and share the device. They stop together at the same number of
steps: a coordinator projects, from every config's measured rate, how far the slowest one gets before
the deadline, and that becomes everyone's target (never above --steps). Then each process evaluates on
the held-out set and writes its run directories, which `ired-dcd analyze --dir OUT` reads, and the
pilot prints the comparison against the q100 runs it trained (the in-house baseline) with the steps
each config reached and the device name.

    python bench/pilot.py --budget 480                  # q100, Q-201, Q-202s…Q-204s; 10 seeds, 10k steps
    python bench/pilot.py --configs q202,q202s --seeds 0-4 --steps 5000 --budget 300
    python bench/pilot.py --tiny                        # a seconds-long CPU form (CI)

Before training, each process times its evaluation on one chunk of the held-out set and stops training
early enough (twice that time before the deadline, and at least 15% of the budget) for every config to
evaluate and write its results inside the budget.

Diverged seeds (ired_core.divergence) stop at once and are reported as failed, with the rule that
stopped them. Partial results survive: a config killed at the hard deadline leaves its metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ired_core.configs import canonical_preset, parse_overrides, parse_seeds, resolve_config
from ired_core.report import render
from ired_core.results_dir import read_results
from ired_core.verdict import AUTO_BASELINE, IN_HOUSE_BASELINE, STABILISED_CONFIGS, choose_baseline, compare

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CONFIGS = (IN_HOUSE_BASELINE, *STABILISED_CONFIGS)
TINY = {
    "rank": 4,
    "batch_size": 32,
    "hidden_dim": 32,
    "time_dim": 16,
    "sampler_steps": 2,
    "replay_size": 128,
    "val_size": 256,
    "eval_batch_size": 256,
}
EVAL_RESERVE_FRACTION = 0.15
"""Share of the budget kept at least for evaluating and writing results after training stops."""
EVAL_SAFETY = 2.0
"""Training also stops this many measured evaluation times before the deadline: evaluation is timed on
one chunk before training and scaled to the held-out set, and every config evaluates at once."""
KILL_GRACE_S = 30.0
"""A config still running this long after the budget is killed (its metrics so far stay on disk)."""
COORDINATION_FILE = ".pilot"
PROJECTION_MARGIN = 0.95


def _now() -> float:
    return time.time()  # wall clock: shared by the coordinator and the configs' processes


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------
# one config: a process of its own


def train_one(config_name: str, args: argparse.Namespace) -> None:
    """Train one config's ensemble until the shared target step or the deadline, evaluate, write results."""
    import torch

    from ired_core.run_files import JobDirectory
    from ired_core.trainer import MetricsEvent, Trainer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, len(args.config_list))))
    config = resolve_config(config_name, args.overrides)
    seeds = parse_seeds(args.seeds)
    coordination = args.out / COORDINATION_FILE
    trainer = Trainer(config, seeds, device=args.device)
    job = JobDirectory(args.out, config, seeds, tags=[args.tag])
    job.start(trainer, args.overrides)
    eval_s = _evaluation_seconds(trainer)
    train_deadline = min(args.train_deadline, args.deadline - EVAL_SAFETY * eval_s)
    last = {"time": time.perf_counter(), "step": trainer.step, "rate": 0.0}

    def report(event: MetricsEvent, done: bool = False) -> None:
        """Write the metrics, and the recent rate (steps/s over the last interval, smoothed) for the target."""
        job.append_metrics(event)
        now = time.perf_counter()
        recent = (trainer.step - last["step"]) / max(now - last["time"], 1e-9)
        rate = recent if not last["rate"] else 0.5 * (recent + last["rate"])
        last.update(time=now, step=trainer.step, rate=rate)
        progress = {"step": trainer.step, "rate": rate, "done": done, "eval_s": eval_s}
        _write_json(coordination / f"{config.name}.json", progress)

    target, last_read = config.train_steps, 0.0

    def should_stop() -> bool:
        nonlocal target, last_read
        if _now() - last_read > 1.0:
            target = int(_read_json(coordination / "target.json").get("target", target))
            last_read = _now()
        return trainer.step >= target or _now() >= train_deadline

    trainer.run(on_metrics=report, should_stop=should_stop)
    trainer.last_validation = trainer.evaluate()  # the budget's end is this pilot's end of training
    outcomes = trainer.outcomes()
    job.finish(outcomes)
    report(MetricsEvent(trainer.step, {}), done=True)


def _evaluation_seconds(trainer: Any) -> float:
    """The final evaluation's wall time, projected from one timed chunk of the held-out set."""
    config = trainer.config
    chunk = min(config.val_size, config.eval_batch_size)
    start = time.perf_counter()
    trainer.evaluate(size=chunk)
    return (time.perf_counter() - start) * config.val_size / chunk


# ---------------------------------------------------------------------------------------------
# the coordinator


def _projected_target(progress: dict[str, dict[str, Any]], asked: int, deadline: float) -> int:
    """The step every config can reach by the deadline at its measured rate (the slowest decides), less
    PROJECTION_MARGIN for rates that wobble."""
    left = max(0.0, deadline - _now())
    projections = [p["step"] + PROJECTION_MARGIN * p["rate"] * left for p in progress.values() if p.get("rate")]
    return asked if not projections else min(asked, int(min(projections)))


def coordinate(args: argparse.Namespace) -> dict[str, int]:
    """Start one process per config, keep their shared target step up to date; their exit codes."""
    coordination = args.out / COORDINATION_FILE
    coordination.mkdir(parents=True, exist_ok=True)
    asked = resolve_config(args.config_list[0], args.overrides).train_steps
    _write_json(coordination / "target.json", {"target": asked})
    argv = [sys.executable, __file__, *sys.argv[1:], "--out", str(args.out)]
    argv += ["--child-deadline", str(args.train_deadline), "--final-deadline", str(args.deadline)]
    logs = {name: (args.out / f"{name}.log").open("w") for name in args.config_list}
    processes = {
        name: subprocess.Popen([*argv, "--child", name], stdout=logs[name], stderr=subprocess.STDOUT)
        for name in args.config_list
    }
    frozen = False
    while any(p.poll() is None for p in processes.values()):
        progress = {name: _read_json(coordination / f"{name}.json") for name in args.config_list}
        if not frozen:
            frozen = any(p.get("done") for p in progress.values())  # once one has stopped, the target holds
            if not frozen:
                eval_s = max((p.get("eval_s", 0.0) for p in progress.values()), default=0.0)
                train_deadline = min(args.train_deadline, args.deadline - EVAL_SAFETY * eval_s)
                _write_json(
                    coordination / "target.json", {"target": _projected_target(progress, asked, train_deadline)}
                )
        if _now() > args.deadline + KILL_GRACE_S:
            for name, process in processes.items():
                if process.poll() is None:
                    print(f"pilot: {name} is still running past the budget; killed", file=sys.stderr)
                    process.kill()
        time.sleep(0.5)
    for log in logs.values():
        log.close()
    return {name: process.returncode for name, process in processes.items()}


def summary(args: argparse.Namespace, device_name: str) -> str:
    """The comparison against the pilot's own q100 runs (or the plan's number), with steps reached."""
    found = read_results(args.out)
    baseline = choose_baseline(AUTO_BASELINE, found.values, found.seeds)
    comparison = compare(
        {name: found.values.get(name, []) for name in found.groups},
        baseline,
        seeds=found.seeds,
        held_out_se=found.held_out_se,
        failures=found.failures,
    )
    reached = {name: min(found.steps[name]) for name in found.groups if name in found.steps}
    steps = ", ".join(
        f"{name} {reached[name]}" if name in reached else f"{name} (no run succeeded)" for name in found.groups
    )
    if len(set(reached.values())) > 1:
        steps += " (unequal: the budget ran out first; for a comparison at equal steps lower --steps)"
    header = (
        f"pilot on {device_name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: seeds {args.seeds}, budget "
        f"{args.budget:.0f} s, steps asked {resolve_config(args.config_list[0], args.overrides).train_steps}"
    )
    return f"{header}\nsteps reached: {steps}\n\n{render(comparison, 'markdown')}"


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", help=f"comma-separated presets (default: {','.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--seeds", default="0-9", help="seeds of every config (default 0-9)")
    parser.add_argument("--steps", type=int, help="train_steps asked (default 10000; 60 with --tiny)")
    parser.add_argument("--budget", type=float, help="wall-clock seconds for the whole pilot (default 480)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value override of every config")
    parser.add_argument("--out", type=Path, help="output directory (default runs/pilot-<UTC time>)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long CPU form: rank 4, 2 seeds, 60 steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--final-deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.seeds = "0-1" if args.seeds == "0-9" else args.seeds
        args.device = args.device or "cpu"
    args.steps = args.steps or (60 if args.tiny else 10_000)
    args.budget = args.budget or (60.0 if args.tiny else 480.0)
    args.device = args.device or _default_device()
    args.config_list = [canonical_preset(name) for name in (args.configs or ",".join(DEFAULT_CONFIGS)).split(",")]
    args.overrides = {
        **(TINY if args.tiny else {"val_size": 32_768}),
        "train_steps": args.steps,
        "log_every": max(1, min(100, args.steps // 20)),
        "eval_every": 10**9,  # evaluated once, when the pilot stops
        "checkpoint_every": 10**9,
        **parse_overrides(args.sets),
    }
    for name in args.config_list:
        resolve_config(name, args.overrides)  # a bad override is refused before anything starts
    args.out = args.out or ROOT / "runs" / f"pilot-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    args.tag = args.out.name
    return args


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main() -> int:
    args = parse_args()
    if args.child is not None:
        args.train_deadline, args.deadline = args.child_deadline, args.final_deadline
        train_one(args.child, args)
        return 0
    start = _now()
    args.deadline = start + args.budget
    args.train_deadline = start + args.budget * (1 - EVAL_RESERVE_FRACTION)
    device_name = _device_name(args.device)
    print(
        f"pilot: {', '.join(args.config_list)} × seeds {args.seeds} on {device_name}, "
        f"{args.steps} steps asked, budget {args.budget:.0f} s → {args.out}",
        file=sys.stderr,
    )
    failed = {name: code for name, code in coordinate(args).items() if code != 0}
    for name, code in failed.items():
        print(f"pilot: {name} exited with {code}; see {args.out / (name + '.log')}", file=sys.stderr)
    try:
        print(summary(args, device_name))
    except ValueError as error:
        print(f"pilot: no results to compare ({error})", file=sys.stderr)
        return 1
    print(f"pilot: done in {_now() - start:.0f} s; `ired-dcd analyze --dir {args.out}` reads it again", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
