"""`ired-dcd train` / `ired-dcd configs` as a researcher runs them (real subprocesses)."""

import json
import subprocess
import sys

TINY_SETS = [
    "rank=4",
    "batch_size=16",
    "hidden_dim=32",
    "time_dim=16",
    "val_size=64",
    "eval_every=4",
    "log_every=2",
    "checkpoint_every=4",
    "sampler_steps=2",
    "replay_size=40",
]


def ired_dcd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ired_dcd", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _train(out, steps: int, *extra: str) -> subprocess.CompletedProcess:
    sets = [arg for item in TINY_SETS for arg in ("--set", item)]
    return ired_dcd(
        "train",
        "--config",
        "Q-204",
        "--seeds",
        "0,1",
        "--steps",
        str(steps),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--tag",
        "smoke",
        *sets,
        *extra,
    )


def test_train_writes_config_metrics_result_and_checkpoint(tmp_path):
    done = _train(tmp_path, 8)
    assert done.returncode == 0, done.stderr
    job = tmp_path / "q204_dcd_full"
    assert (job / "checkpoint_seeds_0_1.pt").exists()
    for seed in (0, 1):
        config = json.loads((job / f"seed_{seed}" / "config.json").read_text())
        assert config["seed"] == seed and config["config"]["residual_filter"] is True
        assert {"config_hash", "code_version", "torch_version", "device", "precision"} <= set(config)
        steps = [json.loads(line)["step"] for line in (job / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert steps == [2, 4, 6, 8]
        result = json.loads((job / f"seed_{seed}" / "result.json").read_text())
        assert result["status"] == "succeeded" and result["tags"] == ["smoke"]
        assert set(result["metrics"]) == {
            "val_mse",
            "val_mse_x0",
            "val_mse_ood",
            "val_mse_se",
            "val_mse_x0_se",
            "val_mse_ood_se",
        }


def test_train_again_with_more_steps_resumes_without_duplicate_metric_lines(tmp_path):
    """The second part also runs on another engine: the checkpoint does not depend on the engine."""
    assert _train(tmp_path, 4).returncode == 0
    done = _train(tmp_path, 8, "--engine", "compiled")
    assert done.returncode == 0 and "resuming" in done.stderr and "from step 4" in done.stderr
    lines = (tmp_path / "q204_dcd_full" / "seed_0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8]


def test_train_takes_a_config_file_as_it_is(tmp_path):
    # a run's own config.json records the resolved config: train it again from a file, elsewhere
    assert _train(tmp_path / "first", 4).returncode == 0
    recorded = json.loads((tmp_path / "first" / "q204_dcd_full" / "seed_0" / "config.json").read_text())["config"]
    config_file = tmp_path / "again.json"
    config_file.write_text(json.dumps(recorded))
    done = ired_dcd("train", "--config", str(config_file), "--seeds", "0", "--out", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    again = json.loads((tmp_path / "again" / "q204_dcd_full" / "seed_0" / "config.json").read_text())["config"]
    assert again == recorded
    missing = ired_dcd("train", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "config file" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "x").exists()


def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path):
    for args, message in [
        (["--config", "q999"], "unknown preset"),
        (["--config", "q204", "--set", "batch_size=lots"], "batch_size"),
        (["--config", "q204", "--seeds", "3-1"], "seeds"),
        (["--config", "q204", "--device", "tpu"], "--device"),
        (["--config", "q204", "--engine", "fast"], "--engine"),
    ]:
        done = ired_dcd("train", *args, "--out", str(tmp_path))
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_configs_lists_every_preset_with_its_differences():
    done = ired_dcd("configs", "--json")
    presets = json.loads(done.stdout)
    assert presets["q204_dcd_full"]["residual_filter"] is True
    assert presets["q202s_cd_stable"]["cd_margin"] == 10.0
    assert len(presets) == 9


def test_sigterm_checkpoints_and_a_rerun_resumes(tmp_path):
    """SLURM sends SIGTERM before a time limit or preemption: stop, checkpoint, no result.json."""
    import signal
    import time

    sets = [arg for item in [*TINY_SETS, "checkpoint_every=100000"] for arg in ("--set", item)]
    cmd = [
        sys.executable,
        "-m",
        "ired_dcd",
        "train",
        "--config",
        "q202",
        "--seeds",
        "0",
        "--steps",
        "100000",
        "--out",
        str(tmp_path),
        *sets,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "q202_dcd_cdloss" / "seed_0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "checkpoint saved" in stderr
    assert (tmp_path / "q202_dcd_cdloss" / "checkpoint_seeds_0.pt").exists()
    assert not (tmp_path / "q202_dcd_cdloss" / "seed_0" / "result.json").exists()
