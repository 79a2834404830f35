"""Task-aware false-negative filter for the matrix-inverse task.

A negative x̂ that nearly solves the task, r = ‖A·X − I‖_F small with X = reshape(x̂, r×r), is a
false negative: pushing its energy up punishes correct behaviour. Per timestep t the threshold
τ(t) is a quantile of r within the batch (or an absolute τ); negatives with r < τ(t) are dropped
from the energy loss (weight 0) or down-weighted.
"""

from __future__ import annotations

import math

import torch


def inverse_residual(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """r = ‖A·X − I‖_F for flattened A, X of shape (…, r²) → (…)."""
    rank = math.isqrt(a.shape[-1])
    a_mat = a.unflatten(-1, (rank, rank))
    x_mat = x.unflatten(-1, (rank, rank))
    eye = torch.eye(rank, dtype=a.dtype, device=a.device)
    return torch.linalg.matrix_norm(a_mat @ x_mat - eye)


def per_timestep_threshold(
    residual: torch.Tensor, t: torch.Tensor, timesteps: int, quantiles: float | list[float]
) -> torch.Tensor:
    """τ(t) for each sample: the quantile of r among the seed's samples at the same t.

    residual, t: (S, B) → (S, B). Uses the 'lower' quantile (an observed value), so with n
    distinct residuals at t exactly ⌊q·(n − 1)⌋ of them lie strictly below τ(t).
    """
    q = torch.as_tensor(quantiles, dtype=residual.dtype, device=residual.device).expand(timesteps)
    tau = torch.zeros_like(residual)
    for step in range(timesteps):  # T is small (10); the batch axis stays vectorised
        at_step = t == step
        masked = torch.where(at_step, residual, torch.full_like(residual, float("nan")))
        tau_step = torch.nanquantile(masked, q[step], dim=1, keepdim=True, interpolation="lower")  # (S, 1)
        tau = torch.where(at_step, tau_step, tau)
    return tau


def filter_weights(
    residual: torch.Tensor,
    t: torch.Tensor,
    timesteps: int,
    *,
    quantiles: float | list[float],
    tau: float | None,
    filtered_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight per negative (S, B), filtered mask (S, B)): filtered_weight where r < τ(t), else 1."""
    threshold = tau if tau is not None else per_timestep_threshold(residual, t, timesteps, quantiles)
    filtered = residual < threshold
    weight = torch.where(filtered, torch.full_like(residual, filtered_weight), torch.ones_like(residual))
    return weight, filtered
