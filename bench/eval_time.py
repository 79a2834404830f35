"""Evaluation time: IRED inference (T × 5 gd_reject steps) on the full held-out set for S seeds.

    python bench/eval_time.py --device cuda --seeds 10      # the preset's held-out sets: 32,768 ID + 32,768 OOD
    python bench/eval_time.py --tiny                         # CPU smoke form (CI; not timed)

The baseline row is one seed evaluated alone, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from ired_core.configs import resolve_config
from ired_core.trainer import Trainer

TINY = {"rank": 4, "hidden_dim": 32, "time_dim": 16, "val_size": 64, "eval_batch_size": 64}


def eval_seconds(seeds: int, args: argparse.Namespace) -> float:
    overrides = {
        **(TINY if args.tiny else {}),
        "eval_batch_size": args.eval_batch_size or (64 if args.tiny else 4096),
        "precision": args.precision,
    }
    trainer = Trainer(resolve_config("q204", overrides), list(range(seeds)), device=args.device)
    trainer.evaluate()  # warm-up (and builds the cached held-out sets)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    start = time.perf_counter()
    trainer.evaluate()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    one = eval_seconds(1, args)
    many = eval_seconds(args.seeds, args)
    print(
        f"evaluation (ID + OOD held-out sets): 1 seed {one:.3f} s, {args.seeds} seeds {many:.3f} s, "
        f"{args.seeds * one / many:.2f}× seed-throughput vs one seed"
    )


if __name__ == "__main__":
    main()
