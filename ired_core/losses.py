"""Per-sample losses. Every function returns shape (S, B): one value per seed and sample.

Nothing here averages over the batch; the trainer combines per-sample terms first and averages
once (averaging the energy term to a scalar before weighting made it 32× too weak).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def denoising_loss(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_mse = mean over the r² entries of (ε̂ − ε)²."""
    return (eps_hat - eps).pow(2).mean(dim=-1)


def nce_loss(energy_pos: torch.Tensor, energy_neg: torch.Tensor) -> torch.Tensor:
    """IRED's NCE: cross-entropy over logits [−E⁺, −E⁻] with target 0 = softplus(E⁺ − E⁻)."""
    return F.softplus(energy_pos - energy_neg)


def cd_loss(
    energy_pos: torch.Tensor, energy_neg: torch.Tensor, reg_weight: float = 0.0, margin: float | None = None
) -> torch.Tensor:
    """Contrastive divergence (Hinton 2002): data energy down, sample energy up.

    L = E⁺ − E⁻                      the plan's objective; unbounded below
    L = max(E⁺ − E⁻, −m)             with a margin m: no push once E⁻ ≥ E⁺ + m (a hinge)
    L += α·(E⁺² + E⁻²)               with α = reg_weight: pulls both energies towards 0
                                     (Du & Mordatch 2019), bounding E⁻ near 1/(2α)
    """
    loss = energy_pos - energy_neg
    if margin is not None:
        loss = loss.clamp(min=-margin)
    if reg_weight:
        loss = loss + reg_weight * (energy_pos.pow(2) + energy_neg.pow(2))
    return loss


def energy_loss(
    kind: str, energy_pos: torch.Tensor, energy_neg: torch.Tensor, reg_weight: float, margin: float | None = None
) -> torch.Tensor:
    """Dispatch on the config's `energy_loss`."""
    if kind == "nce":
        return nce_loss(energy_pos, energy_neg)
    if kind == "cd":
        return cd_loss(energy_pos, energy_neg, reg_weight, margin)
    raise ValueError(f"unknown energy_loss {kind!r}; valid: nce, cd")
