"""The training-time callbacks on real CPU training of the example transformer.

ScalingTracker (tokens, FLOPs, parameter counts, N_avg), PowerLR (the Power schedule, per-group multipliers) and
GradualPruning (cubic magnitude pruning with bool masks), alone and together, including gradient accumulation,
exact resume from a checkpoint and an MLflow run in a temporary sqlite store.
"""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from conftest import stop_at
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling import ConfigurationError
from lightning_scaling.callbacks import GradualPruning, PowerLR, ScalingTracker
from lightning_scaling.nn import count_params, prunable_parameters
from lightning_scaling.schedules import PowerSchedule, cubic_sparsity, mean_sparsity

B, T = 4, 32  # sequences per micro-batch, sequence length


@pytest.fixture(autouse=True)
def _single_threaded_and_quiet(single_threaded):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def make_model(**kw):
    pl.seed_everything(0, verbose=False)
    return TinyGPT(**{"d_model": 32, "n_layer": 2, "n_head": 2, "seq_len": T, "lr": 1e-3, **kw})


def make_data():
    return ByteCorpusDataModule(seq_len=T, batch_size=B, max_bytes=1_000_000, seed=0)


def make_trainer(callbacks, max_steps=20, **kw):
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    max_steps=max_steps, deterministic=True)
    defaults.update(kw)
    return pl.Trainer(callbacks=callbacks, **defaults)


class Recorder(Callback):
    """Records, per optimizer step, the LR of every group (after PowerLR set it) and per-layer sparsity."""

    def __init__(self, pruning: GradualPruning | None = None):
        self.lrs, self.sparsity, self.progress, self.zero_ok = [], [], [], []
        self.pruning = pruning

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.pruning is None:
            return
        p = self.pruning
        self.progress.append(p.progress)
        self.sparsity.append({n: 1 - int(m.sum()) / m.numel() for n, m in p.masks.items()})
        self.zero_ok.append(all(bool((p.params[n][~m] == 0).all()) for n, m in p.masks.items()))


class TwoGroupGPT(TinyGPT):
    """The example model with a second parameter group at a quarter of the base LR (as muP would set)."""

    def configure_optimizers(self):
        decay, no_decay = self.param_groups()
        return torch.optim.AdamW([decay, {**no_decay, "lr": self.hparams.lr * 0.25}], lr=self.hparams.lr)


# -- PowerLR ------------------------------------------------------------------------------------------------------
def test_power_lr_sets_formula_times_group_multiplier():
    power = PowerLR(warmup_tokens=3 * B * T, decay_fraction=0.2)
    rec = Recorder()
    model = TwoGroupGPT(d_model=32, n_layer=2, n_head=2, seq_len=T, lr=1e-3)
    make_trainer([power, rec], max_steps=20).fit(model, make_data())
    schedule = PowerSchedule(batch_size=B, warmup_tokens=3 * B * T, total_tokens=20 * B * T, decay_fraction=0.2)
    assert power.schedule == schedule
    assert len(rec.lrs) == 20
    for k, (lr_decay, lr_no_decay) in enumerate(rec.lrs):
        expected = schedule.lr((k + 1) * B * T)
        assert lr_decay == pytest.approx(expected, rel=1e-12, abs=1e-18), k
        assert lr_no_decay == pytest.approx(0.25 * expected, rel=1e-12, abs=1e-18), k
    assert rec.lrs[0][0] == pytest.approx(schedule.power(3 * B * T) / 3)  # warmup: a third of the way
    assert rec.lrs[-1][0] == 0.0  # decayed to zero at the end


def test_power_lr_without_decay_keeps_the_power_value_to_the_end():
    power = PowerLR(decay_fraction=0.0)
    rec = Recorder()
    make_trainer([power, rec], max_steps=6).fit(make_model(), make_data())
    assert rec.lrs[-1][0] == pytest.approx(min(0.02, B * 4 * (6 * B * T) ** -0.51), rel=1e-12)


# -- token counting -----------------------------------------------------------------------------------------------
def test_gradient_accumulation_counts_tokens_and_batch_size():
    tracker, power = ScalingTracker(log_every_n_steps=2), PowerLR()
    make_trainer([tracker, power], max_steps=4, accumulate_grad_batches=3).fit(make_model(), make_data())
    assert tracker.tokens == 4 * 3 * B * T
    assert power.clock.tokens == 4 * 3 * B * T
    assert power.schedule.batch_size == 3 * B  # sequences per optimizer step


