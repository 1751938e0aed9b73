"""The MuP callback: base shapes, muP optimizer groups equal to mup's own, readout handling, attention warning,
checkpoint resume, deepcopy, DDP wrapping, composition with PowerLR and GradualPruning, and the coordinate check."""

from __future__ import annotations

import copy
import json
import warnings

import lightning.pytorch as pl
import mup
import pytest
import torch
from conftest import stop_at
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.callbacks import GradualPruning, MuP, PowerLR, ScalingTracker
from lightning_scaling.nn import attention_scale, coord_check, make_optimizer_mup, reattach

T = 32


def group_signature(optimizer: torch.optim.Optimizer) -> list[tuple]:
    """(lr, weight_decay, sorted parameter ids) per non-empty group: to compare two optimizers' muP groups."""
    return sorted(
        (round(g["lr"], 15), round(g.get("weight_decay", 0.0), 15), tuple(sorted(id(p) for p in g["params"])))
        for g in optimizer.param_groups
        if g["params"]
    )


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield


def mup_model(d_model=128, **kw):
    pl.seed_everything(0, verbose=False)
    args = dict(d_model=d_model, n_layer=2, n_head=4, seq_len=T, readout="mup", attn_scale="inverse",
                zero_readout=True, lr=1e-3, weight_decay=0.1)
    args.update(kw)
    return TinyGPT(**args)


def data():
    return ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=1_000_000, seed=0)


def trainer(callbacks, max_steps=3, **kw):
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, max_steps=max_steps, deterministic=True)
    args.update(kw)
    return pl.Trainer(callbacks=callbacks, **args)


def reference_shapes(model_cls, base_args, delta_args):
    with torch.device("meta"):
        return mup.make_base_shapes(model_cls(**base_args), model_cls(**delta_args))


# -- base shapes and the optimizer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, reference", [("adamw", mup.MuAdamW), ("sgd", mup.MuSGD)])
def test_optimizer_groups_equal_mups_own(optimizer, reference):
    class Model(TinyGPT):
        def configure_optimizers(self):
            groups = self.param_groups()
            if optimizer == "sgd":
                return torch.optim.SGD(groups, lr=self.hparams.lr, momentum=0.9)
            return torch.optim.AdamW(groups, lr=self.hparams.lr)

    pl.seed_everything(0)
    model = Model(d_model=128, n_layer=2, n_head=4, seq_len=T, readout="mup", attn_scale="inverse", lr=1e-3,
                  weight_decay=0.1)
    t = trainer([MuP(base={"d_model": 32})], max_steps=1)
    t.fit(model, data())
    ours = t.optimizers[0]
    theirs = reference(model.param_groups(), lr=1e-3, **({"momentum": 0.9} if optimizer == "sgd" else {}))
    assert group_signature(ours) == group_signature(theirs)
    # hidden matrices really are scaled: width_mult 4 under Adam
    if optimizer == "adamw":
        assert sorted({round(g["lr"] / 1e-3, 6) for g in ours.param_groups}) == [0.25, 1.0]


def test_base_shapes_match_mups_make_base_shapes():
    model = mup_model()
    cb = MuP(base={"d_model": 32}, delta={"d_model": 48})
    trainer([cb], max_steps=1).fit(model, data())
    common = dict(n_layer=2, n_head=4, seq_len=T, readout="mup", attn_scale="inverse", zero_readout=True)
    expected = reference_shapes(TinyGPT, {**common, "d_model": 32}, {**common, "d_model": 48})
    for name, p in model.named_parameters():
        assert p.infshape.base_shape() == expected[name].base_shape(), name
    assert cb.width_mult == 4.0 and cb.base_width == 32
    assert model.lm_head.width_mult() == 4.0


def test_base_shapes_file(tmp_path):
    common = dict(n_layer=2, n_head=4, seq_len=T, readout="mup", attn_scale="inverse")
    with torch.device("meta"):
        mup.make_base_shapes(TinyGPT(d_model=32, **common), TinyGPT(d_model=64, **common),
                             savefile=str(tmp_path / "model.bsh"))
    model = mup_model(d_model=64, zero_readout=False)
    cb = MuP(base_shapes=str(tmp_path / "model.bsh"))
    trainer([cb], max_steps=1).fit(model, data())
    assert cb.width_mult == 2.0


