"""`LossForecast`: the run's final loss forecast at each validation, and runs stopped when hopeless.

At the start of training (rank zero) the callback reads the curves of the experiment's other runs from the
MLflow store (the loss metric's history and `scaling/lr`) and fits the annealing law's shape on them once
(`curves.forecast.Forecaster`), and fits the scaling law L(N, D) across their final losses. At each validation it
forecasts this run's loss at the end of its budget from its own curve so far and the learning rates to come,
stacked with the law across the other runs' final losses at this run's N and token budget (`curves.stacking`: the law
carries the forecast early in the run, the curve near its end, as fits the other runs best), and logs
`scaling/forecast_final_loss` with `_low` and `_high` (the interval at `confidence`). A forecast costs a few
least-squares solves: milliseconds, only at validations (the law across runs and each run's error without it
are fitted once, at the start of training).

When the whole interval lies above what the law across runs predicts for this run's size and budget (the law's
loss plus twice the runs' rms scatter around it; a law with a parameter on a bound is trusted only inside the
runs' range of sizes and budgets), it warns once,
and with `stop_if_hopeless=True` it stops the run and tags it `lightning_scaling.stopped_early` with the reason: the
run store then leaves its last loss out of the law (it is not the loss of its budget) and keeps its curve for
forecasts.

The learning rates to come: from `PowerLR`'s schedule when it drives the run; from a `LambdaLR` scheduler's lambda
(cosine, WSD and warmup schedules are usually written so); otherwise they are taken as constant at the current
rate, with a warning, since the forecast then leaves a planned decay out.
"""

from __future__ import annotations

import math
import time
import warnings
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from lightning_scaling.callbacks._clock import clock_of
from lightning_scaling.callbacks._types import NonNegativeInt, OpenUnitInterval
from lightning_scaling.integrations.lightning import Callback, override
from lightning_scaling.options import OPEN_UNIT, Constraint, Flag, Integer, Interval, Name, validate
from lightning_scaling.runs.schema import LR, STOPPED_EARLY_TAG
from lightning_scaling.runs.secrets import redact

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Trainer

FORECAST = "scaling/forecast_final_loss"
PLANNED_POINTS = 200  # points of the planned rest of the run given to the law
HISTORY_POINTS = 2000  # points of the run's own learning-rate history given to the law (at most)
MIN_LAW_RUNS = 5  # finished runs below which no law across runs is fitted to judge a forecast


class LossForecastWarning(UserWarning):
    """A forecast above the law across runs, or a forecast that could not be made."""


