"""Wire the trainer wrong on purpose, one change at a time, and list the tests that catch each change.

Issue 19's review found that each change below left every test green. This applies each one to a
copy of the code (the checkout is never touched), runs the trainer's tests there and prints which
fail; a change that no test catches is reported as SURVIVED and the script exits 1.

    python bench/wiring_mutations.py                       # about 10 minutes on 2 cores
    python bench/wiring_mutations.py --tests tests/ired_core/test_trainer_wiring.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINER = Path("ired_core/trainer.py")
DEFAULT_TESTS = (
    "tests/ired_core/test_trainer_wiring.py",
    "tests/ired_core/test_divergence.py",
    "tests/ired_core/test_trainer.py",
    "tests/test_cli_train.py",
)
MUTATIONS: dict[str, list[tuple[str, str]]] = {
    "E⁺ and E⁻ swapped where the trainer calls the energy loss": [
        (
            "energy_pos / temperature,\n                energy_neg / temperature,",
            "energy_neg / temperature,\n                energy_pos / temperature,",
        )
    ],
    "the residual filter's weights dropped": [("mask = mask * weights", "mask = mask")],
    "replayed chains scored with the fresh batch's A": [
        (
            "            cond = self._condition(a, t)\n        eps_neg",
            "            cond = self._condition(a, t)\n        fresh_a = a\n        eps_neg",
        ),
        (
            "energy_pos = self.model.energy(a, y_pos, t, cond=cond)\n"
            "        energy_neg = self.model.energy(a, y_neg, t, cond=cond)",
            "energy_pos = self.model.energy(fresh_a, y_pos, t)\n"
            "        energy_neg = self.model.energy(fresh_a, y_neg, t)",
        ),
    ],
    "replayed slots handed the fresh batch's conditioning": [
        ("            cond = self._condition(a, t)  # replayed slots bring their own A and t\n", "")
    ],
    "warm-up removed": [
        (
            "weight = energy_weight(self.step, cfg.train_steps, cfg.energy_weight_max, cfg.energy_warmup_frac)",
            "weight = cfg.energy_weight_max",
        )
    ],
    "timestep window removed": [
        (
            "mask = timestep_window(t, cfg.timesteps, cfg.energy_t_min_frac, cfg.energy_t_max_frac)",
            "mask = torch.ones_like(t, dtype=torch.float)",
        )
    ],
    "per-seed gradient clipping removed": [("        self._clip_grad_norm_per_seed(alive)\n", "")],
    "one global gradient norm across seeds": [
        (
            "norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()",
            "norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt().expand(len(self.seeds))",
        )
    ],
    "the CD regulariser dropped": [
        (
            "                cfg.energy_reg_weight,\n                cfg.cd_margin,",
            "                0.0,\n                cfg.cd_margin,",
        )
    ],
    "negative_renoise: false ignored": [("if cfg.negative_renoise else chain", "")],
    "a diverged seed's gradient not zeroed": [
        (
            "g.copy_(torch.where(alive.view(shape), g * coef.view(shape), torch.zeros_like(g)))",
            "g.mul_(coef.view(shape))",
        )
    ],
}


def _copy_of_the_code(target: Path) -> None:
    for name in ("ired_core", "ired_dcd", "api", "worker", "tests", "configs", "migrations"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "alembic.ini"):
        shutil.copy(ROOT / name, target / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test files to run per change")
    args = parser.parse_args()
    survived = []
    with tempfile.TemporaryDirectory(prefix="ired-wiring-") as tmp:
        copy = Path(tmp)
        _copy_of_the_code(copy)
        original = (copy / TRAINER).read_text()
        env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy is imported first, ahead of the installed checkout
        where = subprocess.run(
            [sys.executable, "-c", "import ired_core.trainer as t; print(t.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(copy)):
            print(f"the copy is not the code under test ({where}); nothing was run")
            return 2
        for name, edits in MUTATIONS.items():
            text = original
            for old, new in edits:
                if old not in text:
                    print(f"## {name}: cannot apply (the trainer changed; update MUTATIONS)")
                    return 2
                text = text.replace(old, new)
            (copy / TRAINER).write_text(text)
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *args.tests],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            failed = sorted(set(re.findall(r"FAILED (\S+)", done.stdout)))
            print(f"## {name}: {'caught by ' + str(len(failed)) if failed else 'SURVIVED'}", flush=True)
            for test in failed:
                print(f"    {test.split(' ')[0]}", flush=True)
            if not failed:
                survived.append(name)
        (copy / TRAINER).write_text(original)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
