"""`ired-dcd train` and `ired-dcd configs`: the research core on the command line, no server needed."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ired_core.configs import ENGINES
from ired_dcd.cli.options import add_overrides_option

EXIT_STOPPED = 3  # stopped by SIGTERM/SIGINT after a checkpoint; running the command again resumes


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a preset for one or more seeds (as one ensemble)")
    train.add_argument(
        "--config", required=True, help="preset (q204, Q-204 or q204_dcd_full) or a config file (FILE.json)"
    )
    train.add_argument("--seeds", default="0", help="e.g. 0-9 or 0,1,2 (default 0)")
    train.add_argument("--steps", type=int, help="train_steps (shorthand for --set train_steps=N)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    train.add_argument(
        "--engine", default="reuse", choices=ENGINES, help="reuse (default), compiled (torch.compile) or eager"
    )
    add_overrides_option(train)
    train.add_argument("--tag", dest="tags", action="append", default=[], help="tag stored with each result")
    train.add_argument("--out", type=Path, default=Path("runs"), help="output directory (default ./runs)")
    train.add_argument("--no-resume", action="store_true", help="start fresh even if a checkpoint exists")
    train.set_defaults(func=run_train)

    configs = subparsers.add_parser("configs", help="list presets and how they differ from the defaults")
    configs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    configs.set_defaults(func=run_configs)


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ired_core.configs import parse_overrides, parse_seeds, resolve_config
    from ired_core.run_files import JobDirectory
    from ired_core.trainer import MetricsEvent, Trainer

    overrides = parse_overrides(args.overrides)
    if args.steps is not None:
        overrides["train_steps"] = args.steps
    config = resolve_config(args.config, overrides)
    seeds = parse_seeds(args.seeds)
    _check_device(args.device)
    trainer = Trainer(config, seeds, device=args.device, engine=args.engine)
    job = JobDirectory(args.out, config, seeds, args.tags)
    if not args.no_resume and job.resume(trainer):
        print(f"resuming {config.name} seeds {seeds} from step {trainer.step}", file=sys.stderr)
    print(
        f"{config.name}: {len(seeds)} seed(s) on {trainer.device_name}, {trainer.precision}, "
        f"{config.train_steps} steps → {job.root}",
        file=sys.stderr,
    )

    bar = tqdm(total=config.train_steps, initial=trainer.step, unit="step", file=sys.stderr)

    def on_metrics(event: MetricsEvent) -> None:
        bar.update(event.step - bar.n)
        first = next(iter(event.per_seed.values()), {})
        shown = {k: f"{first[k]:.4g}" for k in ("loss", "val_mse") if k in first}
        bar.set_postfix(shown, refresh=False)

    stop_requested: list[int] = []  # SLURM sends SIGTERM before a time limit or preemption requeue
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signum))
    try:
        outcomes = job.train(trainer, overrides, should_stop=lambda: bool(stop_requested), on_metrics=on_metrics)
    finally:
        bar.close()  # before a traceback, so that the error is the log's last line (the SLURM collector reads it)
    if outcomes is None:
        print(f"stopped at step {trainer.step}; checkpoint saved to {job.checkpoint_path}", file=sys.stderr)
        return EXIT_STOPPED
    for outcome in outcomes:
        mse = outcome.final_metrics.get("val_mse")
        if outcome.error is not None:  # the error says the status and the step itself
            print(f"seed {outcome.seed}: {outcome.error}")
        else:
            detail = f" val_mse={mse:.6g}" if mse is not None else ""
            print(f"seed {outcome.seed}: {outcome.status} at step {outcome.step}{detail}")
    return 0 if all(o.status == "succeeded" for o in outcomes) else 1


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device {device!r}: valid choices are cpu, cuda, cuda:N")


def run_configs(args: argparse.Namespace) -> int:
    from ired_core.configs import preset_differences

    differences = preset_differences()
    if args.json:
        print(json.dumps(differences, indent=2))
        return 0
    for name, fields in differences.items():
        description = fields.pop("description", "")
        print(f"{name}: {description}")
        for key, value in fields.items():
            print(f"    {key} = {json.dumps(value)}")
    return 0
