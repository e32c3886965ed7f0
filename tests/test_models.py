"""ImpalaCNNNet's precision option (bfloat16 inside the encoder, float32 everywhere it leaves) and
the env runners' CUDA-graph forward."""

from __future__ import annotations

import pytest
import torch

from procgen_rl.models.impala_cnn import CUDAGraphForward, ImpalaCNNNet

SHAPE, ACTIONS = (3, 64, 64), 15


def net(precision: str, seed: int = 0) -> ImpalaCNNNet:
    torch.manual_seed(seed)  # the same weights for each precision
    return ImpalaCNNNet(SHAPE, ACTIONS, depths=[8, 16], hidden=32, precision=precision)


def frames(n: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_bf16_outputs_are_float32_and_match_fp32_to_bfloat16_rounding():
    (logits32, values32), (logits16, values16) = net("fp32")(frames()), net("bf16")(frames())
    assert logits16.dtype == values16.dtype == torch.float32
    # bfloat16 keeps 8 significant bits: ~0.4% per value, a few % after 11 bfloat16 layers.
    torch.testing.assert_close(logits16, logits32, rtol=0.05, atol=2e-3)
    torch.testing.assert_close(values16, values32, rtol=0.05, atol=2e-3)


def test_bf16_gradients_reach_every_parameter_as_float32():
    model = net("bf16")
    logits, values = model(frames())
    (logits.logsumexp(-1).mean() + values.pow(2).mean()).backward()
    for name, param in model.named_parameters():
        assert param.dtype == param.grad.dtype == torch.float32, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16' is not one of fp32, bf16"):
        net("fp16")


def test_graph_forward_runs_frames_on_the_cpu_as_the_plain_forward():
    model = net("fp32")
    with torch.no_grad():
        torch.testing.assert_close(CUDAGraphForward(model)(frames()), model(frames()), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (CI has none)")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_forward_equals_eager_and_follows_weight_syncs(precision):
    model, synced = net(precision).cuda(), net(precision, seed=1).cuda()
    graphed, obs = CUDAGraphForward(model), frames().cuda()
    with torch.no_grad():
        torch.testing.assert_close(graphed(obs), model(obs), rtol=0, atol=0)  # the same kernels
        model.load_state_dict(synced.state_dict())  # how RLlib syncs an env runner's weights
        torch.testing.assert_close(graphed(obs), synced(obs), rtol=0, atol=0)