def test_tokens_fn_counts_only_what_it_is_told():
    tracker = ScalingTracker(tokens_fn=lambda batch: int((batch[1] != 32).sum()))  # e.g. non-space targets
    make_trainer([tracker], max_steps=3).fit(make_model(), make_data())
    assert 0 < tracker.tokens < 3 * B * T


# -- ScalingTracker -----------------------------------------------------------------------------------------------
def test_tracker_counts_and_flops():
    tracker = ScalingTracker()
    model = make_model()
    make_trainer([tracker], max_steps=5).fit(model, make_data())
    counts = count_params(model)
    assert tracker.param_counts == counts
    assert tracker.tokens == 5 * B * T
    assert tracker.flops == pytest.approx(tracker.flops_analytic, rel=0.05)
    assert tracker.flops_analytic == pytest.approx(
        6 * counts["non_embedding"] * 5 * B * T + 3 * 4 * 2 * T * 32 * 5 * B * T, rel=1e-12)
    # dense run: every basis parameter is non-zero (zero-initialised biases move at the first step), but for the
    # keys' biases, which get no gradient (softmax is blind to one shift of every key): some may still be exactly 0
    assert counts["non_embedding"] - 2 * 32 <= tracker.params_nonzero <= counts["non_embedding"]
    assert tracker.params_avg == pytest.approx(counts["non_embedding"], rel=0.01)


def test_tracker_total_basis():
    tracker = ScalingTracker(params_basis="total")
    model = make_model()
    make_trainer([tracker], max_steps=2).fit(model, make_data())
    counts = count_params(model)
    # the keys' biases get no gradient (softmax is blind to one shift of every key), so an entry of them may still
    # be exactly 0 when the tracker counts, depending on rounding: at most n_layer x d_model entries short
    key_biases = 2 * 32
    assert counts["total"] - key_biases <= tracker.params_nonzero <= counts["total"]
    assert tracker.params_nonzero > counts["non_embedding"] + key_biases  # the embeddings are counted


# -- GradualPruning -----------------------------------------------------------------------------------------------
def test_default_selection_excludes_embeddings_readout_norms_biases():
    model = make_model()
    names = set(prunable_parameters(model))
    assert names and all(n.endswith(".weight") and n.startswith("blocks.") for n in names)
    assert not any("emb" in n or "lm_head" in n or "ln" in n for n in names)
    only_mlp = prunable_parameters(model, include=["blocks.*.mlp.*.weight"])
    assert only_mlp and all(".mlp." in n for n in only_mlp)
    no_qkv = prunable_parameters(model, exclude=["*qkv*"])
    assert not any("qkv" in n for n in no_qkv) and len(no_qkv) < len(names)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruning_reaches_target_following_the_cubic(scope):
    pruning = GradualPruning(final_sparsity=0.6, update_every=2, scope=scope)
    rec = Recorder(pruning)
    model = make_model()
    make_trainer([pruning, rec], max_steps=40).fit(model, make_data())
    assert all(rec.zero_ok), "pruned weights must stay exactly zero after every step"
    final = rec.sparsity[-1]
    if scope == "layer":
        for name, s in final.items():
            n = pruning.params[name].numel()
            assert s == pytest.approx(round(0.6 * n) / n, abs=1e-12), name
    assert pruning.measured_sparsity() == pytest.approx(0.6, abs=1e-3)
    # in between, the masks follow the cubic at their last update
    for k, (progress, s) in enumerate(zip(rec.progress, rec.sparsity)):
        if (k + 1) % 2 == 0:
            target = cubic_sparsity(progress, 0.6)
            assert sum(s.values()) / len(s) == pytest.approx(target, abs=2e-3 if scope == "layer" else 0.2), k
    assert rec.sparsity[8] == {n: 0.0 for n in final}  # before 25% of training: dense