class LazyGPT(pl.LightningModule):
    """Builds its network in configure_model (as with sharded strategies), not in __init__."""

    def __init__(self, d_model: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.net = None

    def configure_model(self):
        if self.net is None:
            self.net = TinyGPT(d_model=self.hparams.d_model, n_layer=1, n_head=2, seq_len=T, readout="mup",
                               attn_scale="inverse")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self.net._loss(batch)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def test_model_built_in_configure_model():
    model = LazyGPT(d_model=64)
    cb = MuP(base={"d_model": 32})
    t = trainer([cb], max_steps=2)
    t.fit(model, data())
    assert cb.width_mult == 2.0
    assert all(hasattr(p, "infshape") for p in model.parameters())
    assert sorted({round(g["lr"] / 1e-3, 6) for g in t.optimizers[0].param_groups}) == [0.5, 1.0]


# -- the readout ------------------------------------------------------------------------------------------------------
def test_plain_linear_readout_is_an_error_saying_what_to_do():
    model = mup_model(readout="linear")
    with pytest.raises(ConfigurationError, match=r"\['lm_head'\] map a width dimension .* muP needs `mup.MuReadout`"
                                                 r".*convert_readout=True"):
        trainer([MuP(base={"d_model": 32})], max_steps=1).fit(model, data())


def test_convert_readout_keeps_the_weights_and_function_at_base_width():
    model = mup_model(d_model=32, readout="linear")
    x = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        before_w = model.lm_head.weight.clone()
        before = model(x)
    cb = MuP(base={"d_model": 32}, delta={"d_model": 64}, convert_readout=True)
    trainer([cb], max_steps=0).fit(model, data())
    assert isinstance(model.lm_head, mup.MuReadout)
    assert torch.equal(model.lm_head.weight, before_w)  # width_mult 1: nothing rescaled
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)


def test_fixed_init_converted_readout_keeps_its_std_so_the_effective_std_is_1_over_width_mult():
    # a plain Linear readout at GPT-2's fixed std 0.02, 4x the base width: muP wants the effective readout
    # (weights x 1/width_mult in MuReadout's forward) at 0.02 / 4; mup's own rescale (x sqrt(4)) would give 0.02 / 2
    model = mup_model(d_model=128, readout="linear", zero_readout=False, init_std=0.02)
    hidden_before = model.blocks[0].mlp.fc.weight.detach().std().item()
    trainer([MuP(base={"d_model": 32}, convert_readout=True, hidden_init="fixed")], max_steps=0).fit(model, data())
    readout = model.lm_head
    assert isinstance(readout, mup.MuReadout) and readout.width_mult() == 4
    assert readout.weight.std().item() == pytest.approx(0.02, rel=0.05)
    effective = readout.weight.std().item() * readout.output_mult / readout.width_mult()
    assert effective == pytest.approx(0.02 / 4, rel=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(hidden_before / 2, rel=1e-5)  # 1/sqrt(4)


def test_readout_by_name():
    model = mup_model()
    with pytest.raises(ConfigurationError, match=r"`readout` names no submodule: 'head_x'"):
        trainer([MuP(base={"d_model": 32}, readout="head_x")], max_steps=1).fit(model, data())


# -- attention --------------------------------------------------------------------------------------------------------
def test_attention_scale_helper_and_warning():
    assert attention_scale(32) == 1 / 32
    model = mup_model(attn_scale="inverse_sqrt")
    with pytest.warns(UserWarning, match=r"muP needs attention logits scaled by 1/d_head.*attn_scale='inverse_sqrt'"
                                         r".*coord-check"):
        trainer([MuP(base={"d_model": 32})], max_steps=1).fit(model, data())


def test_no_attention_warning_when_correct():
    model = mup_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer([MuP(base={"d_model": 32})], max_steps=1).fit(model, data())
    assert not any("1/d_head" in str(w.message) for w in caught)


def test_no_attention_warning_when_mup_scale_equals_the_standard_one_at_this_head_width():
    # the demo's recipe: attn_mult = 4 = sqrt(16), so at d_head 16 the muP scale 4/16 is numerically 1/sqrt(16)
    model = mup_model(d_model=64, n_head=4, attn_mult=4.0)
    assert model.blocks[0].attn.scale == 16 ** -0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer([MuP(base={"d_model": 32, "n_head": 2})], max_steps=1).fit(model, data())
    assert not any("1/d_head" in str(w.message) for w in caught)


# -- checkpoint, deepcopy, DDP --------------------------------------------------------------------------------------
def _callbacks():
    return [MuP(base={"d_model": 32}, hidden_init="fixed"), PowerLR(warmup_tokens=2 * 4 * T),
            GradualPruning(final_sparsity=0.5, update_every=2), ScalingTracker(log_every_n_steps=4)]


def test_resume_reattaches_without_rescaling_and_matches_the_uninterrupted_run(tmp_path):
    steps, stop = 16, 7
    full_model = mup_model()
    full = _callbacks()
    trainer(full, max_steps=steps).fit(full_model, data())

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=stop, save_top_k=-1)
    trainer([*_callbacks(), ckpt, stop_at(stop)], max_steps=steps, enable_checkpointing=True).fit(mup_model(), data())
    path = next(tmp_path.glob("*.ckpt"))
    state = torch.load(path, weights_only=False)["callbacks"]
    mup_state = next(v for k, v in state.items() if k.startswith("MuP"))
    assert mup_state["shapes"]["lm_head.weight"] == [None, 32]

    resumed_model = mup_model()
    resumed = _callbacks()
    trainer(resumed, max_steps=steps).fit(resumed_model, data(), ckpt_path=str(path))
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed[1].lr == full[1].lr
    assert resumed_model.lm_head.width_mult() == 4.0
    # the resume branch is the one taken: the run is known to resume before the optimizer exists, so the
    # checkpoint's (already muP) weights are not rescaled again
    assert full[0].rescaled and not resumed[0].rescaled


