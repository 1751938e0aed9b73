"""FLOPs: the analytic formula, and the measured count against it on the example transformer."""

import pytest
import torch

from examples.tiny_gpt import TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.flops import transformer_training_flops
from lightning_scaling.measure import count_params, measure_training_flops, meta_copy


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


@pytest.mark.parametrize("d_model, n_layer, seq_len", [(64, 2, 128), (128, 4, 128), (96, 3, 256)])
def test_measured_matches_analytic_within_5_percent(d_model, n_layer, seq_len):
    model = TinyGPT(d_model=d_model, n_layer=n_layer, n_head=4, seq_len=seq_len)
    x = torch.zeros(8, seq_len, dtype=torch.long)
    measured = measure_training_flops(model, x)
    N = count_params(model)["non_embedding"]
    analytic = transformer_training_flops(N, x.numel(), n_layer, seq_len, d_model)
    assert measured == pytest.approx(analytic, rel=0.05)


def test_meta_copy_leaves_the_model_alone():
    model = TinyGPT(d_model=32, n_layer=1, n_head=2, seq_len=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = meta_copy(model)
    assert all(p.device.type == "meta" for p in copy.parameters())
    measure_training_flops(model, torch.zeros(2, 16, dtype=torch.long))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.device.type == "cpu"
    assert all(p.grad is None for p in model.parameters())
