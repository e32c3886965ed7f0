"""APPO's learner as appo-8m.yaml configures it, on a real (small) run."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_appo_target_network_follows_after_every_trained_batch(monkeypatch):
    # appo-8m.yaml's target_network_update_freq of 1/8 is one batch in RLlib's units (N x K = 8 x 1
    # batches): the target, the policy the surrogate clips against, must move after every pass
    # over a train batch, replays by the circular buffer (if K > 1) included.
    import ray
    from ray.rllib.algorithms.appo import appo_learner

    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.trainer import build_algorithm_config, init_ray

    target_updates = []
    update_target_network = appo_learner.update_target_network
    monkeypatch.setattr(
        appo_learner,
        "update_target_network",
        lambda main_net, target_net, tau: (
            target_updates.append(main_net),
            update_target_network(main_net=main_net, target_net=target_net, tau=tau),
        ),
    )
    experiment = load_experiment(
        "experiments/appo-8m.yaml",
        parse_set_args(
            ["algorithm.num_envs=8", "algorithm.num_steps=32", "model.custom_model_config={depths: [4], hidden: 16}"]
        ),
    )
    init_ray(experiment)
    try:
        algo = build_algorithm_config(experiment).build_algo()
        learner = algo.learner_group._learner
        for _ in range(30):  # APPO's iterations last 10 s; the first ones may see no samples yet
            algo.train()
            if learner.frames_trained >= 2 * experiment.algorithm.train_batch_size:
                break
        algo.stop()  # returns once the learner thread has finished its last update
    finally:
        ray.shutdown()
    passes = learner.frames_trained // experiment.algorithm.train_batch_size
    pairs = len(learner.module["default_policy"].unwrapped().get_target_network_pairs())
    assert passes >= 2
    assert len(target_updates) == pairs * passes
