"""The IRED energy model for the matrix-inverse task, as an ensemble of S independent seeds.

Every weight carries a leading seed axis S, so S models train in one set of batched kernels
(`torch.baddbmm`) and seed s's slice is exactly the model that seed would train alone.

    temb = Linear(GELU(Linear(sinusoidal(t))))                 (128)
    h1 = swish(W1 · [A, y])                                    (800 → 512)
    h2 = swish((W2 h1) ⊙ (1 + g2) + b2),   (g2, b2) = Linear(temb)   FiLM
    h3 = swish((W3 h2) ⊙ (1 + g3) + b3),   (g3, b3) = Linear(temb)
    E  = Σ fc4(h3)²   ("vector" head, IRED's)   or   E = Linear(h3 → 1)   ("scalar")

The denoiser is the energy gradient ε̂ = ∇_y E(A, y, t).

A sampler chain moves only y, at one A and t, so what A and t alone fix — the time embedding, both FiLM
projections and A's half of fc1 — can be computed once per chain (`EnsembleEnergyModel.condition`) and
handed to every energy call of the chain; without it, each call computes its own. The energy and its
gradient given that conditioning are one pure function of tensors (`energy_and_grad_chain`), which
`compile_chain` hands to `torch.compile`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

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


@dataclass(frozen=True)
class Conditioning:
    """The part of E(A, y, t) that A and t alone fix, with W1 = [W1_A; W1_y] split by input rows:

        c1 = W1_Aᵀ A + b1,   (g_k, b_k) = FiLM_k(temb(t)),  k = 2, 3
        z1 = c1 + W1_yᵀ y,   z_k = (W_k h_{k−1}) ⊙ (1 + g_k) + b_k

    It remembers the A and t it was made from: an energy call asked at other ones refuses it.
    """

    a: torch.Tensor
    t: torch.Tensor
    c1: torch.Tensor  # (S, B, h)
    scale2: torch.Tensor  # 1 + g2
    shift2: torch.Tensor
    scale3: torch.Tensor
    shift3: torch.Tensor


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
        self.chain: Callable[[torch.Tensor, ChainInputs], tuple[torch.Tensor, torch.Tensor]] = energy_and_grad_chain

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    def condition(self, a: torch.Tensor, t: torch.Tensor) -> Conditioning:
        """What E(A, ·, t) takes from A (S, B, r²) and t (S, B), for every y: see `Conditioning`."""
        temb = self.time_fc2(F.gelu(self.time_fc1(sinusoidal_embedding(t, self.time_dim))))  # (S, B, 128)
        gain2, shift2 = self.film2(temb).chunk(2, dim=-1)  # (S, B, h) each
        gain3, shift3 = self.film3(temb).chunk(2, dim=-1)
        c1 = torch.baddbmm(self.fc1.bias, a, self.fc1.weight[:, : a.shape[-1], :])
        return Conditioning(a, t, c1, 1 + gain2, shift2, 1 + gain3, shift3)

    def energy(
        self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, cond: Conditioning | None = None
    ) -> torch.Tensor:
        """E_θ(A, y, t) per sample: a, y (S, B, r²), t (S, B) → (S, B); `cond`: `condition(a, t)`."""
        return _layers(y, self._chain_inputs(a, t, cond))[0]

    def energy_and_grad(
        self,
        a: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        create_graph: bool = False,
        cond: Conditioning | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, ∇_y E), shapes (S, B) and (S, B, r²), by the chain rule written out (`energy_and_grad_chain`).

        The backward pass reuses the forward's activations instead of asking autograd for a
        gradient of a gradient; with create_graph it is an ordinary differentiable expression, so
        training needs one backward, not a double backward. Each sample's energy depends only on
        its own y, so this is the per-sample gradient — never divided by the batch size.
        """
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            return self.chain(y, self._chain_inputs(a, t, cond))

    def compile_chain(self) -> None:
        """Run `energy_and_grad` through `torch.compile` (Inductor fuses the elementwise work between the
        GEMMs into a few kernels); the eager function stays the reference it is tested against."""
        self.chain = torch.compile(energy_and_grad_chain)

    def _chain_inputs(self, a: torch.Tensor, t: torch.Tensor, cond: Conditioning | None) -> ChainInputs:
        if cond is None:
            cond = self.condition(a, t)
        elif cond.a is not a or cond.t is not t:
            raise ValueError("conditioning made for another A or t than the energy is asked at")
        return ChainInputs(
            cond.c1,
            cond.scale2,
            cond.shift2,
            cond.scale3,
            cond.shift3,
            self.fc1.weight[:, a.shape[-1] :, :],
            self.fc2.weight,
            self.fc2.bias,
            self.fc3.weight,
            self.fc3.bias,
            self.fc4.weight,
            self.fc4.bias,
            self.energy_head == "vector",
        )


class ChainInputs(NamedTuple):
    """What the energy and its gradient take besides y: the conditioning, the weights after fc1's A rows."""

    c1: torch.Tensor
    scale2: torch.Tensor
    shift2: torch.Tensor
    scale3: torch.Tensor
    shift3: torch.Tensor
    w1_y: torch.Tensor  # (S, r², h): the rows of W1 that multiply y
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    w4: torch.Tensor
    b4: torch.Tensor
    vector_head: bool


def _layers(
    y: torch.Tensor, x: ChainInputs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(E, out, z1, z2, z3): the energy and the activations its gradient needs."""
    z1 = torch.baddbmm(x.c1, y, x.w1_y)  # (S, B, h)
    z2 = torch.baddbmm(x.b2, F.silu(z1), x.w2) * x.scale2 + x.shift2
    z3 = torch.baddbmm(x.b3, F.silu(z2), x.w3) * x.scale3 + x.shift3
    out = torch.baddbmm(x.b4, F.silu(z3), x.w4)  # (S, B, r²) or (S, B, 1)
    energy = out.pow(2).sum(dim=-1) if x.vector_head else out.squeeze(-1)
    return energy, out, z1, z2, z3


def energy_and_grad_chain(y: torch.Tensor, x: ChainInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, ∇_y E) from y and `x`, as one pure function of tensors (what `torch.compile` takes):

    ∂E/∂h3 = 2·out·W4ᵀ (vector) or W4ᵀ (scalar)
    ∂E/∂z_k = ∂E/∂h_k ⊙ silu'(z_k),   silu'(z) = σ(z)·(1 + z·(1 − σ(z)))
    ∂E/∂h_{k−1} = (∂E/∂z_k ⊙ (1 + g_k)) · W_kᵀ,   ∂E/∂y = ∂E/∂z1 · W1[y rows]ᵀ
    """
    energy, out, z1, z2, z3 = _layers(y, x)
    w4_t = x.w4.transpose(1, 2)
    d_h3 = torch.bmm(2 * out, w4_t) if x.vector_head else w4_t.expand(-1, y.shape[1], -1)  # (S, B, h)
    d_z3 = d_h3 * _silu_grad(z3)
    d_z2 = torch.bmm(d_z3 * x.scale3, x.w3.transpose(1, 2)) * _silu_grad(z2)
    d_z1 = torch.bmm(d_z2 * x.scale2, x.w2.transpose(1, 2)) * _silu_grad(z1)
    return energy, torch.bmm(d_z1, x.w1_y.transpose(1, 2))  # (S, B, r²)


def _silu_grad(z: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(z)
    return sig * (1 + z * (1 - sig))
