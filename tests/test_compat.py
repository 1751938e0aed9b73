"""The five callbacks on models and trainers this project never wrote (see `compat_models.py`).

Each model trains with MuP, PowerLR, GradualPruning, ScalingTracker and ScalingLawAdvisor into an MLflow sqlite
store, and every number is checked against an independent count: data (non-pad tokens, or samples), sparsity per
layer, N and N_avg, FLOPs (from the model's structure, within 10%), the learning rate of every group at every step,
and one training run in MLflow.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import lightning.pytorch as lp  # noqa: E402
from compat_models import HFGPT2, DemoTransformer, HFLlama, independent_flops, mlp_class  # noqa: E402

from lightning_scaling.callbacks import GradualPruning, MuP, PowerLR, ScalingLawAdvisor, ScalingTracker  # noqa: E402
from lightning_scaling.schedules import PowerSchedule  # noqa: E402

STEPS = 16
SPARSITY = 0.5
# `benchmarks/gpu_check.sh` runs this suite on a GPU: LIGHTNING_SCALING_TEST_ACCELERATOR=cuda, PRECISION=bf16-mixed
ACCELERATOR = os.environ.get("LIGHTNING_SCALING_TEST_ACCELERATOR", "cpu")
PRECISION = os.environ.get("LIGHTNING_SCALING_TEST_PRECISION", "32-true")
try:  # the GPU machine has no MLflow: there the suite checks everything but the MLflow run
    import mlflow  # noqa: F401

    HAVE_MLFLOW = True
except ImportError:  # pragma: no cover - the project installs MLflow
    HAVE_MLFLOW = False


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield


class Recorder(lp.Callback):
    """Independent records per micro-batch and step: data, positions, FLOPs from the structure, pruned entries
    before the step, and every group's learning rate after PowerLR set it."""

    def __init__(self, pruning: GradualPruning, data, attention_calls: int, d_model: int):
        self.pruning, self.data, self.attention_calls, self.d_model = pruning, data, attention_calls, d_model
        self.tokens, self.positions, self.flops, self.pruned, self.lrs, self.base = [], [], [], [], [], None

    def on_fit_start(self, trainer, pl_module):
        self.base = [g.get("initial_lr", g["lr"]) for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        tokens, positions, context = self.data(batch)
        self.tokens.append(tokens)
        self.positions.append(positions)
        self.flops.append(independent_flops(pl_module, positions, context, self.attention_calls, self.d_model))
        masks = self.pruning.masks
        self.pruned.append(sum(int((~m).sum()) for m in masks.values()) if self.pruning.sparsity > 0 else 0)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def token_data(batch):
    if isinstance(batch, dict):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        return int(mask.sum()), ids.numel(), ids.shape[1]
    ids = batch[0]
    return ids.numel(), ids.numel(), ids.shape[1]


def sample_data(batch):
    x = batch[0]
    return x.shape[0], x.shape[0], 1


def independent_params(module: nn.Module) -> int:
    """Non-embedding parameters, counted here: unique parameters minus nn.Embedding tables."""
    unique = {id(p): p for p in module.parameters()}
    tables = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for i, p in unique.items() if i not in tables)


CASES = {
    # model, MuP base, data counter, attention calls per forward, d_model, readout weight that must stay dense
    "gpt2": (HFGPT2, {"n_embd": 16}, token_data, 2, 32, "model.transformer.wte.weight"),
    "llama": (HFLlama, {"hidden_size": 16, "intermediate_size": 32}, token_data, 2, 32, "model.lm_head.weight"),
    "demo_transformer": (DemoTransformer, {"ninp": 16, "nhid": 32}, token_data, 3, 32, "model.decoder.weight"),
}