def test_newly_pruned_entries_reset_adam_state():
    pruning = GradualPruning(final_sparsity=0.5, update_every=1, start_fraction=0.0, end_fraction=0.5)

    class ZeroCheck(Callback):
        def __init__(self):
            self.checked = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            before = getattr(self, "prev", None)
            opt = trainer.optimizers[0]
            for name, p in pruning.params.items():
                mask = pruning.masks[name]
                if before is not None:
                    newly = before[name] & ~mask
                    if newly.any():
                        assert (opt.state[p]["exp_avg"][newly] == 0).all()
                        assert (opt.state[p]["exp_avg_sq"][newly] == 0).all()
                        self.checked += 1
            self.prev = {n: m.clone() for n, m in pruning.masks.items()}

    zc = ZeroCheck()
    make_trainer([pruning, zc], max_steps=12).fit(make_model(), make_data())
    assert zc.checked > 0


def test_n_avg_matches_the_analytic_mean_within_1_percent():
    steps = 120
    tracker = ScalingTracker(log_every_n_steps=50)
    pruning = GradualPruning(final_sparsity=0.5, update_every=1, start_fraction=0.25, end_fraction=0.75)
    model = make_model()
    trainer = make_trainer([tracker, pruning], max_steps=steps)
    trainer.fit(model, make_data())
    basis = count_params(model)["non_embedding"]
    prunable = sum(p.numel() for p in pruning.params.values())
    expected = basis - prunable * mean_sparsity(0.5, 0.25, 0.75)
    assert tracker.params_avg == pytest.approx(expected, rel=0.01)
    assert tracker.metrics()["scaling/sparsity"] == pytest.approx(prunable * 0.5 / basis, rel=1e-3)
    # the closing hook plans the next sparse run with the share of the basis that this pruning prunes
    from lightning_scaling.callbacks.advisor import _settings

    _, schedule = _settings(trainer)
    assert schedule["prunable_fraction"] == pytest.approx(prunable / basis) and schedule["prunable_fraction"] < 0.99


# -- resume -------------------------------------------------------------------------------------------------------
def _all_three(**pruning_kw):
    return (ScalingTracker(log_every_n_steps=4), PowerLR(warmup_tokens=2 * B * T),
            GradualPruning(final_sparsity=0.5, update_every=2, **pruning_kw))


def test_resume_is_bitwise_identical(tmp_path):
    steps, stop = 24, 10  # pruning runs from step 6 to step 18: the interruption is inside it
    full_callbacks = _all_three()
    full_model = make_model()
    make_trainer(list(full_callbacks), max_steps=steps).fit(full_model, make_data())

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=stop, save_top_k=-1)
    first = _all_three()
    interrupted = make_trainer([*first, ckpt, stop_at(stop)], max_steps=steps, enable_checkpointing=True)
    interrupted.fit(make_model(), make_data())
    assert first[2].sparsity > 0, "the interruption must come after pruning began"
    path = next(tmp_path.glob("*.ckpt"))

    resumed = _all_three()
    resumed_model = make_model()
    make_trainer(list(resumed), max_steps=steps).fit(resumed_model, make_data(), ckpt_path=str(path))

    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    for name, mask in full_callbacks[2].masks.items():
        assert torch.equal(mask, resumed[2].masks[name]), name
    assert resumed[1].lr == full_callbacks[1].lr
    assert resumed[1].clock.tokens == full_callbacks[1].clock.tokens
    for key in ("tokens", "flops", "flops_analytic", "nonzero_weighted", "nonzero_tokens", "params_nonzero"):
        assert getattr(resumed[0], key) == getattr(full_callbacks[0], key), key
    assert resumed[0].params_avg == full_callbacks[0].params_avg


# -- MLflow -------------------------------------------------------------------------------------------------------
def test_mlflow_run_shows_every_key(tmp_path):
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="callbacks", tracking_uri=uri, artifact_location=str(tmp_path / "art"))
    callbacks = [ScalingTracker(log_every_n_steps=3), PowerLR(), GradualPruning(final_sparsity=0.3, update_every=1)]
    make_trainer(callbacks, max_steps=9, logger=logger, log_every_n_steps=3).fit(make_model(), make_data())
    run = mlflow.MlflowClient(uri).get_run(logger.run_id)
    for key in ("scaling/tokens", "scaling/flops", "scaling/flops_analytic", "scaling/params_nonzero",
                "scaling/params_avg", "scaling/sparsity", "scaling/lr"):
        assert key in run.data.metrics, key
    for key in ("scaling/params_total", "scaling/params_embedding", "scaling/params_non_embedding"):
        assert key in run.data.params, key
    assert run.data.tags["lightning_scaling.schema"] == "1"
    assert run.data.metrics["scaling/tokens"] == 9 * B * T
    history = mlflow.MlflowClient(uri).get_metric_history(logger.run_id, "scaling/tokens")
    assert [m.step for m in history] == [3, 6, 9]


