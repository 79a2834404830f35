"""The stability sweep's table and plots, from its run directories (docs/stability.md).

Reads every `<setting>/<preset>/seed_<k>/{config.json, metrics.jsonl, result.json}` under DIR (what
`ired-dcd train --out DIR/<setting>` writes), labels each setting by the overrides that tell it apart
(`ired_core.results_dir.setting_labels`) and writes:

- `energy_neg.png`, `val_mse.png`, `loss_denoise.png`: one panel per setting, one line per seed
  (energies on a log axis; a cross where a seed diverged);
- a markdown table on stdout: per setting, how its seeds ended, val_mse (mean ± sd over the seeds
  still training) at each evaluation step beside Q-201's at the same step, and the largest |E⁻| seen.

    python bench/stability_report.py docs/stability --plots docs/stability
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ired_core.results_dir import setting_labels
from ired_core.run_files import CONFIG_FILE, METRICS_FILE, RESULT_FILE
from ired_core.verdict import Q201

PLOTTED = (("energy_neg", True), ("val_mse", True), ("loss_denoise", True))


def _seed_runs(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """setting label → seed → {"metrics": [rows], "result": {...}}."""
    results = sorted(root.glob(f"**/{RESULT_FILE}"))
    configs = {path: json.loads(path.with_name(CONFIG_FILE).read_text()) for path in results}
    labels = setting_labels({path: (configs[path]["preset"], configs[path].get("overrides") or {}) for path in results})
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in results:
        lines = path.with_name(METRICS_FILE).read_text().splitlines()
        result = json.loads(path.read_text())
        runs[labels[path]][result["seed"]] = {"metrics": [json.loads(line) for line in lines], "result": result}
    return dict(sorted(runs.items()))


def _outcome(seeds: dict[int, dict[str, Any]]) -> str:
    """'3 succeeded' or '3 diverged at steps 100–125 (denoiser blow-up)'."""
    diverged = [s["result"] for s in seeds.values() if s["result"]["status"] == "diverged"]
    parts = []
    if len(diverged) < len(seeds):
        parts.append(f"{len(seeds) - len(diverged)} succeeded")
    if diverged:
        steps = sorted(r["step"] for r in diverged)
        rules = sorted({r["divergence"]["rule"] for r in diverged if r.get("divergence")})
        span = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}–{steps[-1]}"
        parts.append(f"{len(diverged)} diverged at step {span} ({', '.join(rules)})")
    return ", ".join(parts)


def _val_by_step(seeds: dict[int, dict[str, Any]]) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for seed in seeds.values():
        for row in seed["metrics"]:
            if "val_mse" in row:
                by_step[row["step"]].append(row["val_mse"])
    return by_step


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(runs: dict[str, dict[int, dict[str, Any]]]) -> str:
    steps = sorted({step for seeds in runs.values() for step in _val_by_step(seeds)})
    reference = _val_by_step(runs.get(Q201, {}))
    lines = [
        "| setting | seeds | outcome | " + " | ".join(f"val_mse @ {s}" for s in steps) + " | max E⁻ |",
        "|:---|---:|:---|" + "---:|" * len(steps) + "---:|",
    ]
    for label, seeds in runs.items():
        by_step = _val_by_step(seeds)
        cells = []
        for step in steps:
            cell = _cell(by_step.get(step, []))
            if label != Q201 and by_step.get(step) and reference.get(step):
                ratio = statistics.fmean(by_step[step]) / statistics.fmean(reference[step])
                cell += f" ({ratio:.2f}× Q-201)"
            cells.append(cell)
        energy = max((abs(r.get("energy_neg", 0.0)) for s in seeds.values() for r in s["metrics"]), default=0.0)
        lines.append(f"| {label} | {len(seeds)} | {_outcome(seeds)} | " + " | ".join(cells) + f" | {energy:.3g} |")
    return "\n".join(lines)


def plots(runs: dict[str, dict[int, dict[str, Any]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    columns = 4
    rows = math.ceil(len(runs) / columns)
    for name, log in PLOTTED:
        figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharex=True)
        for axis, (label, seeds) in zip(axes.flat, runs.items(), strict=False):
            for seed, run in sorted(seeds.items()):
                points = [(r["step"], abs(r[name])) for r in run["metrics"] if name in r and math.isfinite(r[name])]
                points = [(step, value) for step, value in points if value > 0 or not log]
                if not points:
                    continue
                line = axis.plot(*zip(*points, strict=True), label=f"seed {seed}", linewidth=1)[0]
                if run["result"]["status"] == "diverged":
                    axis.plot(*points[-1], marker="x", color=line.get_color(), markersize=9)
            axis.set_title(label.replace(" · ", "\n"), fontsize=8)
            if not axis.lines:
                axis.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=axis.transAxes)
            elif log:
                axis.set_yscale("log")
            axis.tick_params(labelsize=7)
        for axis in list(axes.flat)[len(runs) :]:
            axis.set_visible(False)
        figure.suptitle(f"{name} against steps (× = the seed diverged there)", fontsize=10)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="the sweep's root: one subfolder per setting")
    parser.add_argument("--plots", type=Path, help="write the PNG plots into this folder")
    args = parser.parse_args()
    runs = _seed_runs(args.dir)
    print(table(runs))
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        for path in plots(runs, args.plots):
            print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
