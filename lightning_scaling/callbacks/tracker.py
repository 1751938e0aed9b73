"""`ScalingTracker`: log what the scaling law needs (tokens, FLOPs, parameter counts, N_avg) as the run goes.

Metrics (step = global step), logged every `log_every_n_steps` optimizer steps and once more when training ends:

    scaling/tokens            tokens seen, all ranks and accumulation micro-batches (D)
    scaling/flops             training FLOPs measured with FlopCounterMode, forward + backward (C)
    scaling/flops_analytic    6 N D plus the attention term when the model declares n_layer, n_ctx, d_model
    scaling/params_nonzero    non-zero parameters of the basis now
    scaling/params_avg        token-weighted mean of non-zero parameters over training (N_avg, Jin et al. 2025)
    scaling/sparsity          1 - params_nonzero / basis parameters

Parameters, logged once at fit start: `scaling/params_total`, `scaling/params_embedding`,
`scaling/params_non_embedding`, `scaling/params_basis` (which of them N counts); and the run tag
`lightning_scaling.schema` = `1` (a hyperparameter for loggers without tags); a run resumed from another run's
checkpoint is tagged `lightning_scaling.resumed_from` = that run's id. The closing hook reads exactly this.

Cost: tokens come from tensor shapes (no sync); FLOPs are measured once per batch shape on a meta-device copy; the
non-zero count is a device-side reduction accumulated on the device. The only host syncs are at the logging
interval: one `.item()` of the accumulated count and, on several ranks, one small all-reduce of the counters.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from pytorch_lightning import Callback

from .. import plugins
from ..errors import ConfigurationError
from ..flops import transformer_training_flops
from ..integrations.loggers import RESUMED_FROM_TAG, log_schema, run_id_of, set_run_tags
from ..measure import (
    PARAMS_BASES,
    basis_parameters,
    count_nonzero,
    count_params,
    default_input,
    default_tokens,
    measure_training_flops,
)

from ._state import check_state_version
from ._types import ParamsBasis, PositiveInt

STATE_VERSION = 1
SCHEMA_VERSION = "1"
METRIC_KEYS = (
    "scaling/tokens", "scaling/flops", "scaling/flops_analytic", "scaling/params_nonzero", "scaling/params_avg",
    "scaling/sparsity",
)
PARAM_KEYS = ("scaling/params_total", "scaling/params_embedding", "scaling/params_non_embedding",
              "scaling/params_basis")


class ScalingTracker(Callback):
    """Log tokens, FLOPs, parameter counts and the average non-zero parameter count to the trainer's loggers.

    Args:
        log_every_n_steps: logging interval in optimizer steps (default: the trainer's `log_every_n_steps`).
        tokens_fn: tokens in a batch (default: elements of `batch[0]` / `batch["input_ids"]`).
        input_fn: the model input of a batch, for the FLOP measurement (default as for tokens).
        flops_fn: `flops_fn(module, batch) -> int`, training FLOPs of a batch, replacing the measurement.
        params_basis: which parameters N counts: "non_embedding" (Kaplan et al. 2020) or "total".

    Example::

        trainer = pl.Trainer(logger=MLFlowLogger(tracking_uri="sqlite:///mlflow.db"), callbacks=[ScalingTracker()])
    """

    def __init__(
        self,
        log_every_n_steps: PositiveInt | None = None,
        tokens_fn: Callable | None = None,
        input_fn: Callable | None = None,
        flops_fn: Callable | None = None,
        params_basis: ParamsBasis = "non_embedding",
    ):
        if log_every_n_steps is not None and not (isinstance(log_every_n_steps, int) and log_every_n_steps >= 1):
            raise ConfigurationError(f"`log_every_n_steps` must be an integer >= 1 or None, got {log_every_n_steps!r}")
        if params_basis not in PARAMS_BASES:
            raise ConfigurationError(f"`params_basis` must be one of {PARAMS_BASES}, got {params_basis!r}")
        self.log_every_n_steps = log_every_n_steps
        self.tokens_fn = tokens_fn or default_tokens
        self.input_fn = input_fn or default_input
        self.flops_fn = flops_fn
        self.params_basis = params_basis
        # exact host-side totals (global over ranks), as of the last flush
        self.tokens = 0
        self.flops = 0
        self.flops_analytic = 0
        self.nonzero_weighted = 0  # sum over micro-batches of non-zero count x local tokens
        self.nonzero_tokens = 0  # sum of local tokens in that mean
        self.params_nonzero = 0
        self.param_counts: dict[str, int] = {}
        # since the last flush: local, not yet reduced
        self._tokens = 0
        self._flops = 0
        self._flops_analytic = 0
        self._weighted = None  # device tensor: sum of non-zero count x tokens
        self._nonzero_now = None  # device tensor: non-zero count of the current optimizer step
        self._step_open = False
        self._flops_cache: dict[tuple, int] = {}
        self._basis: list[torch.Tensor] = []
        self._shape: tuple[int, int, int] | None = None
        self._last_logged_step = -1
        self._attached = None  # weak reference to the module being trained
        self.run_id: str | None = None  # the tracking run this tracker writes to (MLflow)
        self._restored_run_id: str | None = None  # the run a resumed checkpoint was written by

    @property
    def state_key(self) -> str:
        return self._generate_state_key(params_basis=self.params_basis)

    # -- derived values ---------------------------------------------------------------------------------------
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
            "scaling/tokens": float(self.tokens),
            "scaling/flops": float(self.flops),
            "scaling/flops_analytic": float(self.flops_analytic),
            "scaling/params_nonzero": float(self.params_nonzero),
            "scaling/params_avg": float(self.params_avg),
            "scaling/sparsity": 1.0 - self.params_nonzero / basis if basis else 0.0,
        }

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self._attached = weakref.ref(pl_module)
        counts = count_params(pl_module)
        self.param_counts = {**counts}
        self._basis = basis_parameters(pl_module, self.params_basis)
        self._shape = _transformer_shape(pl_module)
        self.run_id = next((run_id_of(lg) for lg in trainer.loggers if run_id_of(lg)), None)
        if trainer.is_global_zero:
            params = {f"scaling/params_{k}": v for k, v in counts.items()}
            params["scaling/params_basis"] = self.params_basis
            for logger in trainer.loggers:
                logger.log_hyperparams(params)
                log_schema(logger, SCHEMA_VERSION)
                # lineage: a run resumed from another run's checkpoint continues its counters, and supersedes it
                if self._restored_run_id and run_id_of(logger) and self._restored_run_id != run_id_of(logger):
                    set_run_tags(logger, {RESUMED_FROM_TAG: self._restored_run_id})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._step_open:  # first micro-batch of an optimizer step: the weights these tokens see
            self._nonzero_now = count_nonzero(self._basis)
            self._step_open = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._step_open = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tokens = int(self.tokens_fn(batch))
        self._tokens += tokens
        self._flops += self._batch_flops(pl_module, batch)
        self._flops_analytic += self._batch_flops_analytic(batch, tokens)
        weighted = self._nonzero_now * tokens
        self._weighted = weighted if self._weighted is None else self._weighted + weighted
        step = trainer.global_step
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if not self._step_open and step % every == 0 and step != self._last_logged_step:
            self._flush(trainer, pl_module)
            self._log(trainer, step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)
        self._log(trainer, trainer.global_step)  # the final values, unless this step was just logged
        self._attached = None

    # -- internals --------------------------------------------------------------------------------------------
    def _batch_flops(self, pl_module, batch) -> int:
        if self.flops_fn is not None:
            return int(self.flops_fn(pl_module, batch))
        x = self.input_fn(batch)
        key = (tuple(x.shape), x.dtype)
        if key not in self._flops_cache:  # once per batch shape: a plugin's estimate, else the measurement
            estimate = plugins.estimate_flops(pl_module, batch)
            self._flops_cache[key] = int(estimate) if estimate is not None else measure_training_flops(pl_module, x)
        return self._flops_cache[key]

    def _batch_flops_analytic(self, batch, tokens: int) -> int:
        N = self.param_counts.get("non_embedding", 0)
        if self._shape is None:
            return int(transformer_training_flops(N, tokens))
        n_layer, _, d_model = self._shape
        x = self.input_fn(batch)
        T = int(x.shape[-1]) if x.dim() > 1 else int(x.numel())  # the context actually attended over
        return int(transformer_training_flops(N, tokens, n_layer, T, d_model))

    def _flush(self, trainer, pl_module) -> None:
        """Move the local counters into the global totals: the only host sync (and collective) of the tracker."""
        tokens, flops, analytic = self._tokens, self._flops, self._flops_analytic
        if trainer.world_size > 1:
            counts = torch.tensor([tokens, flops, analytic], dtype=torch.float64, device=pl_module.device)
            tokens, flops, analytic = (int(round(v)) for v in trainer.strategy.reduce(counts, "sum").tolist())
        self.tokens += tokens
        self.flops += flops
        self.flops_analytic += analytic
        if self._weighted is not None:
            self.nonzero_weighted += int(self._weighted.item())
            self.nonzero_tokens += self._tokens
        self.params_nonzero = int(count_nonzero(self._basis).item()) if self._basis else 0
        self._tokens = self._flops = self._flops_analytic = 0
        self._weighted = None

    def _log(self, trainer, step: int) -> None:
        if step == self._last_logged_step:
            return
        self._last_logged_step = step
        if trainer.is_global_zero:
            metrics = self.metrics()
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    # -- checkpointing ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        # Checkpoints are written on every rank's call, so the counters since the last flush can be reduced here;
        # the totals are integer sums, which do not depend on when they are flushed.
        attached = self._attached() if self._attached is not None else None
        if attached is not None:
            self._flush(attached.trainer, attached)
        return {
            "version": STATE_VERSION,
            "tokens": self.tokens,
            "flops": self.flops,
            "flops_analytic": self.flops_analytic,
            "nonzero_weighted": self.nonzero_weighted,
            "nonzero_tokens": self.nonzero_tokens,
            "params_nonzero": self.params_nonzero,
            "last_logged_step": self._last_logged_step,
            "run_id": self.run_id,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("ScalingTracker", state_dict, STATE_VERSION)
        for key in ("tokens", "flops", "flops_analytic", "nonzero_weighted", "nonzero_tokens", "params_nonzero"):
            setattr(self, key, state_dict[key])
        self._last_logged_step = state_dict["last_logged_step"]
        self._restored_run_id = state_dict.get("run_id")


def _transformer_shape(module) -> tuple[int, int, int] | None:
    """(n_layer, n_ctx, d_model) when the module declares them as attributes or hyperparameters."""
    hparams = getattr(module, "hparams", {}) or {}
    values = []
    for name, alt in (("n_layer", "n_layer"), ("n_ctx", "seq_len"), ("d_model", "d_model")):
        value = getattr(module, name, None)
        if value is None:
            value = hparams.get(name, hparams.get(alt))
        if not isinstance(value, int):
            return None
        values.append(value)
    return tuple(values)
