"""Experiment files, overrides and validation: no Ray, no envs."""

import re
from pathlib import Path

import pytest

from procgen_rl import registry
from procgen_rl.config import (
    GIB,
    Experiment,
    Range,
    apply_overrides,
    check_memory,
    estimate_memory,
    experiment_from_dict,
    load_experiment,
    parse_set_args,
    save_experiment,
    sections,
    settings,
)
from procgen_rl.errors import ConfigError

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
    overrides = parse_set_args(
        [
            "env_config.env_name=starpilot",
            "stop.timesteps_total=1e6",
            "env_config.paint_vel_info=true",
            "algorithm.learning_rate=3e-4",
            "model.custom_model_config.depths=[16,32]",
        ]
    )
    e = load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)
    assert e.env_config.env_name == "starpilot"
    assert e.stop.timesteps_total == 1_000_000 and isinstance(e.stop.timesteps_total, int)
    assert e.env_config.paint_vel_info is True
    assert e.algorithm.learning_rate == 3e-4
    assert e.model.custom_model_config["depths"] == [16, 32]


def test_string_values_as_sagemaker_sends_them():
    raw = apply_overrides(
        {},
        {
            "algorithm.num_envs": "32",
            "algorithm.normalize_reward": "false",
            "algorithm.gamma": "0.99",
            "stop.timesteps_total": "8e6",
        },
        "hyperparameters",
    )
    e = experiment_from_dict(raw, "hyperparameters")
    assert (e.algorithm.num_envs, e.algorithm.normalize_reward, e.algorithm.gamma) == (32, False, 0.99)
    assert e.stop.timesteps_total == 8_000_000


def test_resolved_config_round_trips(tmp_path):
    e = load_experiment(REPO / "experiments/ppo-8m.yaml", {"env_config.env_name": "maze"})
    save_experiment(e, tmp_path / "config.yaml")
    assert load_experiment(tmp_path / "config.yaml") == e


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"env_config.env_name": "pong"}, "env_config.env_name: unknown game 'pong'; allowed: bigfish"),
        ({"env_config.num_level": 5}, "unknown key 'env_config.num_level'; allowed: env_name, num_levels"),
        ({"env_config.num_levels": "many"}, "env_config.num_levels: expected an integer, got 'many'"),
        ({"env_config.num_levels": 2.5}, "env_config.num_levels: expected an integer, got 2.5"),
        ({"env_config.center_agent": "maybe"}, "env_config.center_agent: expected true or false"),
        ({"env_config.distribution_mode": "medium"}, "unknown distribution mode 'medium'; allowed: easy, hard"),
        ({"env_config.env_name": "bigfish", "env_config.distribution_mode": "memory"}, "bigfish has no memory mode"),
        ({"algorithm.num_minibatches": 7}, "7 does not divide the batch of 16384 steps"),
        ({"algorithm.gamma": 1.5}, "algorithm.gamma: must be in (0, 1]"),
        ({"resources.num_env_runners": 3}, "3 runners cannot split algorithm.num_envs=64 evenly"),
        ({"stop.timesteps_total": 0}, "set at least one of timesteps_total"),
        ({"bogus.key": 1}, "unknown key 'bogus'"),
        ({"algorithm.num_envs.x": 1}, "'algorithm.num_envs' takes no sub-keys"),
        ({"evaluation.num_envs": 5}, "--set evaluation.num_envs: 5 envs cannot share evaluation.episodes=32 episodes"),
        ({"evaluation.num_env_runners": 3}, "3 runners cannot split evaluation.num_envs=32 evenly"),
        ({"evaluation.interval": -1}, "evaluation.interval: must be >= 0, got -1"),
        (
            {"algorithm.rllib.env_runners": {"sample_timeout_s": 60}},
            "--set algorithm.rllib.env_runners: algorithm.rllib.env_runners.sample_timeout_s: not settable: "
            "a PPO iteration waits for every env runner's fragment",
        ),
    ],
)
def test_bad_values_name_key_and_allowed(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("algorithm.num_envs", 10**9, "must be in [1, 65536], got 1000000000"),
        ("algorithm.num_steps", 10**9, "must be in [1, 65536], got 1000000000"),
        ("algorithm.num_steps", 0, "must be in [1, 65536], got 0"),
        ("algorithm.update_epochs", 1000, "must be in [1, 100], got 1000"),
        ("algorithm.ent_coef", -0.01, "must be >= 0, got -0.01"),
        ("algorithm.vf_coef", -0.5, "must be >= 0, got -0.5"),
        ("algorithm.clip_coef", -0.2, "must be in (0, 1], got -0.2"),
        ("algorithm.max_grad_norm", -0.5, "must be > 0, got -0.5"),
        ("algorithm.max_grad_norm", 0, "must be > 0, got 0.0"),
        ("algorithm.learning_rate", 0, "must be in (0, 1], got 0.0"),
        ("algorithm.gae_lambda", 1.5, "must be in [0, 1], got 1.5"),
        ("env_config.start_level", 2**31, "must be in [0, 2147483647], got 2147483648"),
        ("env_config.start_level", -1, "must be in [0, 2147483647], got -1"),
        ("env_config.num_levels", -5, "must be in [0, 2147483647], got -5"),
        ("env_config.frame_stack", 17, "must be in [1, 16], got 17"),
        ("env_config.frame_stack", 0, "must be in [1, 16], got 0"),
        ("checkpoint.keep", -1, "must be >= 0, got -1"),
        ("checkpoint.frequency", -1, "must be >= 0, got -1"),
        ("stop.time_total_s", -1, "must be >= 0, got -1.0"),
        ("resources.num_cpus_per_env_runner", -1, "must be in [0, 1024], got -1"),
        ("resources.num_learners", -1, "must be in [0, 1024], got -1"),
        ("resources.learner_device", "gpu", "unknown device 'gpu'; allowed: auto, cpu, cuda"),
        ("seed", -1, "must be in [0, 2147483647], got -1"),
        ("name", "../x", "'../x' is not a safe run name; allowed: 1-100 letters, digits, '.', '_' or '-'"),
        ("name", ".hidden", "'.hidden' is not a safe run name"),
        ("name", "a/b", "'a/b' is not a safe run name"),
        ("name", "two words", "'two words' is not a safe run name"),
        ("name", "x" * 101, "is not a safe run name"),
    ],
)
def test_out_of_range_values_name_source_key_value_and_range(key, value, message):
    with pytest.raises(ConfigError) as caught:
        load_experiment(REPO / "experiments/ppo-8m.yaml", {key: value})
    assert str(caught.value).startswith(f"--set {key}: ") and message in str(caught.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"env_config.start_level": 2**31 - 100},
            (
                "--set env_config.start_level: start_level + num_levels = "
                "2147483548 + 200 must be at most 2147483647 (Procgen level seeds "
                "are 31-bit)"
            ),
        ),
        (
            {"seed": 2**30, "resources.num_env_runners": 2},
            (
                "--set seed: 1073741824 gives env seeds beyond 2147483647 with 32 envs per runner and 2 "
                "runners; at most 67108861 here"
            ),
        ),
    ],
)
def test_rules_across_settings(overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)


