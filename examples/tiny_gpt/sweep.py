"""The demo sweep: what `make demo` runs. Small GPTs on the embedded corpus, each through the same LightningCLI
path a user takes (`lightning-scaling train --config examples/tiny_gpt/config.yaml ...`), all logged to one MLflow
experiment; the closing hook refits the law after every run.

The planner chooses the runs (`lightning_scaling.planner.stages`, as `lightning-scaling plan` does): from Chinchilla's
law as the prior, a first stage of isoFLOP groups (Hoffmann et al. 2022, Approach 2) bracketing the prior's
optimum widely, in widths of the demo's two-layer GPT; then, from the fit, stage by stage the group that most
narrows the interval on N_opt at the target compute, until the budget of small runs is spent. The first stage adds
one sparse run (GradualPruning to 50%, config_sparse.yaml), so N_avg enters the fit. No new run starts after the
time cap.

Re-running continues the plan: finished runs are skipped (an interrupted sweep resumes where it stopped) and the
next stage is planned from the runs in the store. `--fixed` trains the hand-written list the planner replaced
(two isoFLOP groups picked by hand until the fit was constrained), kept to compare.

    python -m examples.tiny_gpt.sweep [--quick] [--fixed] [--tracking-uri sqlite:///mlflow.db] [--experiment NAME]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lightning_scaling.planner import VALIDATIONS, validation_interval
from lightning_scaling.plugins import hookimpl
from lightning_scaling.schedules import average_params

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    name: str
    d_model: int
    n_head: int
    steps: int
    sparse: bool = False
    n_layer: int = 2


# The hand-written list (`--fixed`). Non-embedding parameters (n_layer=2): d=16: 10.7k, 32: 33.7k, 48: 68.9k,
# 64: 116k, 96: 248k; d_head = 16.
# Tokens per step: 8 x 64 (small batches: at this scale the larger models need the optimizer steps). Group 1
# spends C = 6 N D = 1.2e11 FLOPs per run, group 2 three times that; the sizes are meant to bracket each group's
# best loss (measured at 2.4e11 FLOPs: d16 / d32 / d48 reach 2.120 / 1.979 / 2.236). Step counts with a divisor
# near an eighth of them (3480, not 3482): the runs validate about 8 times, the last time at their last step.
FULL = (
    Run("g1-d16", 16, 1, 3655),
    Run("g1-d32", 32, 2, 1160),
    Run("g1-d48", 48, 3, 567),
    Run("g2-d16", 16, 1, 10965),
    Run("g2-d32", 32, 2, 3480),
    Run("g2-d48", 48, 3, 1700),
    Run("g2-d64", 64, 4, 1008),
    Run("g1-d48-sparse", 48, 3, 752, sparse=True),  # N_avg ~ 52k at 50% final sparsity: about the same C
)
FULL_OVERRIDES = ["--data.init_args.batch_size=8"]
# Tokens per step: 8 x 32. Group 1: C = 2e10, group 2: 6e10.
QUICK = (
    Run("q1-d16", 16, 1, 1218),
    Run("q1-d32", 32, 2, 387),
    Run("q1-d48", 48, 3, 189),
    Run("q2-d16", 16, 1, 3655),
    Run("q2-d32", 32, 2, 1160),
    Run("q2-d48", 48, 3, 567),
)
QUICK_OVERRIDES = ["--data.init_args.seq_len=32", "--model.init_args.seq_len=32", "--data.init_args.batch_size=8",
                   "--data.init_args.val_windows=128", "--trainer.enable_progress_bar=false"]
TOKENS_PER_STEP = {"full": 8 * 64, "quick": 8 * 32}  # batch x seq_len of the overrides above
MAX_NEXT_STEPS = {"full": 4000, "quick": 0}  # the follow-up run the recommendation asks for, if this short


def _args(run: Run, uri: str, experiment: str, quick: bool) -> list[str]:
    config = HERE / ("config_sparse.yaml" if run.sparse else "config.yaml")
    args = [
        "fit", "--config", str(config),
        f"--model.init_args.d_model={run.d_model}", f"--model.init_args.n_head={run.n_head}",
        f"--model.init_args.n_layer={run.n_layer}",
        f"--trainer.max_steps={run.steps}", f"--trainer.val_check_interval={validation_interval(run.steps)}",
        f"--trainer.logger.init_args.run_name={run.name}",
        f"--trainer.logger.init_args.experiment_name={experiment}",
        f"--trainer.logger.init_args.tracking_uri={uri}",
    ]
    return args + (QUICK_OVERRIDES if quick else FULL_OVERRIDES)


def _finished(uri: str, experiment: str) -> dict[str, object]:
    """Finished runs of the experiment by run name (the latest of each name)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=1000)
    return {r.info.run_name: r for r in runs}


