"""Replay buffer of persistent chains (PCD, Tieleman 2008), one per seed, on the device.

An entry is (A, Y, y_t, t): the chain state y_t at timestep t *and the input it was sampled for*
with that input's own target, so a replayed chain is continued and scored against its own A and Y.
Entries live in FIFO rings, one per timestep bucket (or one global bucket), stored as flat tensors
of shape (S, buckets · capacity + 1, …); the last slot is a sink for writes that overflow a bucket.
No Python loop over samples: reads and writes are gathers and scatters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ired_core.rng import SeedStreams


@dataclass
class ReplayDraw:
    """Which slots of an energy batch come from the buffer, and what they hold."""

    replayed: torch.Tensor  # (S, B) bool
    a: torch.Tensor  # (S, B, D)
    y0: torch.Tensor  # (S, B, D) target
    chain: torch.Tensor  # (S, B, D) chain state at t
    t: torch.Tensor  # (S, B)


class ReplayBuffer:
    def __init__(
        self, num_seeds: int, size: int, dim: int, timesteps: int, per_timestep: bool, device: torch.device
    ) -> None:
        self.buckets = timesteps if per_timestep else 1
        self.capacity = max(1, size // self.buckets)
        slots = self.buckets * self.capacity + 1  # + 1 overflow sink
        self.a = torch.zeros(num_seeds, slots, dim, device=device)
        self.y0 = torch.zeros(num_seeds, slots, dim, device=device)
        self.chain = torch.zeros(num_seeds, slots, dim, device=device)
        self.t = torch.zeros(num_seeds, slots, dtype=torch.long, device=device)
        self.filled = torch.zeros(num_seeds, self.buckets, dtype=torch.long, device=device)  # entries per bucket
        self.head = torch.zeros(num_seeds, self.buckets, dtype=torch.long, device=device)  # next write position

    def bucket_of(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.buckets > 1 else torch.zeros_like(t)

    def draw(self, t: torch.Tensor, p_replay: float, streams: SeedStreams) -> ReplayDraw:
        """For each slot of the batch, with probability p_replay an entry of t's bucket (if any)."""
        bucket = self.bucket_of(t)  # (S, B)
        filled = self.filled.gather(1, bucket)  # (S, B)
        coin, pick = streams.rand(t.shape[1]), streams.rand(t.shape[1])
        replayed = (coin < p_replay) & (filled > 0)
        offset = torch.minimum((pick * filled).long(), (filled - 1).clamp(min=0))  # uniform in [0, filled)
        index = bucket * self.capacity + offset  # (S, B)
        return ReplayDraw(
            replayed=replayed,
            a=self._gather(self.a, index),
            y0=self._gather(self.y0, index),
            chain=self._gather(self.chain, index),
            t=self.t.gather(1, index),
        )

    @staticmethod
    def _gather(store: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return store.gather(1, index.unsqueeze(-1).expand(-1, -1, store.shape[-1]))

    def write(self, a: torch.Tensor, y0: torch.Tensor, chain: torch.Tensor, t: torch.Tensor) -> None:
        """Push a batch of chains (S, B, …) into their buckets' rings, oldest entries overwritten."""
        bucket = self.bucket_of(t)  # (S, B)
        one_hot = torch.nn.functional.one_hot(bucket, self.buckets)  # (S, B, buckets)
        # 1. rank of each entry among the batch's entries of its bucket: 0, 1, 2, …
        rank = ((one_hot.cumsum(dim=1) - 1) * one_hot).sum(-1)  # (S, B)
        count = one_hot.sum(dim=1)  # (S, buckets)
        # 2. only the last `capacity` entries of a bucket fit; earlier ones go to the sink slot
        fits = rank >= (count.gather(1, bucket) - self.capacity)
        position = (self.head.gather(1, bucket) + rank) % self.capacity
        sink = self.buckets * self.capacity
        index = torch.where(fits, bucket * self.capacity + position, torch.full_like(position, sink))
        # 3. scatter, then advance heads and fill counts
        expanded = index.unsqueeze(-1).expand(-1, -1, a.shape[-1])
        self.a.scatter_(1, expanded, a.detach())
        self.y0.scatter_(1, expanded, y0.detach())
        self.chain.scatter_(1, expanded, chain.detach())
        self.t.scatter_(1, index, t)
        self.head = (self.head + count) % self.capacity
        self.filled = torch.clamp(self.filled + count, max=self.capacity)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("a", "y0", "chain", "t", "filled", "head")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            current = getattr(self, key)
            if current.shape != value.shape:
                raise ValueError(
                    f"replay buffer {key}: checkpoint shape {tuple(value.shape)} != {tuple(current.shape)}"
                )
            setattr(self, key, value.to(current.device))