# -- configuration errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: GradualPruning(final_sparsity=1.2), r"`final_sparsity` must be in \[0, 1\), got 1.2"),
        (lambda: GradualPruning(start_fraction=0.8, end_fraction=0.4), r"`start_fraction` must be < `end_fraction`"),
        (lambda: GradualPruning(update_every=0), r"`update_every` must be an integer >= 1, got 0"),
        (lambda: GradualPruning(scope="row"), r"`scope` must be one of \('layer', 'global'\), got 'row'"),
        (lambda: GradualPruning(total_tokens=-3), r"`total_tokens` must be an integer > 0 or None, got -3"),
        (lambda: GradualPruning(include="*.weight"), r"`include` must be a list of name patterns or None"),
        (lambda: PowerLR(b=0.5), r"`b` must be in \[-1, 0\), got 0.5"),
        (lambda: PowerLR(batch_size=0), r"`batch_size` must be an integer > 0 or None, got 0"),
        (lambda: PowerLR(decay="step"), r"`decay` must be one of"),
        (lambda: ScalingTracker(log_every_n_steps=0), r"`log_every_n_steps` must be an integer >= 1 or None, got 0"),
        (lambda: ScalingTracker(params_basis="all"), r"`params_basis` must be one of \('non_embedding', 'total'\)"),
    ],
)
def test_configuration_errors(factory, match):
    with pytest.raises(ConfigurationError, match=match):
        factory()


def test_pruning_needs_a_run_length():
    pruning = GradualPruning(final_sparsity=0.5)
    trainer = make_trainer([pruning], max_steps=-1, max_epochs=-1, limit_train_batches=None)
    with pytest.raises(ConfigurationError, match=r"pass `total_tokens`, or give the Trainer `max_steps`"):
        trainer.fit(make_model(), make_data())


def test_state_keys_hold_identity_only():
    # two pruning callbacks over different weights coexist; tunable settings do not change the key, so a resume with
    # another sparsity or learning rate still finds its state (and says what changed)
    assert GradualPruning(include=["*.mlp.*"]).state_key != GradualPruning(include=["*.attn.*"]).state_key
    assert GradualPruning(final_sparsity=0.5).state_key == GradualPruning(final_sparsity=0.7).state_key
    assert PowerLR(a=4).state_key == PowerLR(a=2, lr_max=0.01).state_key
    assert ScalingTracker(params_basis="total").state_key == ScalingTracker().state_key


def test_masks_prune_exactly_the_count_with_ties_broken_by_position():
    from lightning_scaling.nn import magnitude_masks

    w = torch.tensor([[0.5, 0.1, 0.1, 0.1], [0.1, 0.9, 0.0, 0.3]])
    mask = magnitude_masks({"w": w}, 0.5)["w"]
    # 4 pruned: the 0.0, then three of the five 0.1s, the first three by position
    assert mask.tolist() == [[True, False, False, False], [True, True, False, True]]
    previous = {"w": mask}
    grown = magnitude_masks({"w": w.abs() + 1.0}, 0.625, previous=previous)["w"]
    assert not (grown & ~mask).any(), "a growing mask never revives a pruned entry"
    assert int((~grown).sum()) == 5


def test_power_lr_log_false_logs_nothing(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path)
    make_trainer([PowerLR(log=False)], max_steps=4, logger=logger, log_every_n_steps=1).fit(make_model(), make_data())
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "scaling/lr" not in metrics


# -- resuming with changed settings ---------------------------------------------------------------------------------
def _checkpoint_at(tmp_path, callbacks, stop=6, steps=24):
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=stop, save_top_k=-1)
    make_trainer([*callbacks, ckpt, stop_at(stop)], max_steps=steps, enable_checkpointing=True).fit(
        make_model(), make_data())
    return str(next(tmp_path.glob("*.ckpt")))