def run_case(name, tmp_path, trainer_module=lp, model=None, extra_trainer_kw=None):
    cls, base, data, attention_calls, d_model, readout = CASES[name]
    trainer_module.seed_everything(0, verbose=False)
    model = model if model is not None else cls()
    n_params_before = sum(p.numel() for p in model.parameters())
    pruning = GradualPruning(final_sparsity=SPARSITY, update_every=2)
    tracker = ScalingTracker(log_every_n_steps=4)
    power = PowerLR(warmup_tokens=300)
    recorder = Recorder(pruning, data, attention_calls, d_model)
    uri, logger, advisor = f"sqlite:///{tmp_path / 'mlflow.db'}", False, []
    if HAVE_MLFLOW:
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name=name, tracking_uri=uri, artifact_location=str(tmp_path / "artifacts"))
        advisor = [ScalingLawAdvisor(bootstrap=0)]
    callbacks = [MuP(base=base, convert_readout=True), power, pruning, tracker, *advisor, recorder]
    trainer = trainer_module.Trainer(
        max_steps=STEPS, accelerator=ACCELERATOR, devices=1, logger=logger, log_every_n_steps=4,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        **{"precision": PRECISION, **(extra_trainer_kw or {})})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return dict(model=model, tracker=tracker, pruning=pruning, power=power, recorder=recorder, uri=uri,
                logger=logger, readout=readout, n_params_before=n_params_before,
                warnings=[str(w.message) for w in caught])


def check_numbers(r):
    model, tracker, pruning, power, rec = r["model"], r["tracker"], r["pruning"], r["power"], r["recorder"]
    # data: non-pad tokens (or samples), all of them
    assert tracker.tokens == sum(rec.tokens)
    # N: unique non-embedding parameters
    N = independent_params(model)
    assert tracker.param_counts["non_embedding"] == N
    # sparsity per layer: exactly round(s n) / n of every pruned weight; the readout and embeddings stay dense
    assert r["readout"] not in pruning.params
    for pname, p in pruning.params.items():
        assert int((p == 0).sum()) == round(SPARSITY * p.numel()), pname
    readout = dict(model.named_parameters())[r["readout"]]
    assert int((readout == 0).sum()) == 0
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            assert all(m.weight is not p for p in pruning.params.values())
    # N_avg: token-weighted mean of (N - entries pruned before each step)
    expected_avg = sum((N - z) * t for z, t in zip(rec.pruned, rec.tokens)) / sum(rec.tokens)
    assert tracker.params_avg == pytest.approx(expected_avg, rel=1e-3)
    assert tracker.params_avg < N * (1 - 0.2 * SPARSITY)  # pruning really entered it
    # FLOPs: measured on the executed steps, against the count from the structure
    assert tracker.flops == pytest.approx(sum(rec.flops), rel=0.10)
    # learning rate: every group at every step is the Power value x the group's muP multiplier
    assert len(rec.lrs) == STEPS
    schedule = power.schedule
    reference = max(rec.base)
    per_step = sum(rec.tokens) // STEPS
    for k, lrs in enumerate(rec.lrs):
        if not power.clock.varied:  # fixed-size batches: the schedule's tokens are exact at every step
            base_lr = PowerSchedule(**{**schedule.to_dict()}).lr((k + 1) * per_step)
            for lr, b in zip(lrs, rec.base):
                assert lr == pytest.approx(base_lr * b / reference, rel=1e-12)
        if lrs[-1] > 0:
            assert lrs[0] / lrs[-1] == pytest.approx(rec.base[0] / rec.base[-1], rel=1e-12)  # multipliers kept
    assert len(set(rec.base)) > 1, "muP split the groups"
    # one training run in MLflow, plus the summary run
    if not HAVE_MLFLOW:
        return
    from mlflow import MlflowClient

    client = MlflowClient(r["uri"])
    runs = client.search_runs([r["logger"].experiment_id])
    training = [run for run in runs if run.data.tags.get("lightning_scaling.summary") != "true"]
    assert len(training) == 1 and len(runs) == 2
    run = training[0]
    assert run.data.metrics["scaling/tokens"] == tracker.tokens
    assert run.data.params["scaling/data_unit"] == "tokens"


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_family_with_all_five_callbacks(name, tmp_path):
    r = run_case(name, tmp_path)
    check_numbers(r)
    model = r["model"]
    # muP leaves nothing behind: the module pickles, and its methods are its own again
    assert "configure_optimizers" not in vars(model) and "configure_model" not in vars(model)
    pickle.dumps(model)
    assert any("1/sqrt" in w for w in r["warnings"]), "the 1/sqrt(d_head) attention is reported"