def _line(run, seconds: float) -> str:
    m = run.data.metrics
    sparsity = m.get("scaling/sparsity", 0.0)
    return (f"  finished {run.info.run_name:<16} N={m.get('scaling/params_avg', float('nan')):>9.4g}  "
            f"D={m.get('scaling/tokens', float('nan')):>9.4g}  C={m.get('scaling/flops', float('nan')):>9.3g}  "
            f"val_loss={m.get('val_loss', float('nan')):.4f}" + (f"  sparsity={sparsity:.2f}" if sparsity else "")
            + f"  ({seconds:.0f} s)")


def _next_run(store, tokens_per_step: int) -> Run | None:
    """The run the last recommendation asks for, as a Run of this sweep (None when there is none)."""
    rec = store.latest_recommendation()
    arch = (rec or {}).get("architecture") or {}
    if rec is None or rec.get("status") != "ok" or not arch:
        return None
    steps = int(math.ceil(rec["tokens"] / tokens_per_step))
    return Run(f"next-d{arch['d_model']}-L{arch['n_layer']}-{steps}", int(arch["d_model"]), int(arch["n_head"]),
               steps, n_layer=int(arch["n_layer"]))


# The planned sweep (the default): `lightning_scaling.planner.stages` chooses the runs, stage by stage, toward a
# target compute. Per mode: the target run's compute and the compute the small runs may spend (C = 6ND), the first
# stage's share of it, its isoFLOP groups and sizes per group (this family's smallest models cannot train the tiny
# runs a tenth of the budget would give; see `plan_stage`), the shortest run in warmups, and the time cap.
@dataclass(frozen=True)
class Plan:
    target: float
    budget: float
    first_share: float
    first_groups: int
    group_size: int
    min_warmups: float  # a planned run lasts at least this many warmups: shorter ones are mostly warmup
    time_cap_s: float  # no new run starts after this many seconds of sweep


PLANS = {
    # ten warmups: with a 100-step minimum the same sweep ended with alpha on its bound (runs of 2-5 warmups)
    "full": Plan(target=1e13, budget=2.5e12, first_share=0.4, first_groups=3, group_size=5, min_warmups=10,
                 time_cap_s=540),
    # about the fixed quick list's compute: two groups, three warmups; too small to pin the law, quick to look at
    "quick": Plan(target=1e12, budget=3e11, first_share=0.8, first_groups=2, group_size=4, min_warmups=3,
                  time_cap_s=150),
}
WARMUP_TOKENS = 20000  # PowerLR's warmup in config.yaml
SPARSE_FINAL = 0.5  # config_sparse.yaml: 50% on the cubic schedule from 25% to 75% of training (the defaults)