class _ScheduledGPT(TinyGPT):
    """TinyGPT whose optimizer comes with a scheduler of the kind named by `kind`."""

    kind = "lambda"

    def configure_optimizers(self):
        from torch.optim import lr_scheduler as S

        opt = torch.optim.AdamW(self.param_groups(), lr=self.hparams.lr)
        if self.kind == "lambda":
            sched = S.LambdaLR(opt, [lambda k: 1.0 / (1 + k), lambda k: 0.5 ** k])
        elif self.kind == "sequential":
            sched = S.SequentialLR(opt, [S.LinearLR(opt, 0.1, 1.0, total_iters=2), S.ExponentialLR(opt, 0.9)],
                                   milestones=[2])
        elif self.kind == "chained":
            sched = S.ChainedScheduler([S.ConstantLR(opt, 0.5, total_iters=2), S.ExponentialLR(opt, 0.9)])
        else:
            sched = S.OneCycleLR(opt, max_lr=[4e-3, 1e-3], total_steps=8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@pytest.mark.parametrize("kind", ["lambda", "sequential", "chained", "onecycle"])
def test_schedulers_are_remapped_to_the_mup_groups(kind):
    """Every muP group follows its source group's schedule, times its muP factor: the group that holds hidden
    matrices at 1/width_mult of its source group's learning rate at every step, the vector group at 1x."""

    def lrs_per_step(with_mup):
        cls = type("M", (_ScheduledGPT,), {"kind": kind})
        pl.seed_everything(0, verbose=False)
        model = cls(d_model=128, n_layer=2, n_head=4, seq_len=T, readout="mup", attn_scale="inverse", lr=1e-3,
                    weight_decay=0.1)
        seen = []

        class Spy(Callback):
            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                seen.append([(g["lr"], len(g["params"]), any(p.dim() == 2 and p.shape[0] == p.shape[1] * 4 or
                                                             p.shape == (128, 128) for p in g["params"]))
                             for g in optimizer.param_groups])

        callbacks = [MuP(base={"d_model": 32}), Spy()] if with_mup else [Spy()]
        if not with_mup:
            mup.set_base_shapes(model, reference_shapes(TinyGPT, dict(d_model=32, n_layer=2, n_head=4, seq_len=T,
                                                                       readout="mup"),
                                                        dict(d_model=64, n_layer=2, n_head=4, seq_len=T,
                                                             readout="mup")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer(callbacks, max_steps=6).fit(model, data())
        return seen

    plain = lrs_per_step(False)  # the original two groups: decayed weights, the rest
    split = lrs_per_step(True)   # muP: each group split into hidden matrices (x 1/4) and vectors (x 1)
    assert len(plain) == len(split) == 6
    for before, after in zip(plain, split):
        decayed = before[0][0]
        rest = before[1][0]
        rates = sorted(lr for lr, _, _ in after)
        # the decayed group's matrices at 1/4, its vector-like weights (readout, embeddings) at 1x; the rest at 1x
        expected = sorted([decayed / 4, decayed] + [rest] * (len(after) - 2))
        assert rates == pytest.approx(expected, rel=1e-9), (kind, before, after)


def test_resume_with_other_base_shapes_is_refused(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer([MuP(base={"d_model": 32}), ckpt], max_steps=2, enable_checkpointing=True).fit(mup_model(), data())
    path = next(tmp_path.glob("*.ckpt"))
    with pytest.raises(ConfigurationError, match=r"other muP base shapes"):
        trainer([MuP(base={"d_model": 64})], max_steps=4).fit(mup_model(), data(), ckpt_path=str(path))


def test_deepcopy_keeps_working():
    model = mup_model()
    trainer([MuP(base={"d_model": 32})], max_steps=1).fit(model, data())
    twin = copy.deepcopy(model)
    assert not hasattr(twin.lm_head.weight, "infshape")  # torch drops it...
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x))  # ...the readout's hook restores it on the first forward
    assert twin.lm_head.weight.infshape.width_mult() == 4.0
    reattach(twin)
    assert all(p.infshape == q.infshape for p, q in zip(twin.parameters(), model.parameters()))


def test_ddp_wrapping_keeps_base_shapes():
    seen = {}

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            wrapped = trainer.strategy.model
            seen["wrapped"] = type(wrapped).__name__
            seen["ok"] = all(hasattr(p, "infshape") for p in wrapped.parameters())

    model = mup_model()
    cb = MuP(base={"d_model": 32})
    trainer([cb, Probe()], max_steps=2, strategy="ddp", devices=1, use_distributed_sampler=False).fit(model, data())
    assert seen == {"wrapped": "DistributedDataParallel", "ok": True}
    assert model.lm_head.width_mult() == 4.0


# -- composition ------------------------------------------------------------------------------------------------------
def test_composes_with_power_lr_and_pruning():
    model = mup_model()
    power, pruning = PowerLR(), GradualPruning(final_sparsity=0.5, update_every=1, start_fraction=0.0,
                                               end_fraction=0.5)
    t = trainer([MuP(base={"d_model": 32}), power, pruning], max_steps=6)
    t.fit(model, data())
    # PowerLR multiplies muP's per-group ratios: 1/width_mult for hidden matrices
    assert sorted(set(round(m, 6) for m in power.multipliers[0])) == [0.25, 1.0]
    for group, m in zip(t.optimizers[0].param_groups, power.multipliers[0]):
        assert group["lr"] == pytest.approx(power.lr * m)
    assert "lm_head.weight" not in pruning.params
    assert isinstance(model.lm_head, mup.MuReadout) and model.lm_head.width_mult() == 4.0
    assert pruning.measured_sparsity() == pytest.approx(0.5, abs=1e-3)


def test_logs_width_params(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path)
    trainer([MuP(base={"d_model": 32})], max_steps=1, logger=logger).fit(mup_model(), data())
    hparams = (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "scaling/mup_base_width: 32" in hparams and "scaling/mup_width_mult: 4.0" in hparams


# -- configuration errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, r"MuP needs exactly one of `base` .* or `base_shapes`"),
        ({"base": {"d_model": 32}, "base_shapes": "x.bsh"}, r"MuP needs exactly one of"),
        ({"base_shapes": "x.bsh", "delta": {"d_model": 64}}, r"`delta` goes with `base`"),
        ({"base": {"d_model": -1}}, r"`base` must map hyperparameter names to positive integers"),
        ({"base": {"d_model": 32}, "hidden_init": "xavier"}, r"`hidden_init` must be one of \('fan_in', 'fixed'\)"),
        ({"base": {"d_model": 32}, "optimizer_kind": "lion"}, r"`optimizer_kind` must be one of \('adam', 'sgd'\)"),
    ],
)
def test_configuration_errors(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        MuP(**kwargs)


def test_unknown_base_key_and_missing_file():
    with pytest.raises(ConfigurationError, match=r"`base` has keys \['width'\] that are not hyperparameters"):
        trainer([MuP(base={"width": 32})], max_steps=1).fit(mup_model(), data())
    with pytest.raises(ConfigurationError, match=r"`base_shapes` file not found: 'missing.bsh'"):
        trainer([MuP(base_shapes="missing.bsh")], max_steps=1).fit(mup_model(), data())


def test_unknown_optimizer_needs_a_kind():
    class Lion(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3):
            super().__init__(params, {"lr": lr})

    p = nn.Parameter(torch.zeros(2, 2))
    p.infshape = mup.infshape.zip_infshape(mup.InfShape.from_base_shape([1, 1]), [2, 2])
    with pytest.raises(ConfigurationError, match=r"cannot tell how muP scales Lion: pass MuP\(optimizer_kind='adam'\)"):
        make_optimizer_mup(Lion([p]))


# -- coordinate check -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coord_batches():
    dm = ByteCorpusDataModule(seq_len=T, batch_size=8, max_bytes=1_000_000, seed=0)
    dm.setup()
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(4)]


def test_coord_check_is_flat_under_mup_and_grows_under_sp(coord_batches, tmp_path):
    widths = [64, 128, 256, 512]

    def make(parametrization):
        mup_ = parametrization == "mup"
        return lambda w: TinyGPT(d_model=w, n_layer=2, n_head=4, seq_len=T, readout="mup" if mup_ else "linear",
                                 attn_scale="inverse" if mup_ else "inverse_sqrt", zero_readout=mup_)

    muP = coord_check(make("mup"), widths, coord_batches, parametrization="mup", steps=4, lr=3e-3, seeds=(0, 1),
                      hidden_init="fixed")
    sp = coord_check(make("sp"), widths, coord_batches, parametrization="sp", steps=4, lr=3e-3, seeds=(0, 1))
    layer, worst = muP.max_abs_slope()
    assert abs(worst) <= 0.1, (layer, muP.slopes())
    s = sp.slopes()
    hidden = [k for k in s if k.endswith(("attn.proj", "mlp.proj", "mlp.fc"))]
    assert all(s[k] > 0.3 for k in hidden), s
    assert s["lm_head"] > 0.3, s
    assert muP.plot(tmp_path / "mup.png").stat().st_size > 10_000


def test_coord_check_errors(coord_batches):
    with pytest.raises(ConfigurationError, match=r"`widths` needs at least 3 distinct widths"):
        coord_check(lambda w: nn.Linear(w, w), [8, 16], coord_batches)
    with pytest.raises(ConfigurationError, match=r"`parametrization` must be one of \('mup', 'sp'\)"):
        coord_check(lambda w: nn.Linear(w, w), [8, 16, 32], coord_batches, parametrization="ntk")


def test_coord_check_command(tmp_path, capsys):
    from lightning_scaling.cli import main

    config = tmp_path / "cc.yaml"
    config.write_text(
        "model:\n  class_path: examples.tiny_gpt.TinyGPT\n"
        "  init_args: {n_layer: 1, n_head: 2, seq_len: 16, readout: mup, attn_scale: inverse, zero_readout: true}\n"
        "sp_overrides: {readout: linear, attn_scale: inverse_sqrt, zero_readout: false}\n"
        "data:\n  class_path: examples.tiny_gpt.ByteCorpusDataModule\n"
        "  init_args: {seq_len: 16, batch_size: 4, max_bytes: 300000}\n"
        "width_key: d_model\nwidths: [16, 32, 64]\nsteps: 2\nhidden_init: fixed\n"
    )
    assert main(["coord-check", "--config", str(config), "--out", str(tmp_path / "out"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"mup", "sp"}
    assert (tmp_path / "out" / "coord_check_mup.png").exists()
    assert set(report["sp"]["slopes"]) >= {"lm_head", "blocks.0.mlp.proj"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {class_path: nope.Model}\ndata: {class_path: nope.Data}\nwidth_key: d\nwidths: [1, 2, 3]\n")
    assert main(["coord-check", "--config", str(bad)]) == 2
    assert "`class_path` 'nope.Model' cannot be imported" in capsys.readouterr().err