class LossForecast(Callback):
    """Forecast the run's final loss at each validation from its curve so far and the store's other runs.

    Args:
        confidence: central probability of the logged interval, in (0, 1).
        stop_if_hopeless: stop the run when the whole interval lies above the law across runs.
        loss_key: the validation metric forecast (default "val_loss").
        min_progress: the share of the run's steps before which nothing is forecast.
        max_pool_runs: the most recent runs whose curves are read at the start.
        momentum: the annealing momentum (default: fitted on the other runs' curves).

    Example::

        trainer = L.Trainer(logger=MLFlowLogger(tracking_uri="sqlite:///mlflow.db"), max_steps=2000,
                            callbacks=[ScalingTracker(), PowerLR(), LossForecast(stop_if_hopeless=True)])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "confidence": OPEN_UNIT,
        "stop_if_hopeless": Flag(),
        "loss_key": Name(text="a metric name"),
        "min_progress": Interval(0, 1, closed="left"),
        "max_pool_runs": Integer(0),
        "momentum": Interval(0, 1, closed="left", or_none="fitted"),  # the annealing law's momentum, in [0, 1)
    }

    def __init__(self, confidence: OpenUnitInterval = 0.8, stop_if_hopeless: bool = False,
                 loss_key: str = "val_loss", min_progress: float = 0.1, max_pool_runs: NonNegativeInt = 64,
                 momentum: float | None = None):
        v = validate(self._parameter_constraints, confidence=confidence, stop_if_hopeless=stop_if_hopeless,
                     loss_key=loss_key, min_progress=min_progress, max_pool_runs=max_pool_runs, momentum=momentum)
        self.confidence = float(v["confidence"])
        self.stop_if_hopeless = v["stop_if_hopeless"]
        self.loss_key = v["loss_key"]
        self.min_progress = float(v["min_progress"])
        self.max_pool_runs = v["max_pool_runs"]
        self.momentum = v["momentum"]
        self.forecaster = None
        self.law = None  # the scaling law across the store's runs (a fitted estimator), when there is one
        self.last = None  # the last forecast (`curves.forecast.Forecast`)
        self.seconds: list[float] = []  # time of each forecast
        self.stopped: str | None = None
        self._lr_steps, self._lr = array("d"), array("d")
        self._val_steps, self._val = array("d"), array("d")
        self._warned: set[str] = set()
        self._power = None  # the trainer's PowerLR, when it has one (set in `setup`)
        self._N = None  # the run's N as the tracker counts it, read at the first forecast

    # -- hooks ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            from lightning_scaling.callbacks.power_lr import PowerLR

            self.clock = clock_of(trainer, "LossForecast")
            # the callback that drives the learning rate, looked up once: its rate is read at every step
            self._power = next((c for c in trainer.callbacks if isinstance(c, PowerLR)), None)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from lightning_scaling.curves.forecast import Forecaster
        from lightning_scaling.integrations.loggers import mlflow_logger

        logger = mlflow_logger(trainer)
        pool = []
        if logger is not None:
            try:
                from lightning_scaling.integrations.mlflow_store import MLflowRunStore

                store = MLflowRunStore(logger.experiment.tracking_uri, experiment_id=logger.experiment_id,
                                       loss_key=self.loss_key)
                selection = store.select(current_run_id=logger.run_id)
                pool = store.curves(selection, self.max_pool_runs) if self.max_pool_runs else []
                self.law = _law_across(selection.used)
            except Exception as err:  # the store unreachable: forecast from this run's curve alone
                self._warn(trainer, "store", f"LossForecast read no other runs ({type(err).__name__}: {err}); "
                                             "forecasts use this run's curve alone")
        try:
            self.forecaster = Forecaster(pool, confidence=self.confidence, momentum=self.momentum)
        except Exception as err:
            self._warn(trainer, "pool", f"LossForecast could not fit the other runs' curves ({err}); forecasts use "
                                        "this run's curve alone")
            self.forecaster = Forecaster([], confidence=self.confidence, momentum=self.momentum)

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step and (not self._lr_steps or self._lr_steps[-1] < step):
            self._lr_steps.append(step)
            self._lr.append(self._base_lr(trainer))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.forecaster is None:
            return
        value = trainer.callback_metrics.get(self.loss_key)
        step = trainer.global_step
        if value is None or step < 1:
            return
        loss = float(value)
        if not math.isfinite(loss) or loss <= 0 or (self._val_steps and self._val_steps[-1] >= step):
            return
        self._val_steps.append(step)
        self._val.append(loss)
        final = _final_step(trainer)
        from lightning_scaling.curves.forecast import MIN_ALONE, MIN_OBSERVED

        needed = MIN_OBSERVED if self.forecaster.shape is not None else MIN_ALONE
        if final is None or step >= final or step < self.min_progress * final or len(self._val) < needed:
            return  # not yet (or past the end)
        t0 = time.perf_counter()
        try:
            fc = self.forecaster.forecast(self._curve(trainer, final))
        except Exception as err:  # too few points yet, a degenerate curve: no forecast this time
            self._warn(trainer, "forecast", f"LossForecast made no forecast at step {step}: {err}")
            return
        self.seconds.append(time.perf_counter() - t0)
        self.last = fc
        point, low, high = fc.final
        if not all(math.isfinite(v) for v in (point, low, high)):
            return
        metrics = {FORECAST: point, f"{FORECAST}_low": low, f"{FORECAST}_high": high}
        if self._power is None or not self._power.log_lr:  # PowerLR logs `scaling/lr` itself
            metrics[LR] = self._lr[-1] if self._lr else self._base_lr(trainer)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        self._judge(trainer, pl_module, fc, step, final)

    # -- the parts --------------------------------------------------------------------------------------------
    def _curve(self, trainer, final: int):
        """This run as a `Curve`: its learning rates so far (thinned), its validation losses, the planned rest."""
        import numpy as np

        from lightning_scaling.curves.forecast import Curve

        lr_steps = np.frombuffer(self._lr_steps, dtype=float) if self._lr_steps else np.array([1.0])
        lrs = np.frombuffer(self._lr, dtype=float) if self._lr else np.array([self._base_lr(trainer)])
        if len(lr_steps) > HISTORY_POINTS:
            keep = np.unique(np.linspace(0, len(lr_steps) - 1, HISTORY_POINTS).astype(int))
            lr_steps, lrs = lr_steps[keep], lrs[keep]
        val_steps = np.frombuffer(self._val_steps, dtype=float)
        now = float(val_steps[-1])
        planned = np.unique(np.linspace(now, final, PLANNED_POINTS + 1)[1:].round())
        planned = planned[planned > now]
        past = np.union1d(lr_steps[lr_steps <= now], val_steps)
        steps = np.concatenate([past, planned])
        lr = np.concatenate([np.interp(past, lr_steps, lrs), self._planned_lr(trainer, planned)])
        loss = np.full(len(steps), np.nan)
        loss[np.searchsorted(steps, val_steps)] = np.frombuffer(self._val, dtype=float)
        # its N and tokens at each step, at the run's planned rate: the law across runs forecasts its final loss too
        D = self.clock.run_tokens(trainer, "LossForecast") if self.clock is not None else None
        if self._N is None:
            self._N = _params(trainer, trainer.lightning_module) or 0.0
        return Curve("this run", steps, np.maximum(lr, 0.0), loss, tokens=steps * (D / final) if D else None,
                     params=self._N or None)

    def _planned_lr(self, trainer, steps):
        """The learning rate at the planned steps (module docstring)."""
        import numpy as np

        power = self._power
        if power is not None and power.schedule is not None and trainer.global_step > 0:
            per_step = power.clock.tokens / trainer.global_step
            return np.array([power.schedule.lr(s * per_step) for s in steps])
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        if configs:
            from torch.optim.lr_scheduler import LambdaLR

            config = configs[0]
            scheduler = config.scheduler
            if isinstance(scheduler, LambdaLR) and getattr(config, "interval", "epoch") == "step":
                base = scheduler.base_lrs[0]
                return np.array([base * scheduler.lr_lambdas[0](int(s)) for s in steps])
        self._warn(trainer, "schedule", "LossForecast does not know the learning rates to come (no PowerLR, no "
                                        "per-step LambdaLR): they are taken as constant, which leaves a planned "
                                        "decay's gain out of the forecast")
        return np.full(len(steps), self._base_lr(trainer))

    def _judge(self, trainer, pl_module, fc, step: int, final: int) -> None:
        """Warn (and stop, with `stop_if_hopeless`) when the whole interval lies above the law across runs."""
        if self.law is None or self.stopped:
            return
        N = _params(trainer, pl_module)
        D = self.clock.run_tokens(trainer, "LossForecast") if self.clock is not None else None
        if not N or not D:
            return
        expected = self.law.expected(float(N), float(D))
        point, low, high = fc.final
        if expected is None or low <= expected * (1.0 + 2.0 * self.law.scatter):
            return
        message = (f"forecast {point:.4g} [{low:.4g}, {high:.4g}] at {step / final:.0%} of the run; the law predicts "
                   f"{expected:.4g} for this size and budget ({N:.3g} parameters, {D:.3g} tokens): check the "
                   "learning rate")
        self._warn(trainer, "hopeless", f"LossForecast: {message}")
        if self.stop_if_hopeless:
            self.stopped = message
            trainer.should_stop = True
            from lightning_scaling.integrations.loggers import mlflow_logger, set_run_tags

            logger = mlflow_logger(trainer)
            if logger is not None:
                set_run_tags(logger, {STOPPED_EARLY_TAG: redact(message)})

    def _warn(self, trainer, key: str, message: str) -> None:
        if key in self._warned or not trainer.is_global_zero:
            return
        self._warned.add(key)
        warnings.warn(redact(message), LossForecastWarning, stacklevel=2)

    def _base_lr(self, trainer) -> float:
        """The base learning rate: `PowerLR`'s when it drives the run (muP multipliers apart), else the first
        group's."""
        power = self._power
        if power is not None and isinstance(power.lr, float) and math.isfinite(power.lr):
            return float(power.lr)
        return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else math.nan

    # -- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict:
        return {"version": 1, "lr_steps": list(self._lr_steps), "lr": list(self._lr),
                "val_steps": list(self._val_steps), "val": list(self._val), "stopped": self.stopped}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self._lr_steps, self._lr = array("d", state_dict["lr_steps"]), array("d", state_dict["lr"])
        self._val_steps, self._val = array("d", state_dict["val_steps"]), array("d", state_dict["val"])
        self.stopped = state_dict.get("stopped")


