"""The sweep's side of the planner: the model family as the runs will train it, the next stage from the runs in the
store (`planner.plan_sweep`), the budget the stopped runs gave back, and the refit the closing hook would make.

Compute: the planner counts the compute of the runs the fit uses. A run `LossForecast` stopped as hopeless, or one
the sweep left out, spent compute the fit cannot use; that spent compute counts against the budget here, and the
compute it did not spend (planned minus spent) goes back to it: the next stage may use it.
"""

from __future__ import annotations

import re
from dataclasses import replace

from lightning_scaling import plugins
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations import MLflowRunStore, read_family, train_command
from lightning_scaling.planner import Family, Runs, StageOptions, plan_sweep
from lightning_scaling.sweep.config import register_plugins

__all__ = ["SweepPlanner", "apply_overrides"]

_OVERRIDE = re.compile(r"^--(model|data)\.init_args\.(\w+)=(.+)$")


def apply_overrides(family: dict, overrides: tuple[str, ...]) -> dict:
    """`family` (`integrations.read_family`) as the runs train it with the sweep's `overrides`: the model's and
    data module's ``init_args`` they set, and the tokens per step from the batch size and sequence length they set
    (devices and gradient accumulation kept).

    >>> f = {"hparams": {"seq_len": 64}, "data": {"batch_size": 16, "seq_len": 64}, "tokens_per_step": 1024.0}
    >>> apply_overrides(f, ("--data.init_args.batch_size=8",))["tokens_per_step"]
    512.0
    """
    hparams, data = dict(family["hparams"]), dict(family.get("data") or {})
    for arg in overrides:
        match = _OVERRIDE.match(arg)
        if match:
            section, key, value = match.groups()
            (hparams if section == "model" else data)[key] = int(value) if value.isdigit() else value
    out = {**family, "hparams": hparams, "data": data}
    old = _tokens(family["hparams"], family.get("data") or {})
    new = _tokens(hparams, data)
    if family["tokens_per_step"] and old and new:
        out["tokens_per_step"] = float(family["tokens_per_step"] * new / old)
    return out


def _tokens(hparams: dict, data: dict) -> int | None:
    batch, seq = data.get("batch_size"), data.get("seq_len", hparams.get("seq_len"))
    return batch * seq if isinstance(batch, int) and isinstance(seq, int) else None


def _family(path, overrides) -> dict:
    family = read_family(path)
    return apply_overrides(family, overrides)


