import json

import pytest

from ired_core.configs import (
    canonical_preset,
    config_hash,
    format_seeds,
    list_presets,
    parse_overrides,
    parse_seeds,
    resolve_config,
)


@pytest.mark.parametrize("alias", ["q204", "Q-204", "q204_dcd_full", " Q204 "])
def test_aliases_resolve_to_the_preset_file(alias):
    assert canonical_preset(alias) == "q204_dcd_full"


def test_all_nine_presets_ship_and_validate():
    assert set(list_presets()) == {
        "q100_denoise_only",
        "q200_ired_reference",
        "q201_dcd_baseline",
        "q202_dcd_cdloss",
        "q203_dcd_replay",
        "q204_dcd_full",
        "q202s_cd_stable",
        "q203s_replay_stable",
        "q204s_full_stable",
    }
    for name in list_presets():
        assert resolve_config(name).name == name


def test_stabilised_arms_are_their_originals_plus_the_stabiliser_only():
    """Q-20Ns differs from Q-20N only by the CD margin and, for Q-202s and Q-203s, the energy weight
    (Q-204's warm-up already ends at 0.05): the ablation between the stabilised arms stays the plan's."""
    for original, stabilised in (("q202", "q202s"), ("q203", "q203s"), ("q204", "q204s")):
        a, b = resolve_config(original).model_dump(), resolve_config(stabilised).model_dump()
        changed = {key for key in a if a[key] != b[key]} - {"name", "description"}
        expected = {"cd_margin"} if original == "q204" else {"cd_margin", "energy_weight_max"}
        assert changed == expected, (stabilised, changed)
        assert b["cd_margin"] == 10.0 and b["energy_weight_max"] == 0.05
    assert resolve_config("Q-202s").name == "q202s_cd_stable"


def test_presets_match_the_ablation_table():
    q201, q202, q203, q204 = (resolve_config(n) for n in ("q201", "q202", "q203", "q204"))
    assert (q201.sampler, q201.energy_loss, q201.replay, q201.residual_filter) == ("gd_reject", "nce", False, False)
    assert (q202.sampler, q202.energy_loss, q202.replay) == ("langevin", "cd", False)
    assert q203.replay and not q203.residual_filter and q203.energy_weight_max == 0.5
    assert q204.replay and q204.residual_filter and q204.energy_weight_max == 0.05
    assert (q204.energy_warmup_frac, q204.energy_t_min_frac, q204.energy_t_max_frac) == (0.2, 0.2, 0.8)
    for cfg in (q201, q202, q203, q204):
        assert (cfg.rank, cfg.batch_size, cfg.train_steps, cfg.noise_scale, cfg.sampler_steps) == (
            20,
            2048,
            100_000,
            1.5,
            10,
        )


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'q999'.*q204_dcd_full"):
        resolve_config("q999")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"batch_size": "big"}, "batch_size"),
        ({"no_such_knob": 1}, "no_such_knob"),
        ({"p_replay": 1.5}, "p_replay"),
        ({"sampler": "hmc"}, "sampler"),
        ({"residual_filter_quantile": [0.3, 0.2]}, "residual_filter_quantile"),
    ],
)
def test_bad_override_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        resolve_config("q204", overrides)


def test_a_config_file_is_resolved_like_a_preset(tmp_path):
    resolved = resolve_config("q203", {"train_steps": 50})
    path = tmp_path / "job_config.json"
    path.write_text(json.dumps(resolved.model_dump()))
    assert resolve_config(str(path)) == resolved  # what a SLURM task trains: the stored config, exactly
    assert resolve_config(str(path), {"train_steps": 50}) == resolved  # its overrides again change nothing
    assert resolve_config(str(path), {"lr": 2e-4}).lr == 2e-4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"config file '.*job\.json': No such file"),
        ("{not json", r"config file '.*job\.json': not JSON"),
        ("[1, 2]", r"config file '.*job\.json': expected a JSON object"),
        ('{"name": "x", "lr": -1}', "^lr: "),
        ('{"name": "x", "no_such_knob": 1}', "^no_such_knob: "),
    ],
)
def test_a_bad_config_file_is_refused_with_its_name(tmp_path, content, message):
    path = tmp_path / "job.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        resolve_config(str(path))


def test_hash_changes_with_any_knob_but_not_the_label():
    base = resolve_config("q204")
    assert config_hash(base) != config_hash(resolve_config("q204", {"lr": 2e-4}))
    assert config_hash(base) == config_hash(base.model_copy(update={"description": "other words"}))


def test_overrides_and_seeds_parse():
    assert parse_overrides(["batch_size=64", "sampler=langevin", "replay=true"]) == {
        "batch_size": 64,
        "sampler": "langevin",
        "replay": True,
    }
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    for bad in ("", "a", "3-1", "0-100"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["batch_size"])


@pytest.mark.parametrize(
    ("seeds", "text"), [([0], "0"), ([0, 1, 2], "0-2"), ([5, 0, 1, 2, 9, 8], "0-2,5,8-9"), ([3, 5], "3,5")]
)
def test_format_seeds_round_trips(seeds: list[int], text: str) -> None:
    assert format_seeds(seeds) == text
    assert parse_seeds(text) == sorted(seeds)
