"""Experiment files, overrides and validation: no Ray, no envs."""

from pathlib import Path

import pytest

from procgen_rl.config import (
    Experiment, apply_overrides, experiment_from_dict, load_experiment, parse_set_args, save_experiment,
)
from procgen_rl.errors import ConfigError
from procgen_rl import registry

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_load(path):
    experiment = load_experiment(path)
    assert experiment.name == path.stem
    registry.resolve("algorithms", experiment.algorithm.name, "algorithm.name")


def test_ppo_8m_is_the_paper_budget():
    e = load_experiment(REPO / "experiments/ppo-8m.yaml")
    a = e.algorithm
    assert (a.learning_rate, a.gamma, a.gae_lambda, a.clip_coef, a.ent_coef) == (5e-4, 0.999, 0.95, 0.2, 0.01)
    assert (a.update_epochs, a.num_minibatches, a.num_envs, a.num_steps) == (3, 8, 64, 256)
    assert (a.train_batch_size, a.minibatch_size) == (16384, 2048)
    assert (e.env_config.num_levels, e.env_config.distribution_mode) == (200, "easy")
    assert e.stop.timesteps_total == 8_000_000


def test_set_overrides_are_typed():
    overrides = parse_set_args(["env_config.env_name=starpilot", "stop.timesteps_total=1e6",
                                "env_config.paint_vel_info=true", "algorithm.learning_rate=3e-4",
                                "model.custom_model_config.depths=[16,32]"])
    e = load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)
    assert e.env_config.env_name == "starpilot"
    assert e.stop.timesteps_total == 1_000_000 and isinstance(e.stop.timesteps_total, int)
    assert e.env_config.paint_vel_info is True
    assert e.algorithm.learning_rate == 3e-4
    assert e.model.custom_model_config["depths"] == [16, 32]


def test_string_values_as_sagemaker_sends_them():
    raw = apply_overrides({}, {"algorithm.num_envs": "32", "algorithm.normalize_reward": "false",
                               "algorithm.gamma": "0.99", "stop.timesteps_total": "8e6"}, "hyperparameters")
    e = experiment_from_dict(raw, "hyperparameters")
    assert (e.algorithm.num_envs, e.algorithm.normalize_reward, e.algorithm.gamma) == (32, False, 0.99)
    assert e.stop.timesteps_total == 8_000_000


def test_resolved_config_round_trips(tmp_path):
    e = load_experiment(REPO / "experiments/ppo-8m.yaml", {"env_config.env_name": "maze"})
    save_experiment(e, tmp_path / "config.yaml")
    assert load_experiment(tmp_path / "config.yaml") == e


@pytest.mark.parametrize("overrides, message", [
    ({"env_config.env_name": "pong"}, "env_config.env_name: unknown game 'pong'; allowed: bigfish"),
    ({"env_config.num_level": 5}, "unknown key 'env_config.num_level'; allowed: env_name, num_levels"),
    ({"env_config.num_levels": "many"}, "env_config.num_levels: expected an integer, got 'many'"),
    ({"env_config.num_levels": 2.5}, "env_config.num_levels: expected an integer, got 2.5"),
    ({"env_config.center_agent": "maybe"}, "env_config.center_agent: expected true or false"),
    ({"env_config.distribution_mode": "medium"}, "'medium' is not one of easy, hard"),
    ({"env_config.env_name": "bigfish", "env_config.distribution_mode": "memory"}, "bigfish has no memory mode"),
    ({"algorithm.num_minibatches": 7}, "7 does not divide the batch of 16384 steps"),
    ({"algorithm.gamma": 1.5}, "algorithm.gamma: must be in (0, 1]"),
    ({"resources.num_env_runners": 3}, "3 runners cannot split algorithm.num_envs=64 evenly"),
    ({"stop.timesteps_total": 0}, "set at least one of timesteps_total"),
    ({"bogus.key": 1}, "unknown key 'bogus'"),
    ({"algorithm.num_envs.x": 1}, "'algorithm.num_envs' takes no sub-keys"),
])
def test_bad_values_name_key_and_allowed(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)
    assert message in str(caught.value)


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set_args(["env_config.env_name"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("env_config:\n  env_name: coinrun\n   num_levels: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_experiment(bad)


def test_missing_experiment_lists_available():
    with pytest.raises(ConfigError, match="experiment file not found: nope.yaml"):
        load_experiment("nope.yaml")


def test_registry_unknown_names_list_available():
    with pytest.raises(ConfigError, match="model.custom_model: unknown model 'resnet'; available: impala_cnn"):
        registry.resolve("models", "resnet", "model.custom_model")
    with pytest.raises(ConfigError, match="unknown algorithm 'DQNX'; available: PPO, APPO, IMPALA"):
        registry.resolve("algorithms", "DQNX", "algorithm.name")
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        registry.resolve("callbacks", "no_such_pkg.mod:Thing", "callbacks")


def test_registry_finds_models_by_file_and_module_path():
    by_name = registry.resolve("models", "impala_cnn", "model.custom_model")
    by_path = registry.resolve("models", "procgen_rl.models.impala_cnn:ImpalaCNN", "model.custom_model")
    assert by_name is by_path


def test_defaults_are_a_valid_experiment():
    assert experiment_from_dict({}, "defaults") == Experiment()
