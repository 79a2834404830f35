#!/usr/bin/env bash
# Fresh machine → a small Q-201…Q-204 study on the CPU with the embedded default (SQLite + a local
# worker, no external services), printing the comparison table when the four jobs finish.
#
# The task is shrunk (rank 5, width 128, batch 256, 300 steps, lr 1e-3) so 4 configs × 3 seeds
# train in a few minutes; the table therefore uses Q-201 as the baseline, not the plan's 0.0096761,
# which belongs to the full-size task. Data, database and checkpoints go to ./ired-dcd-data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
exec .venv/bin/ired-dcd study --seeds 0-2 --steps 300 --device cpu \
  --set rank=5 --set lr=0.001 --baseline q201 "$@"
