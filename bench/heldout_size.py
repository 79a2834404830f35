"""How sure is one val_mse? The held-out standard error against the held-out set's size.

Trains one small model (q100 by default: the in-house baseline), then evaluates it on independent
held-out sets of several sizes (each drawn from its own `val_seed`) and prints, per size:

- the standard error the evaluation reports (sd of the per-sample errors / √N, ired_core.evaluate),
- the spread actually seen between the independent sets (sd of their val_mse), which it should match,
- both relative to val_mse, next to the effects the plan looks for (1% and 3%),
- the evaluation time on this machine.

A model that has not learned the task says little about the study's models (its errors are large
and uniform, so its relative SE is small): the script warns when val_mse is above predicting the mean.

    python bench/heldout_size.py                        # rank 20, width 512, 2000 steps at lr 1e-3 (CPU)
    python bench/heldout_size.py --sizes 4096 32768 --sets 3 --device cuda --set hidden_dim=512 --steps 10000
    python bench/heldout_size.py --checkpoint runs/q100_denoise_only/checkpoint_seeds_0_1_2.pt
    python bench/heldout_size.py --tiny                 # seconds (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ired_core.configs import TrainConfig, parse_overrides, resolve_config
from ired_core.data import held_out_set
from ired_core.evaluate import predict_mean_mse
from ired_core.trainer import Trainer, device_name

SMALL = {"rank": 20, "batch_size": 128, "hidden_dim": 512, "lr": 1e-3, "log_every": 100, "eval_every": 10**9}
TINY = {"rank": 4, "batch_size": 32, "hidden_dim": 32, "time_dim": 16, "eval_every": 10**9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="q100")
    parser.add_argument("--steps", type=int, help="training steps before evaluating (default 2000; 30 with --tiny)")
    parser.add_argument("--sizes", type=int, nargs="+", help="held-out sizes (default 1024 4096 16384 32768 65536)")
    parser.add_argument("--sets", type=int, help="independent held-out sets per size (default 5; 2 with --tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", dest="sets_", action="append", default=[], help="key=value config override")
    parser.add_argument(
        "--checkpoint", type=Path, help="evaluate this trained ensemble (its config and seeds) instead of training"
    )
    parser.add_argument("--tiny", action="store_true", help="a seconds-long form for CI")
    args = parser.parse_args()
    args.sets = args.sets or (2 if args.tiny else 5)
    sizes = args.sizes or ([64, 256] if args.tiny else [1024, 4096, 16384, 32768, 65536])
    if args.checkpoint is not None:
        saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        config = TrainConfig(**saved["config"])
        trainer = Trainer(config, saved["seeds"], device=args.device)
        trainer.load_checkpoint(args.checkpoint)
    else:
        steps = args.steps or (30 if args.tiny else 2000)
        overrides = {**(TINY if args.tiny else SMALL), "train_steps": steps, **parse_overrides(args.sets_)}
        config = resolve_config(args.config, overrides)
        trainer = Trainer(config, [0], device=args.device)
        trainer.run()
    print(
        f"# held-out standard error vs size — {device_name(trainer.device)}, {config.name} rank {config.rank} "
        f"width {config.hidden_dim}, step {trainer.step}, seed {trainer.seeds[0]}, "
        f"{args.sets} independent sets per size"
    )
    print(
        "| N | val_mse (mean of sets) | reported SE | SE / val_mse | sd between sets | sd / val_mse | eval s "
        "| ms per sample·seed |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        values, errors, seconds = [], [], []
        for index in range(args.sets):
            start = time.perf_counter()
            scores = trainer.evaluate(size=size, val_seed=config.val_seed + 1000 * index)[trainer.seeds[0]]
            seconds.append(time.perf_counter() - start)
            values.append(scores["val_mse"])
            errors.append(scores["val_mse_se"])
        mean, se = statistics.fmean(values), statistics.fmean(errors)
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        per_sample_ms = 1000 * statistics.fmean(seconds) / (size * len(trainer.seeds))
        print(
            f"| {size} | {mean:.6g} | {se:.3g} | {100 * se / mean:.2f}% | {spread:.3g} | {100 * spread / mean:.2f}% "
            f"| {statistics.fmean(seconds):.2f} | {per_sample_ms:.3g} |"
        )
        trivial = predict_mean_mse(held_out_set(size, config.rank, config.id_diag, config.val_seed))
        if mean >= trivial:
            print(f"# warning: val_mse {mean:.4g} ≥ predicting the mean ({trivial:.4g}): this model has not learned")


if __name__ == "__main__":
    main()