def test_largest_allowed_seeds_and_levels_are_valid():
    largest = {"seed": 67108861, "env_config.start_level": 2**31 - 201, "resources.num_env_runners": 2}
    e = load_experiment(REPO / "experiments/ppo-8m.yaml", largest)
    assert (e.seed, e.env_config.start_level) == (67108861, 2**31 - 201)
    assert load_experiment(REPO / "experiments/ppo-8m.yaml", {"name": "coinrun_v2.1-a"}).name == "coinrun_v2.1-a"


def test_out_of_range_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("checkpoint:\n  keep: -1\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: checkpoint.keep: must be >= 0, got -1$"):
        load_experiment(bad)


def test_out_of_range_hyperparameter_names_it():
    with pytest.raises(ConfigError, match=r"^hyperparameter algorithm.ent_coef: must be >= 0, got -1.0$"):
        load_experiment(REPO / "experiments/ppo-8m.yaml", {"algorithm.ent_coef": "-1"}, "hyperparameter")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty (no settings, only comments or blank lines)"),
        (b"# only a comment\n\n", "empty (no settings, only comments or blank lines)"),
        (bytes(range(256)), "not a text file (not UTF-8)"),
        (b"\x00\x01binary", "malformed YAML: unacceptable character #x0000"),
        (b"- a\n- b\n", "expected a mapping of sections, got list"),
        (b"just words\n", "expected a mapping of sections, got str"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, content, message):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_experiment(bad)
    text = str(caught.value)
    assert text.startswith(f"{bad}:") and message in text and "\n" not in text


def test_an_unsafe_file_name_as_run_name_says_where_it_came_from(tmp_path):
    bad = tmp_path / "my run.yaml"
    bad.write_text("algorithm:\n  num_envs: 8\n")
    with pytest.raises(
        ConfigError,
        match=r"my run.yaml: name \(taken from the file name; set name: in the file "
        r"or --set name\): 'my run' is not a safe run name",
    ):
        load_experiment(bad)
    bad.write_text("name: my-run\n")
    assert load_experiment(bad).name == "my-run"


def test_every_setting_has_a_doc_and_every_number_a_range():
    for prefix, cls in sections():
        for s in settings(cls):
            assert s.doc, f"{prefix}.{s.name} has no doc"
            if s.type in (int, float):
                assert isinstance(s.allowed, Range), f"{prefix}.{s.name} has no range"


def test_memory_estimate_counts_frames_and_batches():
    e = load_experiment(REPO / "experiments/ppo-8m.yaml")
    frame = 64 * 64 * 3
    envs, episodes, batch, minibatch = 64 * frame, 64 * 257 * frame, 16384 * frame, 2048 * frame * 4
    assert estimate_memory(e) == envs + episodes + batch + minibatch
    stacked = load_experiment(REPO / "experiments/ppo-8m.yaml", {"env_config.frame_stack": 4})
    assert estimate_memory(stacked) == 4 * estimate_memory(e)


def test_check_memory_refuses_what_cannot_fit_in_one_line():
    check_memory(load_experiment(REPO / "experiments/ppo-8m.yaml"), 1 * GIB)
    huge = load_experiment(REPO / "experiments/ppo-8m.yaml", {"algorithm.num_envs": 65536})
    with pytest.raises(ConfigError) as caught:
        check_memory(huge, 16 * GIB)
    text = str(caught.value)
    assert "algorithm.num_envs=65536 x algorithm.num_steps=256" in text and "more than the 16.0 GiB here" in text
    assert "\n" not in text


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
