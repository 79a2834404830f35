"""Training throughput of the engine: seed-steps/s per preset at S = 1 and S = 10 seeds.

The baseline is the eager one-seed step (`Trainer` with one seed, engine "eager") measured in the same
run. Columns: S = 1 eager; S = 10 eager; S = 10 with each optimised engine ("reuse": the conditioning on
A and t made once per step, `ired_core.model.Conditioning`; "compiled": that, with the energy and its
gradient through `torch.compile`, whose compilation falls in the warm-up steps); the best engine's ratio
to the baseline, and what each optimised engine adds over eager at S = 10. Run on a GPU machine:

    python bench/train_throughput.py --device cuda                 # batch 2048, Q-201…Q-204
    python bench/train_throughput.py --tiny                        # CPU smoke form (CI; not timed)

Prints a markdown table with the device name and peak GPU memory per seed (of the last engine).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import torch

from ired_core.configs import Engine, resolve_config
from ired_core.trainer import Trainer

PRESETS = ("q201", "q202", "q203", "q204")
OPTIMISED: tuple[Engine, ...] = ("reuse", "compiled")
TINY = {"rank": 4, "batch_size": 32, "hidden_dim": 32, "time_dim": 16, "replay_size": 128, "sampler_steps": 2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_steps_per_s(preset: str, seeds: int, engine: Engine, args: argparse.Namespace) -> tuple[float, float | None]:
    """(seed-steps/s, peak GPU MiB per seed or None) over `args.steps` steps after warm-up."""
    overrides = {
        **(TINY if args.tiny else {}),
        "batch_size": args.batch_size or (32 if args.tiny else 2048),
        "precision": args.precision,
    }
    trainer = Trainer(resolve_config(preset, overrides), list(range(seeds)), device=args.device, engine=engine)
    device = trainer.device
    for _ in range(args.warmup):
        trainer.train_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 / seeds if device.type == "cuda" else None
    return seeds * args.steps / elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=10, help="ensemble size S (default 10)")
    parser.add_argument("--batch-size", type=int, help="default 2048 (32 with --tiny)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--tiny", action="store_true", help="tiny CPU smoke form (for CI)")
    parser.add_argument("--engines", default=",".join(OPTIMISED), help="optimised engines to time against eager")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.warmup = min(args.steps, 3), 1
    name = Trainer(resolve_config("q100", TINY), [0], device=args.device).device_name
    print(
        f"# train throughput — {name}, {args.precision}, {datetime.now(UTC):%Y-%m-%d}, "
        f"batch {args.batch_size or (32 if args.tiny else 2048)}, {args.steps} timed steps"
    )
    s = args.seeds
    engines = [engine for engine in args.engines.split(",") if engine]
    print(
        f"| preset | S=1 eager | S={s} eager | "
        + "".join(f"S={s} {engine} | " for engine in engines)
        + f"best / S=1 | {' | '.join(f'{engine} / eager' for engine in engines)} | peak MiB/seed |"
    )
    print("|---" * (5 + 2 * len(engines)) + "|")
    for preset in args.presets.split(","):
        baseline, _ = seed_steps_per_s(preset, 1, "eager", args)
        eager, peak = seed_steps_per_s(preset, s, "eager", args)
        optimised = []
        for engine in engines:
            rate, peak = seed_steps_per_s(preset, s, engine, args)
            optimised.append(rate)
        peak_text = f"{peak:.0f}" if peak is not None else "n/a (cpu)"
        print(
            f"| {preset} | {baseline:.1f} | {eager:.1f} | "
            + "".join(f"{rate:.1f} | " for rate in optimised)
            + f"{max([eager, *optimised]) / baseline:.2f}× | "
            + "".join(f"{rate / eager:.2f}× | " for rate in optimised)
            + f"{peak_text} |"
        )


if __name__ == "__main__":
    main()
