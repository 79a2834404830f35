"""The matrix-inverse task (IRED, ICML 2024): inputs A, targets A⁻¹, flattened to rank².

    R ~ U(−1, 1)^{r×r},  A = R Rᵀ,  A ← A + Aᵀ + d·I,  Y = A⁻¹

with d = 0.5 in distribution and d = 0.1 for the harder out-of-distribution split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ired_core.rng import SeedStreams


def matrices_from_uniform(u: torch.Tensor, diag: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, r, r) uniforms in [0, 1) → flattened (A, A⁻¹), each (…, r²), in u's dtype."""
    rank = u.shape[-1]
    r = 2 * u - 1
    a = r @ r.transpose(-1, -2)
    a = a + a.transpose(-1, -2) + diag * torch.eye(rank, dtype=u.dtype, device=u.device)
    y = torch.linalg.inv(a)
    return a.flatten(-2), y.flatten(-2)


def training_batch(streams: SeedStreams, batch_size: int, rank: int, diag: float) -> tuple[torch.Tensor, ...]:
    """One batch per seed, generated on the streams' device: A, Y each (S, B, r²)."""
    return matrices_from_uniform(streams.rand(batch_size, rank, rank), diag)


@dataclass(frozen=True)
class HeldOutSet:
    """A fixed validation split: inputs and targets, float32, (N, r²) on the CPU."""

    inputs: torch.Tensor
    targets: torch.Tensor


@lru_cache(maxsize=8)
def held_out_set(size: int, rank: int, diag: float, seed: int) -> HeldOutSet:
    """The held-out set: generated in float64 on the CPU from `seed`, then cast to float32.

    The same on every machine and independent of the training seeds (its own generator).
    """
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand((size, rank, rank), generator=generator, dtype=torch.float64)
    a, y = matrices_from_uniform(u, diag)
    return HeldOutSet(inputs=a.float(), targets=y.float())
