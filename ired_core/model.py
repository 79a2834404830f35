"""The IRED energy model for the matrix-inverse task, as an ensemble of S independent seeds.

Every weight carries a leading seed axis S, so S models train in one set of batched kernels
(`torch.baddbmm`) and seed s's slice is exactly the model that seed would train alone.

    temb = Linear(GELU(Linear(sinusoidal(t))))                 (128)
    h1 = swish(W1 · [A, y])                                    (800 → 512)
    h2 = swish((W2 h1) ⊙ (1 + g2) + b2),   (g2, b2) = Linear(temb)   FiLM
    h3 = swish((W3 h2) ⊙ (1 + g3) + b3),   (g3, b3) = Linear(temb)
    E  = Σ fc4(h3)²   ("vector" head, IRED's)   or   E = Linear(h3 → 1)   ("scalar")

The denoiser is the energy gradient ε̂ = ∇_y E(A, y, t).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ired_core.configs import TrainConfig


class EnsembleLinear(nn.Module):
    """S independent `nn.Linear` layers applied in one batched matmul: (S, B, in) → (S, B, out)."""

    def __init__(self, generators: list[torch.Generator], in_dim: int, out_dim: int) -> None:
        super().__init__()
        # nn.Linear's default init, U(−1/√in, 1/√in), drawn from each seed's own generator
        bound = 1 / math.sqrt(in_dim)
        self.weight = nn.Parameter(
            torch.stack([(torch.rand(in_dim, out_dim, generator=g) * 2 - 1) * bound for g in generators])
        )
        self.bias = nn.Parameter(
            torch.stack([(torch.rand(1, out_dim, generator=g) * 2 - 1) * bound for g in generators])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position encoding of integer timesteps: (…,) → (…, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
    angles = t.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class EnsembleEnergyModel(nn.Module):
    def __init__(self, config: TrainConfig, seeds: list[int]) -> None:
        super().__init__()
        self.seeds = list(seeds)
        self.time_dim = config.time_dim
        self.energy_head = config.energy_head
        # one CPU generator per seed makes the init identical on every device and ensemble size
        gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        dim, h, td = config.rank**2, config.hidden_dim, config.time_dim
        self.time_fc1 = EnsembleLinear(gens, td, td)
        self.time_fc2 = EnsembleLinear(gens, td, td)
        self.fc1 = EnsembleLinear(gens, 2 * dim, h)
        self.fc2 = EnsembleLinear(gens, h, h)
        self.fc3 = EnsembleLinear(gens, h, h)
        self.film2 = EnsembleLinear(gens, td, 2 * h)
        self.film3 = EnsembleLinear(gens, td, 2 * h)
        self.fc4 = EnsembleLinear(gens, h, dim if config.energy_head == "vector" else 1)

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    def energy(self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E_θ(A, y, t) per sample: a, y (S, B, r²), t (S, B) → (S, B)."""
        temb = self.time_fc2(F.gelu(self.time_fc1(sinusoidal_embedding(t, self.time_dim))))  # (S, B, 128)
        gain2, shift2 = self.film2(temb).chunk(2, dim=-1)  # (S, B, h) each
        gain3, shift3 = self.film3(temb).chunk(2, dim=-1)
        h = F.silu(self.fc1(torch.cat([a, y], dim=-1)))  # (S, B, h)
        h = F.silu(self.fc2(h) * (1 + gain2) + shift2)
        h = F.silu(self.fc3(h) * (1 + gain3) + shift3)
        out = self.fc4(h)  # (S, B, r²) or (S, B, 1)
        if self.energy_head == "vector":
            return out.pow(2).sum(dim=-1)
        return out.squeeze(-1)

    def energy_and_grad(
        self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, ∇_y E), shapes (S, B) and (S, B, r²).

        Each sample's energy depends only on its own y, so ∇_y Σ E is the per-sample gradient —
        never divided by the batch size (that made the inference step depend on the batch size).
        """
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            energy = self.energy(a, y, t)
            (grad,) = torch.autograd.grad(energy.sum(), y, create_graph=create_graph)
        return energy, grad