def test_gpt2_stays_tied_and_counts_only_real_tokens(tmp_path):
    r = run_case("gpt2", tmp_path)
    gpt2 = r["model"].model
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight, "muP kept the readout tied"
    assert type(gpt2.lm_head).__name__ == "MuSharedReadout"
    assert sum(p.numel() for p in r["model"].parameters()) == r["n_params_before"]
    rec = r["recorder"]
    # padded batches: the padding (a quarter or more of the positions) is not data
    assert r["tracker"].tokens == sum(rec.tokens) < 0.85 * sum(rec.positions)
    # batches vary in length: the budget is estimated and re-estimated, and the schedule still ends where it should
    power, pruning = r["power"], r["pruning"]
    assert power.clock.varied
    assert any("budget is estimated" in w for w in r["warnings"])
    assert rec.lrs[-1][0] <= 0.05 * max(lrs[0] for lrs in rec.lrs), "the decay reaches (nearly) zero"
    assert pruning.sparsity == SPARSITY


@pytest.mark.skipif(not HAVE_MLFLOW, reason="MLflow is not installed")
def test_non_token_model_counts_samples_in_the_other_namespace(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    MLP = mlp_class()
    pl.seed_everything(0, verbose=False)
    model = MLP()
    tracker = ScalingTracker(log_every_n_steps=4)
    pruning = GradualPruning(final_sparsity=SPARSITY, update_every=2)
    power = PowerLR()
    rec = Recorder(pruning, sample_data, 0, 0)
    from pytorch_lightning.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="mlp", tracking_uri=uri, artifact_location=str(tmp_path / "artifacts"))
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=logger, log_every_n_steps=4,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[MuP(base={"width": 16}, convert_readout=True), power, pruning, tracker,
                                    ScalingLawAdvisor(bootstrap=0), rec])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    assert isinstance(tracker, pl.Callback) and isinstance(tracker, lp.Callback)
    samples = STEPS * model.hparams.batch_size
    assert tracker.tokens == samples and tracker.clock.unit == "samples"
    N = independent_params(model)
    assert tracker.flops_analytic == 6 * N * samples
    assert tracker.flops == pytest.approx(tracker.flops_analytic, rel=0.10)  # 2 FLOPs per weight per sample
    assert "net.4.weight" not in pruning.params  # the output layer (the last one) stays dense
    assert set(pruning.params) == {"net.0.weight", "net.2.weight"}
    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(logger.run_id)
    assert run.data.params["scaling/data_unit"] == "samples"
    assert run.data.metrics["scaling/tokens"] == samples
    assert math.isclose(power.schedule.batch_size, model.hparams.batch_size)