def test_resume_with_changed_settings_continues_and_names_what_changed(tmp_path):
    first = [PowerLR(warmup_tokens=2 * B * T), GradualPruning(final_sparsity=0.5, update_every=2)]
    path = _checkpoint_at(tmp_path, first)
    tokens_at_ckpt = first[0].clock.tokens
    resumed = [PowerLR(warmup_tokens=2 * B * T, lr_max=0.01), GradualPruning(final_sparsity=0.6, update_every=2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(resumed, max_steps=24).fit(make_model(), make_data(), ckpt_path=path)
    messages = [str(w.message) for w in caught]
    assert any("PowerLR resumed with changed settings (lr_max: 0.02 -> 0.01)" in m for m in messages), messages
    assert any("GradualPruning resumed with changed settings (final_sparsity: 0.5 -> 0.6)" in m for m in messages)
    # the counters continued from the checkpoint (not from zero), and the new settings took effect
    assert resumed[0].clock.tokens == 24 * B * T and tokens_at_ckpt == 6 * B * T
    assert resumed[0].schedule.lr_max == 0.01
    assert resumed[1].sparsity == 0.6


def test_resume_with_another_params_basis_is_refused(tmp_path):
    path = _checkpoint_at(tmp_path, [ScalingTracker(log_every_n_steps=2)])
    with pytest.raises(ConfigurationError, match=r"counted N as params_basis='non_embedding'.*resume with"):
        make_trainer([ScalingTracker(params_basis="total")], max_steps=24).fit(make_model(), make_data(),
                                                                               ckpt_path=path)


def test_resume_without_the_callbacks_state_says_so(tmp_path):
    path = _checkpoint_at(tmp_path, [ScalingTracker(log_every_n_steps=2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([PowerLR()], max_steps=8).fit(make_model(), make_data(), ckpt_path=path)
    assert any("PowerLR found no state of its own in the checkpoint" in str(w.message) for w in caught)


def test_group_multipliers_reference():
    from lightning_scaling.callbacks.power_lr import group_multipliers

    w = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    # a group at the default LR is the reference (a plain optimizer, muP's vector-like groups)
    opt = torch.optim.AdamW([{"params": [w[0]]}, {"params": [w[1]], "lr": 2.5e-4}], lr=1e-3)
    assert group_multipliers(opt) == [1.0, 0.25]
    # every group sets its own rate (torch fills the default with its own 1e-3): ratios to the largest
    opt = torch.optim.AdamW([{"params": [w[0]], "lr": 0.02}, {"params": [w[1]], "lr": 0.005},
                             {"params": [w[2]], "lr": 0.01}])
    assert group_multipliers(opt) == [1.0, 0.25, 0.5]


def test_strategies_that_cannot_be_supported_are_refused_by_name():
    from lightning_scaling.integrations import check_strategy

    class FSDPStrategy:  # stands for Lightning's FSDP1 strategy, which Lightning refuses to run on CPU
        pass

    class Trainer:
        strategy = FSDPStrategy()

    with pytest.raises(ConfigurationError, match=r"GradualPruning does not support the strategy FSDPStrategy: "
                                                 r"FSDP1 flattens .* use ModelParallelStrategy"):
        check_strategy(Trainer(), "GradualPruning")
    check_strategy(Trainer(), "PowerLR", reads_parameters=False)  # the LR schedule reads no parameter


def test_a_failed_flop_measurement_falls_back_to_the_analytic_count_with_one_warning(monkeypatch):
    from lightning_scaling.nn import StepFlops

    def broken(self):
        raise RuntimeError("this counter cannot run here")

    monkeypatch.setattr(StepFlops, "start", broken)
    tracker = ScalingTracker()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([tracker], max_steps=4).fit(make_model(), make_data())
    relevant = [w for w in caught if "could not measure the training FLOPs" in str(w.message)]
    assert len(relevant) == 1 and "this counter cannot run here" in str(relevant[0].message)
    assert tracker.flops == tracker.flops_analytic > 0


def test_a_misspelt_hook_marked_override_fails_when_the_class_is_defined():
    from lightning_scaling.integrations import Callback, override

    with pytest.raises(TypeError, match=r"on_train_batch_strat is marked @override, but no base class has"):
        class Misspelt(Callback):
            @override
            def on_train_batch_strat(self, trainer, pl_module, batch, batch_idx):
                pass
    for cls in (GradualPruning, PowerLR, ScalingTracker):  # every hook of ours is marked, and so checked
        hooks = [n for n in vars(cls) if n.startswith("on_") or n in ("setup", "teardown", "state_dict")]
        assert hooks and all(getattr(vars(cls)[n], "__override__", False) for n in hooks), cls
