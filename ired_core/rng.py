"""One independent random stream per seed.

Every random draw of training goes through `SeedStreams`, which draws each seed's slice from that
seed's own generator. So seed s sees the same numbers whether it trains alone or inside an
ensemble of S seeds — the property the ensemble-equivalence tests check.
"""

from __future__ import annotations

import torch


class SeedStreams:
    def __init__(self, seeds: list[int], device: torch.device, salt: int = 0) -> None:
        self.device = device
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed * 1_000_003 + salt)
            self.generators.append(generator)

    def randn(self, *shape: int) -> torch.Tensor:
        """N(0, 1) of shape (S, *shape)."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def rand(self, *shape: int) -> torch.Tensor:
        """U[0, 1) of shape (S, *shape)."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Uniform integers in [0, high) of shape (S, *shape)."""
        return torch.stack([torch.randint(high, shape, generator=g, device=self.device) for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"checkpoint has {len(states)} random streams, this run has {len(self.generators)}")
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state.cpu())