def test_a_second_fit_with_other_mup_settings_is_independent(tmp_path):
    from compat_models import FixedTokens
    from torch.utils.data import DataLoader

    lp.seed_everything(0, verbose=False)
    model = DemoTransformer()
    first = MuP(base={"ninp": 16, "nhid": 32}, convert_readout=True)
    kw = dict(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp.Trainer(callbacks=[first], **kw).fit(model)
        second = MuP(base={"ninp": 8, "nhid": 16})
        lp.Trainer(callbacks=[second], **kw).fit(model, train_dataloaders=DataLoader(FixedTokens(), batch_size=8))
    assert first.width_mult == 2.0 and second.width_mult == 4.0
    assert first.rescaled and not second.rescaled, "a trained module is not rescaled again"
    pickle.dumps(model)


def test_length_grouped_batches_weight_n_avg_by_tokens_and_keep_the_schedule_on_budget(tmp_path):
    """Batches sorted by length (length-grouped sampling, short first): the dense early steps carry few tokens, the
    sparse late ones many. N_avg must weight by tokens, not by micro-batch, and the budget estimated from the first
    step (far too small) must be corrected so that the decay and the pruning still end on time."""
    from compat_models import PaddedTokens, pad_collate
    from torch.utils.data import DataLoader

    data = PaddedTokens(n=STEPS * 8, min_len=4, max_len=32)
    order = sorted(range(len(data)), key=lambda i: data.lengths[i])

    class Grouped(HFGPT2):
        def train_dataloader(self):
            return DataLoader([data[i] for i in order], batch_size=8, collate_fn=pad_collate, shuffle=False)

    lp.seed_everything(0, verbose=False)
    model = Grouped()
    r = run_case("gpt2", tmp_path, model=model)
    rec, tracker, power, pruning = r["recorder"], r["tracker"], r["power"], r["pruning"]
    N = independent_params(model)
    per_token = sum((N - z) * t for z, t in zip(rec.pruned, rec.tokens)) / sum(rec.tokens)
    per_batch = sum(N - z for z in rec.pruned) / len(rec.pruned)
    assert tracker.params_avg == pytest.approx(per_token, rel=1e-3)
    assert abs(per_batch / per_token - 1) > 0.02, "the test must tell the two weightings apart"
    first = power.clock.budget_first
    assert first < 0.6 * tracker.tokens, "the first step's estimate is far off: later batches are longer"
    assert power.clock.budget == pytest.approx(tracker.tokens, rel=0.1)
    assert rec.lrs[-1][0] <= 0.05 * max(lrs[0] for lrs in rec.lrs), "the decay reaches (nearly) zero"
    assert pruning.sparsity == SPARSITY, "pruning reaches its target"
    assert any("budget was estimated at" in w for w in r["warnings"]), "how far the estimate moved is reported"


def test_bf16_mixed_with_gradient_accumulation(tmp_path):
    r = run_case("llama", tmp_path, extra_trainer_kw={"precision": "bf16-mixed", "accumulate_grad_batches": 2})
    check_numbers(r)  # tokens of both micro-batches, LR once per optimizer step, pruning, FLOPs, one run
    assert r["power"].schedule.batch_size == 2 * r["model"].hparams.batch_size
    assert len(r["recorder"].tokens) == 2 * STEPS


@pytest.mark.slow
def test_torch_compile(tmp_path):
    """A compiled module keeps tokens, LR per step, pruning and FLOPs right (compilation takes about a minute)."""
    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT

    lp.seed_everything(0, verbose=False)
    model = TinyGPT(d_model=32, n_layer=2, n_head=2, seq_len=32, readout="mup", attn_scale="inverse")
    pruning = GradualPruning(final_sparsity=SPARSITY, update_every=2)
    tracker = ScalingTracker(log_every_n_steps=4)
    power = PowerLR()
    rec = Recorder(pruning, token_data, 2, 32)
    trainer = lp.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[MuP(base={"d_model": 16}), power, pruning, tracker, rec])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(torch.compile(model), ByteCorpusDataModule(seq_len=32, batch_size=4, max_bytes=500_000))
    assert tracker.tokens == sum(rec.tokens) == STEPS * 4 * 32
    assert tracker.flops == pytest.approx(sum(rec.flops), rel=0.10)
    for name, p in pruning.params.items():
        assert int((p == 0).sum()) == round(SPARSITY * p.numel()), name
    assert len(rec.lrs) == STEPS and rec.lrs[-1][0] == 0.0  # decayed to zero at the last step
