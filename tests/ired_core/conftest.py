import pytest

from ired_core.configs import TrainConfig, resolve_config

# small enough for a 2-core CPU: rank 4, batch 16, narrow MLP
TINY = {
    "rank": 4,
    "batch_size": 16,
    "hidden_dim": 32,
    "time_dim": 16,
    "val_size": 64,
    "eval_batch_size": 64,
    "eval_every": 10,
    "log_every": 5,
    "checkpoint_every": 10,
    "sampler_steps": 3,
    "replay_size": 40,
    "train_steps": 20,
}


@pytest.fixture
def tiny_config():
    def make(preset: str = "q204", **overrides) -> TrainConfig:
        return resolve_config(preset, {**TINY, **overrides})

    return make