def propose_width(params: float, hparams: dict) -> dict:
    """This family's size knob: the width (d_model a multiple of 16, d_head 16, two layers: what muP transfers
    across) whose non-embedding count is nearest `params` in log."""
    from lightning_scaling.plugins import gpt_non_embedding_params

    d = min(range(16, 257, 16), key=lambda d: abs(math.log(gpt_non_embedding_params(d, 2) / params)))
    return {"d_model": d, "n_layer": 2, "n_head": d // 16, "params": gpt_non_embedding_params(d, 2)}


def next_stage(store, plan_name: str) -> dict:
    """The next stage of the planned sweep from the runs in the store (none yet: from the prior)."""
    from lightning_scaling.planner import Family, Runs, StageOptions, plan_sweep
    from lightning_scaling.runs import Selection

    p = PLANS[plan_name]
    selection = store.select() if store is not None else Selection(used=[], excluded=[])
    options = StageOptions(target_flops=p.target, budget=p.budget, min_steps=min_steps(plan_name),
                           first_share=p.first_share, first_groups=p.first_groups, group_size=p.group_size,
                           n_bootstrap=200)
    family = Family(propose_architecture=propose_width, tokens_per_step=TOKENS_PER_STEP[plan_name])
    return plan_sweep(Runs.from_selection(selection), options, family).to_dict()


def stage_runs(plan: dict) -> list[Run]:
    """The stage's runs for this sweep; the first stage (planned from the prior) adds one sparse run: the run of
    most compute in its largest group, pruned to 50% (config_sparse.yaml) for as many more steps as keep the
    group's compute at its average non-zero count, so that N_avg (Jin et al. 2025) enters the fit."""
    runs = []
    for r in plan["runs"]:
        arch = r["architecture"]
        runs.append(Run(r["name"], arch["d_model"], arch["n_head"], r["steps"], n_layer=arch["n_layer"]))
    if plan["basis"] == "prior" and plan["runs"]:
        largest = max(plan["runs"], key=lambda r: (r["flops"], r["params"]))
        arch = largest["architecture"]
        prunable = 12 * arch["d_model"] ** 2 * arch["n_layer"]  # the blocks' Linear weights
        keep = average_params(1.0, SPARSE_FINAL, prunable_fraction=prunable / largest["params"])  # N_avg / N
        steps = VALIDATIONS * int(round(largest["steps"] / keep / VALIDATIONS))
        runs.append(Run(f"s{plan['stage']}-sparse", arch["d_model"], arch["n_head"], steps, sparse=True,
                        n_layer=arch["n_layer"]))
    return runs


def planned_args(plan_name: str) -> list[str]:
    """The closing hook plans as the sweep does (it is the last callback of the config): the same target, budget,
    first stage and shortest run, so that the plan in its recommendation is the sweep's next stage."""
    p = PLANS[plan_name]
    options = {"target_flops": f"{p.target:g}", "plan_budget": f"{p.budget:g}",
               "plan_min_steps": min_steps(plan_name), "plan_first_share": p.first_share,
               "plan_first_groups": p.first_groups, "plan_group_size": p.group_size}
    return [f"--trainer.callbacks.init_args.{k}={v}" for k, v in options.items()]


def min_steps(plan_name: str) -> int:
    """The shortest planned run in optimizer steps: `min_warmups` warmups."""
    return int(math.ceil(PLANS[plan_name].min_warmups * WARMUP_TOKENS / TOKENS_PER_STEP[plan_name]))


class WidthFamily:
    """A plugin (`lightning_scaling.plugins`) that sizes this family by its width alone (`propose_width`), so that
    the closing hook's plan and next-run architecture stay in the two-layer family the sweep plans in (the built-in
    proposal changes the depth too)."""

    @hookimpl
    def propose_architecture(self, params, hparams):
        return propose_width(params, hparams)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sweep (about 3 minutes)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default=None, help="default: tiny-gpt-demo (tiny-gpt-demo-quick; with "
                        "--fixed, tiny-gpt-demo-fixed and tiny-gpt-demo-fixed-quick)")
    parser.add_argument("--fixed", action="store_true", help="train the hand-written list of isoFLOP groups the "
                        "planner replaced (kept to compare), not the planned stages")
    args = parser.parse_args(argv)
    if not args.fixed:
        return main_planned(args)
    import torch

    from lightning_scaling.integrations import MLflowRunStore

    torch.set_num_threads(1)  # tiny models: one thread is fastest, and robust on a busy machine
    plan_name = "quick" if args.quick else "full"
    plan = QUICK if args.quick else FULL
    experiment = args.experiment or ("tiny-gpt-demo-fixed-quick" if args.quick else "tiny-gpt-demo-fixed")
    tokens_per_step = TOKENS_PER_STEP[plan_name]
    start = time.perf_counter()
    done = _finished(args.tracking_uri, experiment)
    todo = [r for r in plan if r.name not in done]
    print(f"lightning-scaling demo ({plan_name}, fixed list): experiment '{experiment}' at {args.tracking_uri}; "
          f"{len(plan) - len(todo)} of {len(plan)} planned runs already finished", flush=True)
    if not todo:
        follow_up = _next_run(MLflowRunStore(args.tracking_uri, experiment_name=experiment), tokens_per_step)
        if follow_up is not None and follow_up.steps <= MAX_NEXT_STEPS[plan_name] and follow_up.name not in done:
            print(f"  the plan is complete: training the recommended run {follow_up.name}", flush=True)
            todo = [follow_up]
        elif follow_up is not None:
            print(f"  the plan is complete; the recommended run ({follow_up.steps} steps of d_model="
                  f"{follow_up.d_model}) is beyond this demo's time cap: train it with\n    "
                  + " ".join(["lightning-scaling", "train", *_args(follow_up, args.tracking_uri, experiment,
                                                                  args.quick)[1:]]), flush=True)
    for run in todo:
        code = _train(run, args.tracking_uri, experiment, args.quick)
        if code != 0:
            return code
    return _report(args.tracking_uri, experiment, start)


