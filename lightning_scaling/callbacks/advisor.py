"""`ScalingLawAdvisor`: the closing hook. When a run ends, refit the law over every run logged so far and say,
in the MLflow UI, what to train next.

On `on_fit_end`, on global rank zero only: read every run of the MLflow experiment (the current one is still
RUNNING), fit the law (dense N, or N_avg when any run is sparse), bootstrap it, and recommend the compute-optimal
run for the next budget (`next_flops`, or `growth` x the largest compute logged so far). The recommendation goes to
the run's description, tags and `scaling_law/` artifacts, and to the experiment's summary run `scaling-law`; every
plugin's `on_recommendation` is told.

It never harms training: any failure (MLflow unreachable, too few runs, a failed fit) becomes a warning and, where
MLflow can still be written, a note on the run saying why. The checkpoint and the run's status are not touched.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, ClassVar

from lightning_scaling.integrations.lightning import Callback, override

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Trainer

from lightning_scaling import plugins
from lightning_scaling.callbacks._types import NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, UseCurves
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.loggers import mlflow_logger
from lightning_scaling.law.form import shared_fits
from lightning_scaling.options import Constraint, Integer, Name, Positive, Resamples, validate
from lightning_scaling.planner import Family, FitOptions, NextRunOptions, Runs, StageOptions, plan_next_run, plan_sweep
from lightning_scaling.planner.family import transfers
from lightning_scaling.planner.options import (
    DEFAULT_GROWTH,
    FIRST_GROUPS,
    FIRST_SHARE,
    GROUP_SIZE,
    MIN_STEPS,
    PLAN_BOOTSTRAP,
)
from lightning_scaling.runs.records import STALE_AFTER_S
from lightning_scaling.runs.schema import SWEEP_STAGE_TAG
from lightning_scaling.runs.secrets import redact

REFITS = 3  # refits when more runs finished while this hook was fitting


class ScalingLawAdvisorWarning(UserWarning):
    """The closing hook could not produce a recommendation (training itself is unaffected)."""


class ScalingLawAdvisor(Callback):
    """Refit the scaling law over all runs of the MLflow experiment at the end of training; recommend the next run.

    Args:
        next_flops: compute budget of the next run (C = 6ND); default `growth` x the largest 6ND logged so far.
        growth: see `next_flops` (default 4).
        loss_key: the metric holding each run's final loss (default "val_loss").
        bootstrap: bootstrap replicates for the intervals (default 1000; 0 for none).
        seed: seed of the bootstrap.
        confidence: central probability of the intervals (default 0.8).
        law: "auto" (default): choose among the registered law forms by forward-chaining error, Chinchilla's
            unless another predicts the held-out runs clearly better (`evaluation.backtest.choose_form`); or the name of
            one form (built-in: "chinchilla", "exponent_interaction"; plugins may register others).
        stale_after: seconds without a new metric after which a RUNNING run is taken for a killed process and left
            out with that reason (it comes back when resumed under the same run id).
        target_flops, plan_budget: the compute of the run to size in the end and the compute to spend on small
            runs before it (all stages; the runs so far count against it). With both, the recommendation carries
            the plan (``plan`` in recommendation.json, a line in the note and in the experiment's description): the
            next stage of small runs while budget is left (`planner.plan_sweep`), and N_opt at the target
            with its interval.
        plan_min_steps: the shortest run the plan proposes, in optimizer steps of this run's size (default 100;
            runs are planned in whole steps of this run's tokens per step).
        plan_first_share, plan_first_groups, plan_group_size: the first stage, planned before the runs allow a
            fit: its share of `plan_budget`, its isoFLOP groups and the sizes in each (defaults 0.1, 3 and 5:
            `planner.stages`); a sweep that plans with other values gives them here too, so that the hook's plan
            and the sweep's agree.
        use_curves: "auto" (default): the runs' validation checkpoints, corrected for the learning-rate schedule
            (`curves.correction`), join the fit when the forward-chaining backtest predicts held-out final losses
            better with them; "always"; "never" (final losses only). ``data`` in recommendation.json says which.

    Raises:
        ConfigurationError: an argument outside its range (the message names it).

    Example::

        trainer = pl.Trainer(logger=MLFlowLogger(tracking_uri="sqlite:///mlflow.db"),
                             callbacks=[ScalingTracker(), ScalingLawAdvisor(growth=4)])
    """

    # The planner's own constraints where an argument is one of its options (`planner.options`), so both refuse alike.
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **NextRunOptions._parameter_constraints,
        "loss_key": Name(text="a metric name"),
        "bootstrap": Resamples(),
        "seed": Integer(),
        "confidence": FitOptions._parameter_constraints["confidence"],
        "law": FitOptions._parameter_constraints["law"],
        "stale_after": Positive(),
        "use_curves": FitOptions._parameter_constraints["use_curves"],
        "target_flops": Positive(or_none=True),
        "plan_budget": Positive(or_none=True),
        "plan_min_steps": StageOptions._parameter_constraints["min_steps"],
        "plan_first_share": StageOptions._parameter_constraints["first_share"],
        "plan_first_groups": StageOptions._parameter_constraints["first_groups"],
        "plan_group_size": StageOptions._parameter_constraints["group_size"],
    }

    def __init__(  # noqa: PLR0913  (its keyword arguments are the callback's YAML keys: flat, one per option)
                 self, next_flops: PositiveFloat | None = None, growth: PositiveFloat = DEFAULT_GROWTH,
                 loss_key: str = "val_loss", bootstrap: NonNegativeInt = 1000, seed: int = 0,
                 confidence: OpenUnitInterval = 0.8, law: str = "auto", stale_after: PositiveFloat = STALE_AFTER_S,
                 use_curves: UseCurves = "auto", target_flops: PositiveFloat | None = None,
                 plan_budget: PositiveFloat | None = None, plan_min_steps: PositiveInt = MIN_STEPS,
                 plan_first_share: OpenUnitInterval = FIRST_SHARE, plan_first_groups: PositiveInt = FIRST_GROUPS,
                 plan_group_size: PositiveInt = GROUP_SIZE):
        v = validate(self._parameter_constraints, next_flops=next_flops, growth=growth, loss_key=loss_key,
                     bootstrap=bootstrap, seed=seed, confidence=confidence, law=law, stale_after=stale_after,
                     use_curves=use_curves, target_flops=target_flops, plan_budget=plan_budget,
                     plan_min_steps=plan_min_steps, plan_first_share=plan_first_share,
                     plan_first_groups=plan_first_groups, plan_group_size=plan_group_size)
        if (target_flops is None) != (plan_budget is None):
            raise ConfigurationError("`target_flops` and `plan_budget` go together: give both (to plan the sweep) or "
                                     f"neither, got target_flops={target_flops!r}, plan_budget={plan_budget!r}")
        if target_flops is not None and plan_budget >= target_flops:
            raise ConfigurationError(f"`plan_budget` ({plan_budget:.3g}) must be below `target_flops` "
                                     f"({target_flops:.3g})")
        for name, value in v.items():
            setattr(self, name, value)
        self.recommendation: dict | None = None  # the last one made, for programmatic use

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logger = mlflow_logger(trainer)
        if logger is None:
            warnings.warn("ScalingLawAdvisor needs an MLFlowLogger on the Trainer to read the runs; "
                          "no recommendation was made", ScalingLawAdvisorWarning, stacklevel=2)
            return
        store = None
        try:
            from lightning_scaling.integrations.mlflow_store import MLflowRunStore

            store = MLflowRunStore(logger.experiment.tracking_uri, experiment_id=logger.experiment_id,
                                   loss_key=self.loss_key, stale_after=self.stale_after)
            if store.client.get_run(logger.run_id).data.tags.get(SWEEP_STAGE_TAG):
                store.note(logger.run_id, "### Scaling law\n\nThis run belongs to a `lightning-scaling sweep`, "
                           "which refits the law once its stage has finished (see the summary run `scaling-law`).")
                return
            self.recommendation = self.advise(store, logger.run_id, trainer, pl_module)
        except Exception as err:  # never let the closing hook harm the run
            message = redact(f"ScalingLawAdvisor could not make a recommendation: {type(err).__name__}: {err}")
            warnings.warn(message, ScalingLawAdvisorWarning, stacklevel=2)
            if store is not None:
                try:
                    store.note(logger.run_id, f"### Scaling law: no recommendation\n\n{message}")
                except Exception:  # MLflow itself is unreachable: the warning is all we can do
                    pass

    def advise(self, store, run_id: str, trainer=None, pl_module=None, family: dict | None = None) -> dict:
        """Fetch, fit, recommend and publish; returns the recommendation dict. The settings, hyperparameters and
        tokens per step are this run's (`trainer`, `pl_module`), or, outside a run, those of `family` (the model
        family's config as `integrations.read_family` reads it: what a sweep refits with).

        Runs that end together run their hooks together: when more runs have finished by the time this one has
        published than it fitted, it fits and publishes again (at most `REFITS` times), so the last hook to finish
        leaves the recommendation over all of them on the summary run; unless the summary run already holds a
        recommendation over as many runs as are usable now (another hook got there first: refitting the same runs
        in every hook would only multiply the work of runs that end together).
        """
        forms = plugins.law_forms()
        if self.law != "auto" and self.law not in forms:
            raise ConfigurationError(f"`law` must be 'auto' or one of {sorted(forms)}, got {self.law!r}")
        settings, pruning = _settings(trainer)
        hparams = dict(getattr(pl_module, "hparams", {}) or {}) if pl_module is not None else {}
        tokens_per_step = _tokens_per_step(trainer)
        if family is not None:
            settings, hparams, tokens_per_step = dict(family["settings"]), dict(family["hparams"]), \
                family["tokens_per_step"]
        read_at = time.time() * 1000
        selection = store.select(current_run_id=run_id)
        for _ in range(REFITS + 1):
            curves = (store.curves(selection, dense_lr=True, stopped=False)
                      if self.use_curves != "never" and hasattr(store, "curves") else None)
            with shared_fits():  # the recommendation and the plan fit the same runs: once
                rec = plan_next_run(
                    selection, curves=curves, forms=forms, n_bootstrap=self.bootstrap, seed=self.seed,
                    confidence=self.confidence, law=self.law, use_curves=self.use_curves, next_flops=self.next_flops,
                    growth=self.growth, pruning=pruning, settings=settings, hparams=hparams,
                    propose_architecture=plugins.propose_architecture,
                )
                rec["run_id"] = run_id
                rec["loss_key"] = self.loss_key
                if self.target_flops is not None:
                    rec["plan"] = self.plan(selection, hparams, settings, store, tokens_per_step)
            store.publish_everywhere(rec, [run_id])
            if not store.more_usable_since(selection, read_at, current_run_id=run_id):
                break
            read_at = time.time() * 1000
            selection = store.select(current_run_id=run_id)
            held = store.summary_n_runs()
            if held is not None and held >= len(selection.used):
                break
        plugins.notify_recommendation(rec)
        return rec

    def plan(self, selection, hparams: dict, settings: dict, store=None, tokens_per_step: float | None = None
             ) -> dict:
        """The next stage of the sweep from the runs used (`planner.plan_sweep`), as concrete architectures of this
        run's model where the `propose_architecture` hook knows it, in whole steps of `tokens_per_step` (this
        run's) when known; without muP and PowerLR settings to keep, the learning rate from the team's own sweeps
        in `store` (each run's peak `scaling/lr`) where it holds some."""
        lr = None
        if store is not None and not transfers(settings):  # the store's histories only where they are used
            lr = store.peak_learning_rates(selection.used)
        options = StageOptions(target_flops=self.target_flops, budget=self.plan_budget, min_steps=self.plan_min_steps,
                               first_share=self.plan_first_share, first_groups=self.plan_first_groups,
                               group_size=self.plan_group_size, n_bootstrap=min(self.bootstrap, PLAN_BOOTSTRAP),
                               seed=self.seed, confidence=self.confidence)
        family = Family(hparams=hparams, settings=settings, propose_architecture=plugins.propose_architecture,
                        tokens_per_step=tokens_per_step)
        return plan_sweep(Runs.from_selection(selection, lr=lr), options, family).to_dict()


def _tokens_per_step(trainer) -> float | None:
    """Tokens per optimizer step of this run (the tracker's clock), or None without a tracker."""
    from lightning_scaling.callbacks.tracker import ScalingTracker

    tracker = next((cb for cb in getattr(trainer, "callbacks", None) or [] if isinstance(cb, ScalingTracker)), None)
    clock = getattr(tracker, "clock", None)
    return float(clock.step_tokens) if clock is not None and clock.step_tokens else None


def _settings(trainer) -> tuple[dict, dict | None]:
    """The learning-rate, muP and pruning settings of this run's callbacks, to reuse for the next run."""
    from lightning_scaling.callbacks.mup import MuP
    from lightning_scaling.callbacks.power_lr import PowerLR
    from lightning_scaling.callbacks.pruning import GradualPruning
    from lightning_scaling.callbacks.tracker import ScalingTracker

    settings: dict = {}
    pruning = None
    if trainer is None:
        return settings, pruning
    callbacks = trainer.callbacks
    basis = next((cb.params_basis_count for cb in callbacks if isinstance(cb, ScalingTracker)), 0)
    for cb in callbacks:
        if isinstance(cb, PowerLR):
            batch = cb.schedule.batch_size if cb.schedule is not None else cb.batch_size
            settings["PowerLR"] = (f"a={cb.a:g}, b={cb.b:g}, lr_max={cb.lr_max:g}, batch size {batch} sequences, "
                                   f"warmup {cb.warmup_tokens:g} tokens, decay {cb.decay} over the last "
                                   f"{cb.decay_fraction:.0%}")
        elif isinstance(cb, MuP):
            base = cb.base if cb.base is not None else f"base shapes file {cb.base_shapes}"
            settings["muP"] = f"base {base} (base width {cb.base_width}), hidden_init {cb.hidden_init}"
        elif isinstance(cb, GradualPruning):
            prunable = sum(p.numel() for p in cb.params.values())
            pruning = {"final_sparsity": cb.final_sparsity, "start_fraction": cb.start_fraction,
                       "end_fraction": cb.end_fraction,
                       "prunable_fraction": prunable / basis if basis else 1.0}
            settings["GradualPruning"] = (f"final_sparsity={cb.final_sparsity:g} from {cb.start_fraction:.0%} to "
                                          f"{cb.end_fraction:.0%} of tokens, scope {cb.scope}")
    return settings, pruning
