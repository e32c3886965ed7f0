"""PPG (procgen_rl.ppg): its loss, its learner's auxiliary phase, its network, its settings and
model checks through the real CLI, and, on real Ray and Procgen, a full phase and a resume
mid-phase. The lean PPG through a phase too. Augmentation's random crop, for any algorithm."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, built_learner, run_cli
from procgen_rl.config import GIB, check_memory, estimate_memory, load_experiment, parse_set_args
from procgen_rl.errors import ConfigError
from procgen_rl.models.impala_cnn import random_crop
from procgen_rl.models.ppg_impala_cnn import PhasicImpalaCNNNet
from procgen_rl.ppg import auxiliary_loss

PPG = "experiments/ppg-8m.yaml"
# A whole phase in a few hundred steps: 2 policy iterations of 8 envs x 32 steps, 2 auxiliary
# epochs, a small network.
TINY = [
    "algorithm.num_envs=8",
    "algorithm.num_steps=32",
    "algorithm.num_minibatches=2",
    "algorithm.ppg.n_iteration=2",
    "algorithm.ppg.e_aux=2",
    "model.custom_model_config={depths: [4, 8, 8], hidden: 32}",
]


def tiny(*extra: str):
    return load_experiment(REPO / PPG, parse_set_args([*TINY, *extra]))


def test_ppg_8m_holds_the_papers_procgen_settings():
    e = load_experiment(REPO / PPG)
    a, ppg = e.algorithm, e.algorithm.ppg
    assert (a.name, e.model.custom_model) == ("PPG", "ppg_impala_cnn")
    assert (ppg.n_iteration, ppg.e_policy, ppg.e_value, ppg.e_aux, ppg.beta_clone) == (32, 1, 1, 6, 1.0)
    assert ppg.num_aux_rollouts == 4  # CleanRL's auxiliary minibatch: 4 rollouts of 256 steps
    assert (a.num_envs, a.num_steps, a.learning_rate, a.gamma, a.gae_lambda) == (64, 256, 5e-4, 0.999, 0.95)


def test_memory_estimate_adds_a_phase_of_uint8_frames():
    ppg, ppo = load_experiment(REPO / PPG), load_experiment(REPO / "experiments/ppo-8m.yaml")
    frames = 32 * 64 * 256 * (64 * 64 * 3 + 4 * 16)  # uint8 frames, a float32 target and 15 logits each
    assert estimate_memory(ppg) - estimate_memory(ppo) == frames
    assert frames / GIB == pytest.approx(6.03, abs=0.01)
    no_aux = load_experiment(REPO / PPG, {"algorithm.ppg.e_aux": 0})
    assert estimate_memory(no_aux) == estimate_memory(ppo)
    with pytest.raises(ConfigError, match=r"256 frames \(x algorithm.ppg.n_iteration=32 kept\) .* 6.5 GiB"):
        check_memory(ppg, 4 * GIB)


def test_auxiliary_loss_is_the_joint_loss_plus_the_value_loss():
    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([1.0, 0.0])
    losses = auxiliary_loss(logits, old, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]), target, beta_clone=2.0)
    p = torch.softmax(logits[1], 0)
    kl = 0.5 * (0.5 * np.log(0.5 / p[0].item()) + 0.5 * np.log(0.5 / p[1].item()))  # row 0: the same policy
    assert losses["aux_kl"].item() == pytest.approx(kl)
    assert losses["aux_value_loss"].item() == pytest.approx(0.5 * (1 + 0) / 2)
    assert losses["aux_vf_loss"].item() == pytest.approx(0.5 * (0 + 4) / 2)
    assert losses["loss"].item() == pytest.approx(0.25 + 2.0 * kl + 1.0)


def test_policy_and_value_networks_share_nothing():
    torch.manual_seed(0)
    net = PhasicImpalaCNNNet((3, 64, 64), 15, depths=[4, 8], hidden=16, precision="fp32")
    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    logits, aux_value, value = net.auxiliary(frames)
    (logits.logsumexp(-1).mean() + aux_value.mean()).backward()  # the policy network's outputs
    value_network = [*net.value_encoder.parameters(), *net.vf.parameters()]
    assert all(p.grad is None for p in value_network)
    net.zero_grad(set_to_none=True)
    value.mean().backward()
    assert all(p.grad is None for p in [*net.encoder.parameters(), *net.pi.parameters(), *net.aux_vf.parameters()])
    torch.testing.assert_close(net(frames)[1], value)  # sampling's value is the value network's


def test_auxiliary_loss_decreases_over_the_auxiliary_epochs_on_a_fixed_batch():
    torch.manual_seed(0)
    np.random.seed(0)
    learner = built_learner(tiny("algorithm.ppg.e_aux=6"))
    # A phase's worth of frames (2 iterations of 8 x 32), each one flat color whose brightness is its value target.
    for _ in range(2):
        level = torch.randint(0, 256, (8 * 32,))
        learner._keep(level[:, None, None, None].expand(-1, 3, 64, 64).to(torch.uint8), level / 255.0)
    epochs: list[list[float]] = [[] for _ in range(6)]
    minibatches = list(learner._auxiliary_phase("default_policy"))  # the buffer is read before the first update
    per_epoch = len(minibatches) // 6
    for number, minibatch in enumerate(minibatches):
        _, loss, _ = learner._update(minibatch.policy_batches)
        epochs[number // per_epoch].append(loss["default_policy"].item())
    means = [np.mean(epoch) for epoch in epochs]
    assert per_epoch == 4  # 2 x 8 rollouts of 32 steps, 4 rollouts per minibatch
    assert means[-1] < 0.5 * means[0], means
    assert learner._rows == learner._kept == 0 and learner._phases == 1  # the phase is over


def test_random_crop_shifts_each_frame_and_repeats_its_edges():
    torch.manual_seed(0)
    frames = torch.arange(8 * 8, dtype=torch.uint8).reshape(1, 1, 8, 8).repeat(16, 3, 1, 1)
    cropped = random_crop(frames, pad=2)
    assert cropped.shape == frames.shape and cropped.dtype == torch.uint8
    shifts = set()
    for frame in cropped:
        dy, dx = int(frame[0, 4, 4]) // 8 - 4, int(frame[0, 4, 4]) % 8 - 4  # the center pixel's origin
        rows = (torch.arange(8) + dy).clamp(0, 7)
        cols = (torch.arange(8) + dx).clamp(0, 7)
        assert torch.equal(frame, frames[0][:, rows][:, :, cols]), (dy, dx)
        assert abs(dy) <= 2 and abs(dx) <= 2
        shifts.add((dy, dx))
    assert len(shifts) > 4  # frames are shifted independently


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "algorithm.ppg.n_iteration=0"], ["--set algorithm.ppg.n_iteration: must be >= 1, got 0"]),
        (["--set", "algorithm.ppg.e_aux=-1"], ["--set algorithm.ppg.e_aux: must be in [0, 100], got -1"]),
        (
            ["--set", "algorithm.ppg.num_aux_rollouts=4096"],
            ["algorithm.ppg.num_aux_rollouts: 4096 is more than the phase's n_iteration x num_envs = 32 x 64"],
        ),
        (
            ["--set", "resources.num_learners=2"],
            ["--set resources.num_learners: PPG trains on one learner (0: in the driver, 1: a remote one), got 2"],
        ),
        (
            ["--set", "model.custom_model=impala_cnn"],
            ["model.custom_model: ImpalaCNN has no auxiliary value head", "use ppg_impala_cnn"],
        ),
        (
            ["--set", "model.custom_model_config.augment={flip: 1}"],
            ["model.custom_model_config: PhasicImpalaCNN fails to build", "augment {'flip': 1} is not {crop: N}"],
        ),
    ],
)
def test_bad_ppg_settings_are_one_line_before_ray(args, fragments):
    assert_one_line_error(run_cli("train", PPG, *args, timeout=120), *fragments)


# --- real Ray and Procgen ------------------------------------------------------------------------


def metric_lines(stdout: str) -> list[dict[str, float]]:
    from procgen_rl.reporting import parse_metric_line

    return [parse_metric_line(line) for line in re.findall(r"^\[metrics\] .*$", stdout, re.MULTILINE)]


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    """Three iterations: a whole phase (2 policy iterations, the 2nd with the auxiliary phase),
    then 1 iteration into the next; a checkpoint after each, one remote env runner, an evaluation
    with the 2nd."""
    run_dir = tmp_path_factory.mktemp("runs") / "ppg"
    overrides = [
        *TINY,
        "resources.num_env_runners=1",
        "stop.training_iteration=3",
        "checkpoint.frequency=1",
        "evaluation={interval: 2, episodes: 2, num_envs: 2}",
    ]
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = run_cli("train", PPG, "--run-dir", str(run_dir), *sets, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


@pytest.mark.slow
def test_a_phase_ends_with_its_auxiliary_phase(phase_run):
    run_dir, result = phase_run
    lines = metric_lines(result.stdout)
    assert [m["iteration"] for m in lines] == [1, 2, 3]
    assert ["aux_kl" in m for m in lines] == [False, True, False]  # only the phase's last iteration
    assert all(np.isfinite(lines[1][key]) for key in ("aux_value_loss", "aux_kl", "aux_vf_loss"))
    assert lines[1]["aux_kl"] >= 0
    assert ["eval_test_reward_mean" in m for m in lines] == [False, True, False]  # PPG's networks evaluate
    state = json.loads((run_dir / "checkpoints/checkpoint_000003/trainer_state.json").read_text())
    assert state["iteration"] == 3


@pytest.mark.slow
def test_a_resume_mid_phase_continues_the_phase_and_says_so(phase_run):
    run_dir, _ = phase_run
    result = run_cli("train", "--resume", str(run_dir), "--set", "stop.training_iteration=5", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in result.stdout.splitlines() if line.startswith("PPG:")]
    assert said == [
        "PPG: resuming 1 of 2 policy iterations into phase 2; checkpoints do not keep a phase's frames, so its "
        "auxiliary phase, after 1 more policy iteration, covers only that one"
    ]
    lines = metric_lines(result.stdout)
    assert [m["iteration"] for m in lines] == [4, 5]
    assert ["aux_kl" in m for m in lines] == [True, False]  # phase 2 ends at iteration 4, as without the resume


@pytest.mark.slow
def test_a_ppg_run_evaluates(phase_run):
    run_dir, _ = phase_run
    result = run_cli("rollout", str(run_dir), "--episodes", "1", "--no-video", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^test  \(unseen levels\): mean return", result.stdout, re.M)


@pytest.mark.slow
def test_lean_ppg_runs_a_phase():
    from lean_ppg import Args, train

    experiment = tiny()
    records = list(train(experiment, Args.from_experiment(experiment, total_timesteps=3 * 256)))
    assert [r["step"] for r in records] == [256, 512, 768]
    assert ["aux_kl" in r for r in records] == [False, True, False]
    assert all(np.isfinite(records[1][key]) for key in ("aux_value_loss", "aux_kl", "aux_vf_loss"))
