#!/usr/bin/env bash
# Fresh machine → a small study on the CPU with the embedded default (SQLite + a local worker, no external
# services), printing the comparison table when its jobs finish: q100 (the baseline, trained here),
# Q-201, the plan's Q-202…Q-204, and the stabilised arms Q-202s…Q-204s (docs/stability.md).
#
# Both stories show: the plan's CD arms blow up within a hundred steps and are marked diverged (with the
# rule and the step), the stabilised arms train. The task is shrunk (rank 5, width 128, batch 256, 300
# steps, lr 1e-3) so it finishes in minutes; its numbers are a smoke test of the study, not its answer
# (that takes the full size on a GPU: bench/pilot.py). Data, database and checkpoints go to ./ired-dcd-data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
exec .venv/bin/ired-dcd study --seeds 0-2 --steps 300 --device cpu --set rank=5 --set lr=0.001 "$@"