class SweepPlanner:
    """The planner of the sweep `config` (`sweep.config.SweepConfig`)."""

    def __init__(self, config):
        self.config = config
        self.plugins = register_plugins(config.plugins, config.module_path)
        self.family = _family(config.family, config.overrides)
        self.sparse_family = _family(config.sparse, config.overrides) if config.sparse else None
        logger = self.family["logger"]
        self.tracking_uri = config.tracking_uri or logger.get("tracking_uri")
        self.experiment = config.experiment or logger.get("experiment_name")
        if not self.tracking_uri or not self.experiment:
            raise ConfigurationError("sweep.tracking_uri and sweep.experiment: give them (or an MLFlowLogger with "
                                     f"`tracking_uri` and `experiment_name` in {config.family})")
        self.advisor_args = self.family["advisor"] or {}
        self.loss_key = self.advisor_args.get("loss_key", "val_loss")

    def config_for(self):
        """The config with the tracking URI and experiment the runs log to."""
        return replace(self.config, tracking_uri=self.tracking_uri, experiment=self.experiment)

    def family_for(self, planned: dict) -> dict:
        return self.sparse_family if planned.get("sparse") else self.family

    # -- compute --------------------------------------------------------------------------------------------------
    def spent(self, runs) -> float:
        """Compute the sweep's runs spent (their `scaling/flops`)."""
        return sum(r.spent_flops for r in runs)

    def saved(self, runs) -> float:
        """Compute the runs stopped as hopeless did not spend (planned minus spent)."""
        return sum(max(0.0, float(r.plan.get("flops", 0.0)) - r.spent_flops) for r in runs if r.stopped_early)

    def unused(self, runs) -> float:
        """Compute spent by runs the fit cannot use (stopped early, left out): it counts against the budget."""
        return sum(r.spent_flops for r in runs if r.finished and r.stopped_early or r.left_out)

    # -- plans ----------------------------------------------------------------------------------------------------
    def _store(self) -> MLflowRunStore:
        return MLflowRunStore(self.tracking_uri, experiment_name=self.experiment, loss_key=self.loss_key)

    def next_stage(self, runs) -> dict:
        """The next stage's plan (a `StagePlan` dict) from the runs in the store; the budget less what runs the fit
        cannot use spent.

        Raises:
            ConfigurationError: before any run, a budget too small for the family's cheapest run.
        """
        c = self.config
        selection = self._store().select() if runs else None
        budget = c.budget - self.unused(runs)
        options = StageOptions(target_flops=c.target_flops, budget=max(budget, c.budget * 1e-9),
                               min_steps=c.plan_option("min_steps"), first_share=c.plan_option("first_share"),
                               first_groups=c.plan_option("first_groups"), group_size=c.plan_option("group_size"),
                               n_bootstrap=c.plan_option("bootstrap"), seed=c.plan_option("seed"),
                               confidence=c.plan_option("confidence"))
        f = self.family
        family = Family(hparams=f["hparams"], settings=f["settings"], propose_architecture=plugins.propose_architecture,
                        tokens_per_step=f["tokens_per_step"],
                        command=train_command(f, self.tracking_uri, self.experiment),
                        describe={k: f[k] for k in ("config", "model", "tokens_per_step")})
        runs_in = Runs.from_selection(selection) if selection is not None else Runs.empty()
        plan = plan_sweep(runs_in, options, family).to_dict()
        if not runs and not plan["runs"]:
            cheapest = self.cheapest()
            least = cheapest * c.plan_option("group_size") / c.plan_option("first_share")
            raise ConfigurationError(f"sweep.budget ({c.budget:.3g} FLOPs) is below what the family's cheapest runs "
                                     f"need: {cheapest:.3g} FLOPs for its smallest model over "
                                     f"{c.plan_option('min_steps')} steps (plan.min_steps); raise the budget to at "
                                     f"least {least:.3g}")
        return plan

    def cheapest(self) -> float:
        """The compute of the family's smallest model over the shortest run (6 N D)."""
        f = self.family
        smallest = plugins.propose_architecture(1.0, f["hparams"]) or {}
        params = float(smallest.get("params", 0.0))
        return 6.0 * params * self.config.plan_option("min_steps") * (f["tokens_per_step"] or 1.0)

    def stage_runs(self, plan: dict, stage: int) -> list[dict]:
        """The stage's runs; a first stage (from the prior) adds one pruned run when `sweep.sparse` is set: the
        largest-compute run of the stage trained with the sparse config, so that N_avg (Jin et al. 2025) enters
        the fit."""
        # the sweep numbers its stages itself (the planner infers a number from the compute levels it sees)
        runs = [{**r, "stage": stage, "name": re.sub(r"^s\d+-", f"s{stage}-", r["name"])} for r in plan["runs"]]
        if self.config.sparse and plan["basis"] == "prior" and runs:
            largest = max(runs, key=lambda r: (r["flops"], r["params"]))
            runs.append({**largest, "name": f"{largest['name']}-sparse", "sparse": True})
        return runs

    # -- the closing hook's refit ---------------------------------------------------------------------------------
    def recommend(self, runs) -> dict | None:
        """Refit over every run in the store and publish the recommendation as the closing hook does (on the
        summary run and the last finished run), with the plan toward the target."""
        from lightning_scaling.callbacks import ScalingLawAdvisor

        finished = [r for r in runs if r.finished]
        if not finished:
            return None
        args = {k: v for k, v in self.advisor_args.items() if k not in ("target_flops", "plan_budget")}
        budget = self.config.budget - self.unused(runs)
        advisor = ScalingLawAdvisor(**args, target_flops=self.config.target_flops,
                                    plan_budget=max(budget, self.config.budget * 1e-9))
        return advisor.advise(self._store(), finished[-1].run_id, family=self.family)

    def latest_recommendation(self) -> dict | None:
        return self._store().latest_recommendation()

    def summary_note(self) -> tuple[str | None, str | None]:
        """(the summary run's note, its URL path in the MLflow UI), or (None, None) before the first refit."""
        store = self._store()
        summary = store.summary_run()
        if summary is None:
            return None, None
        return (summary.data.tags.get("mlflow.note.content"),
                f"#/experiments/{store.experiment_id}/runs/{summary.info.run_id}")

    def close(self) -> None:
        pm = plugins.plugin_manager()
        for plugin, _name in self.plugins:
            pm.unregister(plugin)

