"""Which entry of a bucket a replayed slot gets, and how many entries a bucket keeps.

test_pitfalls covers what an entry holds and how often a slot is replayed. Mutation testing (docs/testing.md)
found these unseen: a draw that never picks a bucket's last entry or a bucket of one entry, and a bucket that
keeps two entries where one was asked for.
"""

import torch

from ired_core.replay import ReplayBuffer
from ired_core.rng import SeedStreams

CPU = torch.device("cpu")


def _buffer_holding(values: list[float]) -> ReplayBuffer:
    """One seed, one global bucket of capacity 8, holding entries tagged with `values`."""
    buffer = ReplayBuffer(1, 8, 1, 1, False, CPU)
    tags = torch.tensor(values).view(1, -1, 1)
    buffer.write(tags, tags, tags, torch.zeros(1, len(values), dtype=torch.long))
    return buffer


def test_a_bucket_holding_one_entry_is_replayed():
    draw = _buffer_holding([7.0]).draw(torch.zeros(1, 50, dtype=torch.long), 1.0, SeedStreams([0], CPU))
    assert draw.replayed.all()
    assert (draw.a == 7.0).all()


def test_draws_cover_every_entry_of_a_bucket_evenly():
    entries = [0.0, 1.0, 2.0]
    draws = 30_000
    draw = _buffer_holding(entries).draw(torch.zeros(1, draws, dtype=torch.long), 1.0, SeedStreams([0], CPU))
    counts = torch.bincount(draw.a.flatten().long(), minlength=len(entries))
    assert len(counts) == len(entries)
    # each share is 1/3 ± 0.02 (over 7 binomial standard deviations)
    assert ((counts / draws - 1 / len(entries)).abs() < 0.02).all()


def test_a_buffer_smaller_than_its_bucket_count_keeps_the_newest_entry_of_each_bucket():
    buffer = ReplayBuffer(1, 3, 1, 10, True, CPU)  # 3 entries asked for 10 per-timestep buckets: 1 each
    tags = torch.tensor([[[1.0], [2.0]]])
    buffer.write(tags, tags, tags, torch.zeros(1, 2, dtype=torch.long))
    draw = buffer.draw(torch.zeros(1, 50, dtype=torch.long), 1.0, SeedStreams([0], CPU))
    assert draw.replayed.all()
    assert (draw.a == 2.0).all()


def _drawn_tags(buffer: ReplayBuffer, t: int) -> set[float]:
    draw = buffer.draw(torch.full((1, 2000), t), 1.0, SeedStreams([0], CPU))
    return set(draw.a.flatten().tolist())


def test_batches_that_do_not_divide_the_capacity_overwrite_the_oldest_entries():
    buffer = ReplayBuffer(1, 3, 1, 1, False, CPU)
    for pair in ([1.0, 2.0], [3.0, 4.0]):
        tags = torch.tensor(pair).view(1, 2, 1)
        buffer.write(tags, tags, tags, torch.zeros(1, 2, dtype=torch.long))
    assert _drawn_tags(buffer, 0) == {2.0, 3.0, 4.0}


def test_a_batch_overflowing_its_bucket_keeps_its_newest_entries_and_leaves_other_buckets_alone():
    buffer = ReplayBuffer(1, 40, 1, 10, True, CPU)  # 10 per-timestep buckets of 4
    first = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1)
    buffer.write(first, first, first, torch.zeros(1, 4, dtype=torch.long))
    overflow = torch.arange(10.0, 16.0).view(1, 6, 1)  # 6 entries for bucket 1's 4 places
    buffer.write(overflow, overflow, overflow, torch.ones(1, 6, dtype=torch.long))
    assert _drawn_tags(buffer, 0) == {0.0, 1.0, 2.0, 3.0}
    assert _drawn_tags(buffer, 1) == {12.0, 13.0, 14.0, 15.0}