def _final_step(trainer) -> int | None:
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    total = getattr(trainer, "estimated_stepping_batches", None)
    return int(total) if isinstance(total, (int, float)) and math.isfinite(total) and total > 0 else None


def _params(trainer, pl_module) -> float | None:
    """N as the tracker counts it (its basis), or every parameter without a tracker."""
    from lightning_scaling.callbacks.tracker import ScalingTracker

    tracker = next((c for c in trainer.callbacks if isinstance(c, ScalingTracker)), None)
    counts = getattr(tracker, "param_counts", None)
    if tracker is not None and counts:
        return float(counts.get(tracker.params_basis) or counts.get("total") or 0) or None
    return float(sum(p.numel() for p in pl_module.parameters())) or None


@dataclass
class LawAcross:
    """The scaling law over the store's final losses, as `LossForecast` judges a forecast with it."""

    fit: object  # a fitted `ChinchillaFit`
    N_range: tuple[float, float]
    D_range: tuple[float, float]
    scatter: float  # rms relative residual of the runs around the law
    degenerate: bool  # a parameter on a bound: the law is trusted only inside the runs' ranges

    def expected(self, N: float, D: float) -> float | None:
        """The law's loss at (N, D) plus twice its scatter (what a run like the others reaches), or None where
        a degenerate law would extrapolate."""
        inside = self.N_range[0] <= N <= self.N_range[1] and self.D_range[0] <= D <= self.D_range[1]
        if self.degenerate and not inside:
            return None
        return float(self.fit.predict([N], [D])[0])


def _law_across(records) -> LawAcross | None:
    """The Chinchilla law over the runs' final losses, when there are at least `MIN_LAW_RUNS` runs."""
    if len(records) < MIN_LAW_RUNS:
        return None
    import numpy as np

    from lightning_scaling.law.fit import ChinchillaFit

    N = np.array([r.params for r in records], float)
    D = np.array([r.tokens for r in records], float)
    L = np.array([r.loss for r in records], float)
    fit = ChinchillaFit(warn=False).fit(N, D, L)  # a fit on its bounds is reported below (`bool(fit.boundary_)`)
    scatter = float(np.sqrt(np.mean((L / fit.predict(N, D) - 1.0) ** 2)))
    return LawAcross(fit, (float(N.min()), float(N.max())), (float(D.min()), float(D.max())), scatter,
                     bool(fit.boundary_))
