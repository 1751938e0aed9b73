"""FLOPs: the analytic formula, and the count measured on the executed training step against it."""

import pytest
import torch

from examples.tiny_gpt import TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.nn import StepFlops, count_params
from lightning_scaling.schedules import transformer_training_flops


def test_six_N_D():
    assert transformer_training_flops(1e6, 2e9) == 1.2e16


def test_attention_term():
    base = transformer_training_flops(1e6, 1e3)
    full = transformer_training_flops(1e6, 1e3, n_layer=2, n_ctx=128, d_model=64)
    half = transformer_training_flops(1e6, 1e3, n_layer=2, n_ctx=128, d_model=64, causal_discount=True)
    assert full - base == 3 * 4 * 2 * 128 * 64 * 1e3
    assert half - base == 3 * 2 * 2 * 128 * 64 * 1e3


def test_shape_arguments_together():
    with pytest.raises(ConfigurationError, match=r"`n_layer`, `n_ctx` and `d_model` must be given together"):
        transformer_training_flops(1e6, 1e3, n_layer=2)
    with pytest.raises(ConfigurationError, match=r"`n_ctx` must be an integer > 0, got 0"):
        transformer_training_flops(1e6, 1e3, n_layer=2, n_ctx=0, d_model=8)


def _measured_step(model, counter, x):
    """One training step's forward, loss and backward, measured as ScalingTracker measures it."""
    counter.start()
    model._loss((x, x)).backward()
    return counter.stop(x)


@pytest.mark.parametrize("d_model, n_layer, seq_len", [(64, 2, 128), (128, 4, 128), (96, 3, 256)])
def test_measured_matches_analytic_within_5_percent(d_model, n_layer, seq_len):
    # the attention term is 22-45% of these counts: a counter that missed the CPU's fused attention kernel fails
    model = TinyGPT(d_model=d_model, n_layer=n_layer, n_head=4, seq_len=seq_len)
    x = torch.zeros(8, seq_len, dtype=torch.long)
    measured = _measured_step(model, StepFlops(), x)
    N = count_params(model)["non_embedding"]
    analytic = transformer_training_flops(N, x.numel(), n_layer, seq_len, d_model)
    assert measured == pytest.approx(analytic, rel=0.05)


def test_measuring_a_step_leaves_its_numbers_bitwise_unchanged():
    torch.manual_seed(0)
    model = TinyGPT(d_model=32, n_layer=1, n_head=2, seq_len=16)
    x = torch.randint(0, 256, (2, 16))
    model._loss((x, x)).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    _measured_step(model, StepFlops(), x)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), plain))


def test_shapes_beyond_the_cap_are_estimated_from_the_measured_ones():
    model = TinyGPT(d_model=32, n_layer=2, n_head=2, seq_len=64)
    counter = StepFlops(max_shapes=3)
    for B, T in ((4, 16), (2, 48), (8, 32)):
        x = torch.zeros(B, T, dtype=torch.long)
        assert counter.lookup(x) is None  # new shape: measure it
        _measured_step(model, counter, x)
    x = torch.zeros(3, 64, dtype=torch.long)  # a fourth shape, never measured
    estimate = counter.lookup(x)
    truth = _measured_step(model, StepFlops(), x)
    assert estimate == pytest.approx(truth, rel=1e-3)  # linear layers ~ B T, attention ~ B T^2: exact for this model