def _train(run: Run, uri: str, experiment: str, quick: bool, extra: list[str] = ()) -> int:
    from lightning_scaling.integrations import run_cli

    t0 = time.perf_counter()
    print(f"  training {run.name}: d_model={run.d_model}, {run.steps} steps"
          + (" (sparse: pruned to 50%)" if run.sparse else ""), flush=True)
    code = run_cli(_args(run, uri, experiment, quick) + list(extra))
    if code == 0:
        finished = _finished(uri, experiment).get(run.name)
        if finished is not None:
            print(_line(finished, time.perf_counter() - t0), flush=True)
    return code


def main_planned(args) -> int:
    """The planned sweep: plan a stage, train it, refit, repeat until the budget is spent or the time cap; a
    re-run continues from the runs in the store."""
    import torch

    from lightning_scaling import plugins

    torch.set_num_threads(1)
    plan_name = "quick" if args.quick else "full"
    p = PLANS[plan_name]
    experiment = args.experiment or ("tiny-gpt-demo-quick" if args.quick else "tiny-gpt-demo")
    start = time.perf_counter()
    done = _finished(args.tracking_uri, experiment)
    print(f"lightning-scaling demo ({plan_name}): experiment '{experiment}' at {args.tracking_uri}; the planner "
          f"sizes a run of {p.target:.3g} FLOPs with {p.budget:.3g} FLOPs of small runs; "
          f"{sum(1 for r in done.values() if r.data.tags.get('lightning_scaling.summary') != 'true')} runs already "
          "finished", flush=True)
    pm = plugins.plugin_manager()
    family = WidthFamily()
    pm.register(family, name="tiny-gpt-widths")
    try:
        code = _planned_stages(args, plan_name, experiment, start, done)
    finally:
        pm.unregister(family)
    return code


def _planned_stages(args, plan_name: str, experiment: str, start: float, done: dict) -> int:
    from lightning_scaling.integrations import MLflowRunStore

    p = PLANS[plan_name]
    capped, trained = False, 0
    while not capped:
        store = MLflowRunStore(args.tracking_uri, experiment_name=experiment) if done else None
        plan = next_stage(store, plan_name)
        print(f"\n{plan['sentence']}", flush=True)
        todo = [r for r in stage_runs(plan) if r.name not in done]
        if plan["done"] or not todo:
            break
        for i, run in enumerate(todo):
            if (trained or i) and time.perf_counter() - start > p.time_cap_s:  # each call trains one run at least
                print(f"  the demo's time cap ({p.time_cap_s:.0f} s) is reached: re-run to continue the plan",
                      flush=True)
                capped = True
                break
            code = _train(run, args.tracking_uri, experiment, args.quick, planned_args(plan_name))
            if code != 0:
                return code
            trained += 1
        done = _finished(args.tracking_uri, experiment)
    if not done:
        print("no run was trained: nothing to fit")
        return 1
    return _report(args.tracking_uri, experiment, start)


def _report(uri: str, experiment: str, start: float) -> int:
    from lightning_scaling.integrations import MLflowRunStore

    store = MLflowRunStore(uri, experiment_name=experiment)
    summary = store.summary_run()
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s", flush=True)
    if summary is None:
        print("no recommendation yet (see the warnings above)")
        return 1
    note = summary.data.tags.get("mlflow.note.content", "")
    print("\n" + note + "\n")
    print("Open it in the MLflow UI:")
    print(f"  mlflow ui --backend-store-uri {uri}")
    print(f"  then http://127.0.0.1:5000/#/experiments/{store.experiment_id}/runs/{summary.info.run_id}"
          "?workflowType=machine_learning   (the classic 'Model training' view)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
