"""`ScalingTracker`: log what the scaling law needs (data, FLOPs, parameter counts, N_avg) as the run goes.

Metrics (step = global step), logged every `log_every_n_steps` optimizer steps and once more when training ends:

    scaling/tokens            D: data seen over all ranks and accumulation micro-batches (tokens, or samples)
    scaling/flops             C: training FLOPs measured with FlopCounterMode on the executed step, forward + backward
    scaling/flops_analytic    6 N D plus the attention term when the model declares n_layer, n_ctx, d_model
    scaling/params_nonzero    non-zero parameters of the basis now
    scaling/params_avg        token-weighted mean of non-zero parameters over training (N_avg, Jin et al. 2025)
    scaling/sparsity          1 - params_nonzero / basis parameters

Parameters, logged once: `scaling/params_total`, `scaling/params_embedding`, `scaling/params_non_embedding`,
`scaling/params_basis` (which of them N counts) and `scaling/data_unit` ("tokens", or "samples" for models whose
inputs are not token ids); and the run tag `lightning_scaling.schema` = `1` (a hyperparameter for loggers without
tags); a run resumed from another run's checkpoint is tagged `lightning_scaling.resumed_from` = that run's id. When
training ends the run is tagged `lightning_scaling.complete` = `true`, and `lightning_scaling.best` holds the lowest
value each loss metric (a logged metric whose name contains "loss") took at a validation, as JSON, so that the run
store tells a diverged run without reading every run's metric history. The closing hook reads exactly this.

Cost: the data comes from the run's shared clock (shapes, or an attention mask summed on the device); FLOPs are
measured once per batch shape on the real step; the non-zero count is recomputed on the device only when weights
are pruned (and at each log). The host reads and the collective happen only at the logging interval.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from lightning_scaling import plugins
from lightning_scaling.callbacks._clock import RunClock, clock_of, release_clock
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.lightning import Callback, check_strategy, override, running_trainer, warn_rank_zero
from lightning_scaling.integrations.loggers import keep_credentials_out_of_output, log_schema, run_id_of, set_run_tags
from lightning_scaling.nn.measure import (
    StepFlops,
    basis_parameters,
    count_nonzero,
    count_params,
    default_input,
    is_sharded,
)
from lightning_scaling.options import Choice, Constraint, Integer, validate
from lightning_scaling.runs import schema
from lightning_scaling.runs.schema import BEST_TAG, COMPLETE_TAG, RESUMED_FROM_TAG, SCHEMA_VERSION
from lightning_scaling.schedules.flops import transformer_training_flops

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Optimizer, Trainer
from lightning_scaling.callbacks._state import check_state_version
from lightning_scaling.callbacks._types import ParamsBasis, PositiveInt

STATE_VERSION = 2
MAX_BEST = 20  # loss metrics whose lowest value is kept


class ScalingTracker(Callback):
    """Log data seen, FLOPs, parameter counts and the average non-zero parameter count to the trainer's loggers.

    Args:
        log_every_n_steps: logging interval in optimizer steps (default: the trainer's `log_every_n_steps`).
        tokens_fn: data in a batch, for every callback of the run (give it to one; default: non-pad tokens of the
            input ids, or samples for floating-point inputs).
        input_fn: the model input of a batch, for the analytic FLOPs' context length (default as for tokens).
        flops_fn: `flops_fn(module, batch) -> int`, training FLOPs of a batch, replacing the measurement.
        params_basis: which parameters N counts: "non_embedding" (Kaplan et al. 2020) or "total".

    Example::

        trainer = pl.Trainer(logger=MLFlowLogger(tracking_uri="sqlite:///mlflow.db"), callbacks=[ScalingTracker()])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "log_every_n_steps": Integer(1, or_none=True), "params_basis": Choice.of(ParamsBasis)}

    def __init__(
        self,
        log_every_n_steps: PositiveInt | None = None,
        tokens_fn: Callable | None = None,
        input_fn: Callable | None = None,
        flops_fn: Callable | None = None,
        params_basis: ParamsBasis = "non_embedding",
    ):
        v = validate(self._parameter_constraints, log_every_n_steps=log_every_n_steps, params_basis=params_basis)
        self.log_every_n_steps = v["log_every_n_steps"]
        self.tokens_fn = tokens_fn
        self.input_fn = input_fn or default_input
        self.flops_fn = flops_fn
        self.params_basis = v["params_basis"]
        self.clock = RunClock()
        # exact totals (global over ranks), as of the last flush
        self.flops = 0
        self.flops_analytic = 0
        self.nonzero_weighted = 0  # sum over micro-batches of non-zero count x tokens
        self.nonzero_tokens = 0  # the tokens of that mean
        self.params_nonzero = 0
        self.param_counts: dict[str, int] = {}
        # since the last flush: local, ints or device tensors
        self._flops = 0
        self._flops_analytic = 0
        self._weighted = 0
        self._tokens = 0
        self._nonzero_now = 0  # global non-zero count of the weights the current micro-batch sees
        self._mask_version = None
        self._sharded = False
        self.step_flops = StepFlops()
        self._measuring = None  # the batch whose step is being measured
        self._flops_failed = False
        self._stepped = False
        self._basis: list[torch.Tensor] = []
        self._shape: tuple[int, int] | None = None
        self._last_logged_step = -1
        self._unit_logged = False
        self._trainer = None  # weak reference, for flushing at a checkpoint
        self.run_id: str | None = None  # the tracking run this tracker writes to (MLflow)
        self.best: dict[str, float] = {}  # lowest value of each loss metric at a validation
        self._restored_run_id: str | None = None  # the run a resumed checkpoint was written by

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key()  # identity only: a changed `params_basis` is refused on resume

    # -- derived values ---------------------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        """D so far: exact global data count as of the last flush."""
        return self.clock.exact_tokens

    @property
    def params_avg(self) -> float:
        """N_avg so far: token-weighted mean of the non-zero basis parameters (Jin et al. 2025)."""
        return self.nonzero_weighted / self.nonzero_tokens if self.nonzero_tokens else float("nan")

    @property
    def params_basis_count(self) -> int:
        return self.param_counts.get(self.params_basis, 0)

    def metrics(self) -> dict[str, float]:
        basis = self.params_basis_count
        return {
            schema.TOKENS: float(self.tokens),
            schema.FLOPS: float(self.flops),
            schema.FLOPS_ANALYTIC: float(self.flops_analytic),
            schema.PARAMS_NONZERO: float(self.params_nonzero),
            schema.PARAMS_AVG: float(self.params_avg),
            schema.SPARSITY: 1.0 - self.params_nonzero / basis if basis else 0.0,
        }

    # -- hooks ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_strategy(trainer, "ScalingTracker")
            keep_credentials_out_of_output(trainer)
            self.clock = clock_of(trainer, "ScalingTracker", self.tokens_fn)
            self._trainer = weakref.ref(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after every strategy has wrapped the model and restored the checkpoint: full counts of what is trained
        counts = count_params(pl_module)
        self.param_counts = dict(counts)
        self._basis = basis_parameters(pl_module, self.params_basis)
        self._sharded = is_sharded(self._basis)
        self._shape = _transformer_shape(pl_module)
        # a fresh run is dense until weights are pruned: exact zeros of the initialisation (zero biases, a
        # zero-initialised readout) are not sparsity, and they move at the first step; a resumed run counts at its
        # first batch, once every callback has restored its masks
        self._nonzero_now = self.params_basis_count
        self._mask_version = None if self._restored_run_id is not None or trainer.ckpt_path else self.clock.mask_version
        self.run_id = next((run_id_of(lg) for lg in trainer.loggers if run_id_of(lg)), None)
        if trainer.is_global_zero:
            params = {schema.params_count_key(k): v for k, v in counts.items()}
            params[schema.PARAMS_BASIS] = self.params_basis
            for logger in trainer.loggers:
                logger.log_hyperparams(params)
                log_schema(logger, SCHEMA_VERSION)
                # lineage: a run resumed from another run's checkpoint continues its counters, and supersedes it
                if self._restored_run_id and run_id_of(logger) and self._restored_run_id != run_id_of(logger):
                    set_run_tags(logger, {RESUMED_FROM_TAG: self._restored_run_id})

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0:  # weights may have been pruned at the epoch's end (e.g. by ModelPruning)
            self._mask_version = None

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        self.clock.add_batch(trainer, batch, batch_idx)
        if self._mask_version != self.clock.mask_version:  # weights were pruned: recount, on the device
            self._mask_version = self.clock.mask_version
            self._nonzero_now = self._count_nonzero(trainer)
        if self.flops_fn is None and not self._flops_failed and self.step_flops.lookup(batch) is None:
            self._start_measuring(trainer, pl_module, batch)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        self.clock.close_step(trainer)
        self._stepped = True

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._measuring is not None:
            batch, self._measuring = self._measuring, None
            try:
                self.step_flops.stop(batch)
            except Exception as err:  # a counting helper never ends a run
                self._give_up_measuring(trainer, err)

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if self._measuring is not None:  # the step had no backward pass: nothing measured
            self._measuring = None
            self.step_flops.abort()
        tokens = self.clock.batch_tokens
        self._tokens = self._tokens + tokens
        self._flops += self._batch_flops(pl_module, batch)
        self._flops_analytic = self._flops_analytic + self._batch_flops_analytic(batch, tokens)
        self._weighted = self._weighted + self._nonzero_now * tokens
        stepped, self._stepped = self._stepped, False
        step = trainer.global_step
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if stepped and step % every == 0 and step != self._last_logged_step:
            self._flush(trainer)
            self._log(trainer, step)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for key, value in trainer.callback_metrics.items():  # read once per validation, not in training steps
            if "loss" not in key or len(self.best) >= MAX_BEST and key not in self.best:
                continue
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue
                value = value.item()
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.best[key] = min(float(value), self.best.get(key, math.inf))

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)
        self._log(trainer, trainer.global_step)  # the final values, unless this step was just logged
        if trainer.is_global_zero:  # training ended normally: the run counts before MLflow marks it FINISHED
            tags = {COMPLETE_TAG: "true"}
            if self.best:
                tags[BEST_TAG] = json.dumps(self.best, sort_keys=True)
            for logger in trainer.loggers:
                set_run_tags(logger, tags)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception) -> None:
        if self._measuring is not None:
            self._measuring = None
            self.step_flops.abort()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            release_clock(trainer)
            self._trainer = None

    # -- internals --------------------------------------------------------------------------------------------
    def _start_measuring(self, trainer, pl_module, batch) -> None:
        estimate = plugins.estimate_flops(pl_module, batch)
        if estimate is not None:  # a plugin answers for this model: recorded as if measured
            self.step_flops.record(batch, int(estimate))
            return
        try:
            self.step_flops.start()
            self._measuring = batch
        except Exception as err:
            self._give_up_measuring(trainer, err)

    def _give_up_measuring(self, trainer, err: BaseException) -> None:
        self._flops_failed = True
        self.step_flops.abort()
        warn_rank_zero(trainer, f"ScalingTracker could not measure the training FLOPs ({type(err).__name__}: {err}); "
                                "`scaling/flops` falls back to the analytic count (6 N D plus attention). Pass "
                                "`flops_fn` to give the count yourself.")

    def _batch_flops(self, pl_module, batch) -> int:
        if self.flops_fn is not None:
            return int(self.flops_fn(pl_module, batch))
        if not self._flops_failed:
            flops = self.step_flops.lookup(batch)
            if flops is not None:
                return flops
        analytic = self._batch_flops_analytic(batch, self.clock.batch_tokens)
        return int(analytic.item()) if isinstance(analytic, torch.Tensor) else int(analytic)

    def _batch_flops_analytic(self, batch, tokens):
        N = self.param_counts.get("non_embedding", 0)
        if self._shape is None:
            per_token = transformer_training_flops(N, 1)
        else:
            n_layer, d_model = self._shape
            x = self.input_fn(batch)
            T = int(x.shape[-1]) if x.dim() > 1 else int(x.numel())  # the context actually attended over
            per_token = transformer_training_flops(N, 1, n_layer, T, d_model)
        if isinstance(tokens, torch.Tensor):
            return tokens.to(torch.float64) * per_token
        return int(round(per_token * tokens))

    def _count_nonzero(self, trainer):
        """The basis' non-zero count: a device tensor (summed over shards for a sharded model)."""
        count = count_nonzero(self._basis)
        if self._sharded and trainer.world_size > 1:
            count = trainer.strategy.reduce(count, reduce_op="sum")
        return count

    def _flush(self, trainer) -> None:
        """Move the local counters into the global totals: the tracker's only host read (and collective)."""
        nonzero = count_nonzero(self._basis) if self._basis else 0
        reduced = self.clock.sync(trainer, [self._flops, self._flops_analytic, self._weighted, self._tokens,
                                            nonzero if self._sharded else 0])
        flops, analytic, weighted, tokens, nonzero_sum = (int(round(v)) for v in reduced)
        self.flops += flops
        self.flops_analytic += analytic
        self.nonzero_weighted += weighted
        self.nonzero_tokens += tokens
        if self._sharded:
            self.params_nonzero = nonzero_sum
        else:
            self.params_nonzero = int(nonzero.item()) if isinstance(nonzero, torch.Tensor) else int(nonzero)
        if self._mask_version == self.clock.mask_version:  # nothing pruned since the count: go on with host ints
            self._nonzero_now = self.params_nonzero
        self._flops = self._flops_analytic = self._weighted = self._tokens = 0

    def _log(self, trainer, step: int) -> None:
        if step == self._last_logged_step:
            return
        self._last_logged_step = step
        if trainer.is_global_zero:
            metrics = self.metrics()
            for logger in trainer.loggers:
                if not self._unit_logged and self.clock.unit:
                    logger.log_hyperparams({schema.DATA_UNIT: self.clock.unit})
                logger.log_metrics(metrics, step=step)
            self._unit_logged = self._unit_logged or bool(self.clock.unit)

    # -- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict:
        # Checkpoints are written on every rank's call, so the counters since the last flush can be reduced here;
        # the totals are integer sums, which do not depend on when they are flushed.
        trainer = running_trainer(self._trainer)
        if trainer is not None:
            self._flush(trainer)
        return {
            "version": STATE_VERSION,
            "params_basis": self.params_basis,
            "clock": self.clock.state_dict(),
            "flops": self.flops,
            "flops_analytic": self.flops_analytic,
            "nonzero_weighted": self.nonzero_weighted,
            "nonzero_tokens": self.nonzero_tokens,
            "params_nonzero": self.params_nonzero,
            "last_logged_step": self._last_logged_step,
            "run_id": self.run_id,
            "best": dict(self.best),
        }

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("ScalingTracker", state_dict, STATE_VERSION)
        if state_dict["params_basis"] != self.params_basis:
            raise ConfigurationError(
                f"the checkpoint's ScalingTracker counted N as params_basis={state_dict['params_basis']!r}, this one "
                f"counts {self.params_basis!r}: N_avg would mix both; resume with "
                f"params_basis={state_dict['params_basis']!r} (or start a new run)"
            )
        self.clock.load_state_dict(state_dict["clock"])
        for key in ("flops", "flops_analytic", "nonzero_weighted", "nonzero_tokens", "params_nonzero"):
            setattr(self, key, state_dict[key])
        self._last_logged_step = state_dict["last_logged_step"]
        self._restored_run_id = state_dict.get("run_id")
        self.best = dict(state_dict.get("best", {}))


def _transformer_shape(module) -> tuple[int, int] | None:
    """(n_layer, d_model) when the module declares them (with a context length) as attributes or hyperparameters."""
    hparams = getattr(module, "hparams", {}) or {}
    values = []
    for name, alt in (("n_layer", "n_layer"), ("n_ctx", "seq_len"), ("d_model", "d_model")):
        value = getattr(module, name, None)
        if value is None:
            value = hparams.get(name, hparams.get(alt))
        if not isinstance(value, int):
            return None
        values.append(value)
    return values[0], values[2]
