"""The trainer: all seeds of a job as one ensemble, with evaluation, checkpoints and exact resume.

One training step, per seed and per sample (SPEC §2):

    1. data:      A, Y from the seed's stream;  t ~ U{0..T−1};  y_t = q_sample(Y, t, ε)
    2. denoise:   ε̂ = ∇_y E(A, y_t, t)  (create_graph);  L_mse = mean((ε̂ − ε)²)
    3. negatives: chain start q_sample(Y, t, c·ε') (or a replayed chain with its own A, Y, t),
                  k sampler steps, x̂ = clamp(y/√ᾱ_t, ±2),  y⁻ = q_sample(x̂, t, ε'),  y⁺ = q_sample(Y, t, ε')
    4. energy:    L_E = nce | cd (E⁺, E⁻), masked by the timestep window and the residual filter
    5. total:     L = mean_B(L_mse + w(step)·mask·L_E) per seed; Σ over seeds (seeds never mix)
    6. update:    backward, per-seed grad-norm clip, Adam, EMA every `ema_every` steps

The step never synchronises with the host: diagnostics accumulate on the device and are read
every `log_every` steps, when `ired_core.divergence` judges each seed. A seed judged diverged is
stopped: its loss no longer reaches its weights and it reports no more metrics, while the other seeds
of the ensemble go on.

Engines: "reuse" (the default) computes what A and t alone fix (`model.Conditioning`) once per step and
shares it between the denoising gradient, every step of the negatives' chain and both energies;
"compiled" does the same and runs the energy and its gradient through `torch.compile` (Inductor fuses
the elementwise work between the GEMMs; it compiles on first use, for each new shape);
"eager", the reference, lets every energy call compute its own. All three train the same model (tested).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ired_core import __version__
from ired_core.configs import ENGINES, Engine, TrainConfig
from ired_core.data import held_out_set, training_batch
from ired_core.divergence import Divergence, DivergenceMonitor
from ired_core.evaluate import held_out_mse, predict_mean_mse
from ired_core.filters import filter_weights, inverse_residual
from ired_core.input_rules import check_seeds, finite_or_none
from ired_core.losses import denoising_loss, energy_loss
from ired_core.model import Conditioning, EnsembleEnergyModel
from ired_core.replay import ReplayBuffer
from ired_core.rng import SeedStreams
from ired_core.samplers import SamplerStep, reverse_step_init, run_chain, to_x0
from ired_core.schedule import (
    ema_decay,
    energy_temperature,
    energy_weight,
    make_schedule,
    q_sample,
    timestep_window,
)

CHECKPOINT_VERSION = 1
NEGATIVE_NOISE_SALT = 1
DIAGNOSTICS = (
    "loss",
    "loss_denoise",
    "loss_energy",
    "energy_pos",
    "energy_neg",
    "energy_gap",
    "grad_energy_norm",
    "accept_rate",
    "replay_frac",
    "filtered_frac",
    "energy_weight",
)
VALIDATION_METRICS = ("val_mse", "val_mse_x0", "val_mse_ood", "val_mse_se", "val_mse_x0_se", "val_mse_ood_se")
"""Each held-out MSE, then its standard error over the held-out samples (ired_core.evaluate.HeldOutScore)."""


@dataclass(frozen=True)
class MetricsEvent:
    """Metrics at one step: {seed: {name: value}}; diverged seeds are left out."""

    step: int
    per_seed: dict[int, dict[str, float]]


@dataclass(frozen=True)
class SeedOutcome:
    """How one seed ended: its status, the step it ended at, its final metrics, and why it diverged."""

    seed: int
    status: Literal["succeeded", "diverged", "cancelled"]
    step: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    divergence: Divergence | None = None


@functools.cache
def code_version() -> str:
    """IRED_CODE_VERSION when set (the image's build sets it), else the git commit of the checkout the
    code runs from, else the package version."""
    if os.environ.get("IRED_CODE_VERSION"):
        return os.environ["IRED_CODE_VERSION"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"git:{sha}"
    except (OSError, subprocess.SubprocessError):
        return f"ired-dcd {__version__}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


class Trainer:
    """Trains `config` for every seed in `seeds` at once; see the module docstring for one step."""

    def __init__(
        self,
        config: TrainConfig,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        engine: Engine = "reuse",
    ) -> None:
        seeds = check_seeds(list(seeds))
        if engine not in ENGINES:
            raise ValueError(f"engine: {engine!r}; valid: {', '.join(ENGINES)}")
        self.engine = engine
        self.config = config
        self.seeds = seeds
        self.device = torch.device(device)
        self.precision = self._set_precision(config.precision)
        self.device_name = device_name(self.device)
        self.schedule = make_schedule(config.timesteps, config.cosine_s, self.device)
        self.model = EnsembleEnergyModel(config, seeds).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        if engine == "compiled":
            self.model.compile_chain()
            self.ema.compile_chain()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, betas=(config.adam_beta1, config.adam_beta2)
        )
        self.streams = SeedStreams(seeds, self.device)
        self.negative_streams = SeedStreams(seeds, self.device, salt=NEGATIVE_NOISE_SALT)
        self.replay = (
            ReplayBuffer(
                len(seeds),
                config.replay_size,
                config.rank**2,
                config.timesteps,
                per_timestep=config.replay_buckets == "per_timestep",
                device=self.device,
            )
            if config.replay
            else None
        )
        self.step = 0
        self.diverged_at = torch.full((len(seeds),), -1, dtype=torch.long, device=self.device)  # −1: alive
        self.divergences: dict[int, Divergence] = {}
        self.monitors = {seed: DivergenceMonitor(config) for seed in seeds}
        self.last_validation: dict[int, dict[str, float]] = {}

    # ---------------------------------------------------------------- precision
    def _set_precision(self, precision: str) -> str:
        """TF32 and bf16 exist on CUDA only; on the CPU every run is fp32 (and says so)."""
        if self.device.type != "cuda":
            return "fp32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        return precision

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    # ---------------------------------------------------------------- one step
    def train_step(self) -> torch.Tensor:
        """One optimisation step for every seed → diagnostics (S, len(DIAGNOSTICS)), on the device."""
        cfg, schedule = self.config, self.schedule
        dim = cfg.rank**2
        with self._autocast():
            # 1. data
            a, y0 = training_batch(self.streams, cfg.batch_size, cfg.rank, cfg.id_diag)  # (S, B, D)
            t = self.streams.randint(cfg.timesteps, cfg.batch_size)  # (S, B)
            eps = self.streams.randn(cfg.batch_size, dim)
            y_t = q_sample(y0, t, eps, schedule)
            # 2. denoising through the energy gradient
            cond = self._condition(a, t)
            _, eps_hat = self.model.energy_and_grad(a, y_t, t, create_graph=True, cond=cond)
            loss_denoise = denoising_loss(eps_hat, eps)  # (S, B)
            weight = energy_weight(self.step, cfg.train_steps, cfg.energy_weight_max, cfg.energy_warmup_frac)
            zeros = torch.zeros_like(loss_denoise)
            if cfg.uses_negatives:
                terms = self._energy_terms(a, y0, t, cond)
                loss = loss_denoise + weight * terms["mask"] * terms["loss_energy"]
            else:
                terms = {
                    "loss_energy": zeros,
                    "energy_pos": zeros,
                    "energy_neg": zeros,
                    "mask": zeros,
                    "accept_rate": zeros[:, 0],
                    "replay_frac": zeros[:, 0],
                    "filtered_frac": zeros[:, 0],
                }
                loss = loss_denoise
            per_seed_loss = loss.float().mean(dim=1)  # (S,)
        # 3. update: seeds are independent, so Σ over seeds gives each seed its own gradient;
        #    a diverged seed's gradient is zeroed, so that nothing reaches its weights
        alive = self.diverged_at < 0  # (S,)
        self.optimizer.zero_grad(set_to_none=True)
        per_seed_loss.sum().backward()
        self._clip_grad_norm_per_seed(alive)
        self.optimizer.step()
        self.step += 1
        if self.step % cfg.ema_every == 0:
            self._update_ema()
        self.diverged_at = torch.where(~torch.isfinite(per_seed_loss) & alive, self.step, self.diverged_at)
        contributing = terms["mask"].sum(dim=1).clamp(min=1)
        energy_pos, energy_neg = terms["energy_pos"].mean(1), terms["energy_neg"].mean(1)
        diagnostics = (
            per_seed_loss,
            loss_denoise.mean(1),
            (terms["mask"] * terms["loss_energy"]).sum(1) / contributing,
            energy_pos,
            energy_neg,
            energy_neg - energy_pos,
            eps_hat.norm(dim=-1).mean(1),
            terms["accept_rate"],
            terms["replay_frac"],
            terms["filtered_frac"],
            torch.full_like(per_seed_loss, weight),
        )
        return torch.stack([d.detach().float() for d in diagnostics], dim=1)

    def _condition(self, a: torch.Tensor, t: torch.Tensor) -> Conditioning | None:
        """The model's conditioning on (A, t), made once per step; None (engine "eager") lets each call make
        its own."""
        return None if self.engine == "eager" else self.model.condition(a, t)

    def _energy_terms(
        self, a: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, cond: Conditioning | None = None
    ) -> dict[str, torch.Tensor]:
        """Steps 3–4 of the module docstring: per-sample energies, loss and mask, all (S, B); `cond`: the
        conditioning on this (a, t), if made already."""
        cfg, schedule = self.config, self.schedule
        if cond is None:
            cond = self._condition(a, t)
        eps_neg = self.negative_streams.randn(*y0.shape[1:])
        # chain start: fresh noise around the data, or the model's own reverse step from t+1
        if cfg.negative_init == "diffusion":
            t_next = torch.clamp(t + 1, max=cfg.timesteps - 1)
            start = reverse_step_init(
                self.model, a, q_sample(y0, t_next, cfg.noise_scale * eps_neg, schedule), t, schedule
            )
        else:
            start = q_sample(y0, t, cfg.noise_scale * eps_neg, schedule)
        replay_frac = torch.zeros(t.shape[0], device=t.device)
        if self.replay is not None:
            draw = self.replay.draw(t, cfg.p_replay, self.negative_streams)
            slot = draw.replayed.unsqueeze(-1)
            a, y0, start = (
                torch.where(slot, draw.a, a),
                torch.where(slot, draw.y0, y0),
                torch.where(slot, draw.chain, start),
            )
            t = torch.where(draw.replayed, draw.t, t)
            replay_frac = draw.replayed.float().mean(1)
            cond = self._condition(a, t)  # replayed slots bring their own A and t
        temperature = energy_temperature(cfg.energy_temperature, t, schedule)  # τ_t (S, B)
        chain, accept_rate = run_chain(
            self.model,
            a,
            start,
            t,
            schedule,
            sampler=cfg.sampler,
            steps=cfg.sampler_steps,
            sigma_mult=cfg.langevin_sigma_mult,
            streams=self.negative_streams,
            cond=cond,
            how=SamplerStep(
                step_mult=cfg.sampler_step_mult,
                grad_clip=cfg.sampler_grad_clip,
                temperature=temperature if cfg.energy_temperature != "unit" else None,
            ),
        )
        if self.replay is not None:
            self.replay.write(a, y0, chain, t)
        x0_neg = to_x0(chain, t, schedule)
        y_neg = q_sample(x0_neg, t, eps_neg, schedule).detach() if cfg.negative_renoise else chain
        y_pos = q_sample(y0, t, eps_neg, schedule)
        energy_pos = self.model.energy(a, y_pos, t, cond=cond)
        energy_neg = self.model.energy(a, y_neg, t, cond=cond)
        mask = timestep_window(t, cfg.timesteps, cfg.energy_t_min_frac, cfg.energy_t_max_frac)
        filtered_frac = torch.zeros_like(replay_frac)
        if cfg.residual_filter:
            weights, filtered = filter_weights(
                inverse_residual(a, x0_neg),
                t,
                cfg.timesteps,
                quantiles=cfg.residual_filter_quantile,
                tau=cfg.residual_filter_tau,
                filtered_weight=cfg.residual_filter_weight,
            )
            mask = mask * weights
            filtered_frac = filtered.float().mean(1)
        return {
            "loss_energy": energy_loss(  # on the density's own energy E/τ_t
                cfg.energy_loss,
                energy_pos / temperature,
                energy_neg / temperature,
                cfg.energy_reg_weight,
                cfg.cd_margin,
            ),
            "energy_pos": energy_pos.detach(),
            "energy_neg": energy_neg.detach(),
            "mask": mask,
            "accept_rate": accept_rate,
            "replay_frac": replay_frac,
            "filtered_frac": filtered_frac,
        }

    def _clip_grad_norm_per_seed(self, alive: torch.Tensor) -> None:
        """clip_grad_norm_ for each seed's slice: g ← g · min(1, max_norm / (‖g‖ + 1e−6)); 0 if diverged."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()  # (S,)
        coef = (self.config.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            shape = (-1, *([1] * (g.dim() - 1)))
            g.copy_(torch.where(alive.view(shape), g * coef.view(shape), torch.zeros_like(g)))

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = ema_decay(self.step, self.config.ema_decay)
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            ema_p.lerp_(p, 1 - decay)

    # ---------------------------------------------------------------- evaluation
    def evaluate(
        self, batch_size: int | None = None, *, size: int | None = None, val_seed: int | None = None
    ) -> dict[int, dict[str, float]]:
        """val_mse, val_mse_x0 (in distribution) and val_mse_ood of the EMA weights, per seed, each with
        its held-out standard error `<name>_se`. `size` and `val_seed` replace the config's held-out set
        by another (benchmarks time a chunk of it, or draw independent sets)."""
        cfg = self.config
        size, val_seed = size or cfg.val_size, cfg.val_seed if val_seed is None else val_seed
        results: dict[str, torch.Tensor] = {}
        for split, diag, seed_offset in (("", cfg.id_diag, 0), ("_ood", cfg.ood_diag, 1)):
            held_out = held_out_set(size, cfg.rank, diag, val_seed + seed_offset)
            with self._autocast():
                score_y, score_x0 = held_out_mse(
                    self.ema,
                    held_out,
                    self.schedule,
                    steps=cfg.inference_steps,
                    batch_size=batch_size or cfg.eval_batch_size,
                    noise_seed=val_seed + seed_offset,
                )
            scores = {f"val_mse{split}": score_y, **({"val_mse_x0": score_x0} if not split else {})}
            for name, score in scores.items():
                results[name], results[f"{name}_se"] = score.mse, score.se
        table = torch.stack([results[name] for name in VALIDATION_METRICS], dim=1).cpu().tolist()
        return {
            seed: dict(zip(VALIDATION_METRICS, row, strict=True)) for seed, row in zip(self.seeds, table, strict=True)
        }

    # ---------------------------------------------------------------- the loop
    def run(
        self,
        *,
        on_metrics: Callable[[MetricsEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_path: Path | None = None,
    ) -> list[SeedOutcome]:
        """Train until `train_steps`, all seeds diverged, or `should_stop()`; see the contract in docs.

        Metrics of a seed that diverged in an interval are still reported for that interval (the curve
        shows the blow-up), then no more.
        """
        cfg = self.config
        diag_sum = torch.zeros(len(self.seeds), len(DIAGNOSTICS), device=self.device)
        interval_steps, interval_start = 0, time.perf_counter()
        cancelled = False
        saved_step = None
        while self.step < cfg.train_steps and len(self.divergences) < len(self.seeds):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            diag_sum += self.train_step()
            interval_steps += 1
            reporting = [seed for seed in self.seeds if seed not in self.divergences]
            metrics: dict[int, dict[str, float]] = {}
            final = self.step == cfg.train_steps
            if self.step % cfg.log_every == 0 or final:
                steps_per_s = interval_steps / max(time.perf_counter() - interval_start, 1e-9)
                metrics = self._diagnostics(diag_sum / interval_steps, steps_per_s)
                diag_sum.zero_()
                interval_steps, interval_start = 0, time.perf_counter()
                self._judge_intervals(metrics)
            if self.step % cfg.eval_every == 0 or final:
                self.last_validation = self.evaluate()
                for seed, values in self.last_validation.items():
                    metrics.setdefault(seed, {}).update(values)
                self._judge_validation(self.last_validation)
            if metrics and on_metrics is not None:
                on_metrics(MetricsEvent(self.step, {s: _finite(metrics[s]) for s in reporting}))
            if checkpoint_path is not None and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(checkpoint_path)
                saved_step = self.step
        if checkpoint_path is not None and saved_step != self.step:  # the last step may be saved already
            self.save_checkpoint(checkpoint_path)
        return self.outcomes(cancelled=cancelled)

    def _diagnostics(self, means: torch.Tensor, steps_per_s: float) -> dict[int, dict[str, float]]:
        rows = means.cpu().tolist()
        return {
            seed: {**dict(zip(DIAGNOSTICS, row, strict=True)), "steps_per_s": steps_per_s}
            for seed, row in zip(self.seeds, rows, strict=True)
        }

    def _judge_intervals(self, metrics: dict[int, dict[str, float]]) -> None:
        """Divergence rules 1–4 for every live seed, on this interval's means and its per-step record."""
        non_finite_at = self.diverged_at.cpu().tolist()  # the step a loss first went non-finite, else −1
        for seed, at in zip(self.seeds, non_finite_at, strict=True):
            if seed in self.divergences:
                continue
            if at >= 0:
                self._diverge(seed, Divergence(at, "not finite", "loss", math.nan, math.inf))
                continue
            found = self.monitors[seed].check_interval(self.step, metrics[seed])
            if found is not None:
                self._diverge(seed, found)

    def _judge_validation(self, validation: dict[int, dict[str, float]]) -> None:
        """Divergence rule 5 for every live seed, against the held-out set's predict-the-mean MSE."""
        cfg = self.config
        predict_mean = predict_mean_mse(held_out_set(cfg.val_size, cfg.rank, cfg.id_diag, cfg.val_seed))
        for seed, values in validation.items():
            if seed not in self.divergences:
                found = self.monitors[seed].check_validation(self.step, values["val_mse"], predict_mean)
                if found is not None:
                    self._diverge(seed, found)

    def _diverge(self, seed: int, divergence: Divergence) -> None:
        """Record why `seed` failed and stop it: from the next step its loss no longer reaches its weights."""
        self.divergences[seed] = divergence
        index = self.seeds.index(seed)
        if self.diverged_at[index] < 0:
            self.diverged_at[index] = divergence.step
        for state in self.optimizer.state.values():  # no momentum left: zero gradients move nothing
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in state:
                    state[moment][index].zero_()

    def outcomes(self, cancelled: bool = False) -> list[SeedOutcome]:
        out = []
        for seed in self.seeds:
            divergence = self.divergences.get(seed)
            if divergence is not None:
                out.append(SeedOutcome(seed, "diverged", divergence.step, {}, divergence.message, divergence))
            elif cancelled:
                out.append(SeedOutcome(seed, "cancelled", self.step, self.last_validation.get(seed, {})))
            else:
                out.append(SeedOutcome(seed, "succeeded", self.step, self.last_validation.get(seed, {})))
        return out

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path) -> None:
        """Everything exact resume needs, written atomically (temp file, then rename)."""
        state = {
            "version": CHECKPOINT_VERSION,
            "code_version": code_version(),
            "step": self.step,
            "config": self.config.model_dump(),
            "seeds": self.seeds,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.streams.get_state(),
            "negative_rng": self.negative_streams.get_state(),
            "replay": self.replay.state_dict() if self.replay is not None else None,
            "diverged_at": self.diverged_at,
            "divergences": {seed: d.to_dict() for seed, d in self.divergences.items()},
            "monitors": {seed: monitor.state_dict() for seed, monitor in self.monitors.items()},
            "last_validation": self.last_validation,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as file:  # a Python file, so that a failed write surfaces as its OSError
                torch.save(state, file)
            os.replace(tmp, path)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            # a failed write (disk full) surfaces as an OSError without the file's name, or wrapped by torch
            failed_write = exc if isinstance(exc, OSError) else exc.__context__
            if isinstance(failed_write, OSError) and failed_write.errno is not None:
                raise OSError(failed_write.errno, failed_write.strerror, str(path)) from exc
            raise

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint; refuses one with other seeds or another architecture.

        Other fields may differ (e.g. more train_steps to extend a run across GPU sessions).
        """
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {path}: version {state.get('version')} != {CHECKPOINT_VERSION}")
        if state["seeds"] != self.seeds:
            raise ValueError(f"checkpoint {path}: seeds {state['seeds']} != {self.seeds}")
        saved_arch = TrainConfig(**state["config"]).architecture()
        if saved_arch != self.config.architecture():
            raise ValueError(f"checkpoint {path}: architecture {saved_arch} != {self.config.architecture()}")
        if (state["replay"] is None) != (self.replay is None):
            raise ValueError(f"checkpoint {path}: replay buffer presence differs from the config")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.streams.set_state(state["rng"])
        self.negative_streams.set_state(state["negative_rng"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        self.step = state["step"]
        self.diverged_at = state["diverged_at"].to(self.device)
        self.divergences = {int(k): Divergence.from_dict(v) for k, v in state.get("divergences", {}).items()}
        for seed, monitor_state in state.get("monitors", {}).items():
            self.monitors[int(seed)].load_state_dict(monitor_state)
        self.last_validation = {int(k): v for k, v in state["last_validation"].items()}


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in values.items() if finite_or_none(value) is not None}
