"""Profile of one preset's training step: where the time goes, kernel by kernel.

    python bench/profile_step.py --device cuda                  # q204, S = 10, batch 2048, tf32, 10 steps
    python bench/profile_step.py --device cuda --engine compiled  # the same through torch.compile
    python bench/profile_step.py --tiny                         # CPU smoke form (CI; not timed)

Prints, with the device name: the wall time per step, the time the device is busy per step and its
fraction of the wall time (GPU only: the sum of kernel times, so overlapping streams would count twice;
the trainer uses one), the kernels launched per step, and the top 15 kernels by time (CPU: operators by
self time), with their share of the busy time.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from ired_core.configs import ENGINES, resolve_config
from ired_core.trainer import Trainer

TINY = {"rank": 4, "batch_size": 32, "hidden_dim": 32, "time_dim": 16, "replay_size": 128, "sampler_steps": 2}
TOP = 15


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="q204")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, help="default 2048 (32 with --tiny)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--engine", default="reuse", choices=ENGINES, help="the trainer's engine (default reuse)")
    parser.add_argument("--tiny", action="store_true", help="tiny CPU smoke form (for CI)")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.steps, args.warmup = min(args.seeds, 2), min(args.steps, 2), 1
    batch = args.batch_size or (32 if args.tiny else 2048)
    overrides = {**(TINY if args.tiny else {}), "batch_size": batch, "precision": args.precision}
    config = resolve_config(args.preset, overrides)
    trainer = Trainer(config, list(range(args.seeds)), device=args.device, engine=args.engine)
    device = trainer.device
    for _ in range(args.warmup):
        trainer.train_step()
    _sync(device)

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        _sync(device)
        wall_us = (time.perf_counter() - start) * 1e6 / args.steps

    totals: dict[str, float] = defaultdict(float)
    launches = 0
    for event in prof.events():
        if on_gpu and event.device_type == torch.autograd.DeviceType.CUDA:  # a kernel (or a copy)
            totals[event.name] += event.time_range.elapsed_us()
            launches += 1
        elif not on_gpu:  # self times: an operator's own, its children's excluded, so nothing counts twice
            totals[event.name] += event.self_cpu_time_total
    busy_us = sum(totals.values()) / args.steps
    print(
        f"# step profile — {trainer.device_name}, {args.preset}, S={args.seeds}, batch {batch}, "
        f"{args.precision}, engine {args.engine}, {args.steps} steps"
    )
    print(f"wall time per step: {wall_us / 1000:.2f} ms")
    if on_gpu:
        print(f"GPU busy per step: {busy_us / 1000:.2f} ms ({busy_us / wall_us:.0%} of the wall time)")
        print(f"kernels per step: {launches / args.steps:.0f}")
    else:
        print(f"operators' self time per step: {busy_us / 1000:.2f} ms (CPU: no kernel count)")
    kind = "kernel" if on_gpu else "operator"
    print(f"| {kind} | ms per step | share |")
    print("|---|---|---|")
    for name, total in sorted(totals.items(), key=lambda item: -item[1])[:TOP]:
        share = total / (busy_us * args.steps) if busy_us else 0.0
        print(f"| `{name[:90]}` | {total / args.steps / 1000:.3f} | {share:.1%} |")


if __name__ == "__main__":
    main()
