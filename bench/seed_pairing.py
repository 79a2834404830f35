"""Are runs with the same seed correlated across configs? The case for the paired tests, measured.

Runs with the same seed share their initial weights and their data stream across configs. If their
val_mse move together, comparing configs seed by seed (paired t, Wilcoxon) removes that shared part
and sees smaller effects than the unpaired tests. This reads a results directory (from `ired-dcd
train` or bench/pilot.py) and prints, for every pair of configs, the correlation over their common
seeds (Pearson r with its 95% interval, Spearman ρ), then each config against the baseline with the
unpaired Welch p and the paired t p side by side.

    python bench/pilot.py --configs q100,q201,q202s,q203s,q204s --seeds 0-9 --steps 400 --budget 3600 \\
        --device cpu --set rank=5 --set hidden_dim=128 --set batch_size=128 --set lr=0.001 --out runs/pairing
    python bench/seed_pairing.py --dir runs/pairing
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from scipy import stats

from ired_core.results_dir import read_results
from ired_core.verdict import AUTO_BASELINE, choose_baseline, compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="results directory")
    parser.add_argument("--metric", default="val_mse")
    parser.add_argument("--baseline", default=AUTO_BASELINE)
    args = parser.parse_args()
    found = read_results(args.dir, args.metric)
    by_seed = {name: dict(zip(found.seeds[name], found.values[name], strict=True)) for name in found.values}
    print(f"# seed pairing of {args.metric} — {args.dir}")
    print("| config A | config B | common seeds | Pearson r | 95% CI | Spearman ρ |")
    print("|:---|:---|---:|---:|---:|---:|")
    for a, b in itertools.combinations(sorted(by_seed), 2):
        common = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(common) < 3:
            continue
        x, y = (np.array([by_seed[name][s] for s in common]) for name in (a, b))
        pearson = stats.pearsonr(x, y)
        low, high = pearson.confidence_interval(0.95)
        spearman = stats.spearmanr(x, y).statistic
        print(f"| {a} | {b} | {len(common)} | {pearson.statistic:+.2f} | [{low:+.2f}, {high:+.2f}] | {spearman:+.2f} |")
    baseline = choose_baseline(args.baseline, found.values, found.seeds, args.metric)
    comparison = compare(found.values, baseline, metric=args.metric, seeds=found.seeds)
    print(f"\n# against {baseline.describe()}")
    print("| config | n | Δ% | Welch p (unpaired) | paired t p | Wilcoxon p |")
    print("|:---|---:|---:|---:|---:|---:|")
    for row in comparison.rows:
        if row.is_baseline:
            continue

        def cell(value: float | None, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        print(
            f"| {row.name} | {row.n} | {cell(row.delta_pct, '+.2f')} | {cell(row.welch_p, '.3g')} "
            f"| {cell(row.paired_p, '.3g')} | {cell(row.wilcoxon_p, '.3g')} |"
        )


if __name__ == "__main__":
    main()
