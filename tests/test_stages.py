"""The planner: a stage of isoFLOP groups from a prior or from a fit, the c-optimal design behind it, the CLI, the
family's architectures and commands, and the learning-rate and batch-size priors."""

import json
import math
import warnings

import numpy as np
import pytest

from lightning_scaling import plugins
from lightning_scaling.cli import main
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.family import read_family, train_command
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.law.synthetic import CHINCHILLA_PAPER_LAW as LAW
from lightning_scaling.law.synthetic import synthetic_runs
from lightning_scaling.planner.design import expected_shrink, jacobian
from lightning_scaling.planner.family import family_realizer, hyperparameters, validation_interval, with_family
from lightning_scaling.planner.options import FIRST_SHARE, MIN_STEPS
from lightning_scaling.planner.stages import fixed_design, plan_stage, prior_optimum

THETA = np.array([math.log(LAW.A), math.log(LAW.B), math.log(LAW.E), LAW.alpha, LAW.beta])
CONFIG = "examples/tiny_gpt/config.yaml"


def by_group(runs):
    out = {}
    for r in runs:
        out.setdefault(r["group"], []).append(r)
    return out


def test_the_first_stage_brackets_the_prior_widely_and_spends_its_share():
    plan = plan_stage(1e21, 4e19)
    assert plan["basis"] == "prior" and plan["stage"] == 1 and not plan["done"]
    groups = by_group(plan["runs"])
    assert len(groups) == 3 and all(len(g) == 5 for g in groups.values())
    assert plan["stage_flops"] == pytest.approx(FIRST_SHARE * 4e19, rel=1e-9)
    assert plan["budget_left"] == pytest.approx(4e19 - plan["stage_flops"], rel=1e-9)
    for members in groups.values():
        c = members[0]["flops"]
        sizes = [r["params"] for r in members]
        assert all(r["flops"] == pytest.approx(6 * r["params"] * r["tokens"], rel=1e-9) for r in members)
        assert max(sizes) / min(sizes) == pytest.approx(64.0)  # 1/8 to 8x of the prior's optimum
        assert math.sqrt(max(sizes) * min(sizes)) == pytest.approx(prior_optimum(c), rel=1e-9)
    # the prior's optimum is Chinchilla's: some 20 tokens per parameter (26 at this compute under Eq. 10's law)
    c = groups[sorted(groups)[0]][0]["flops"]
    assert 15 < c / (6 * prior_optimum(c)) / prior_optimum(c) < 35


def test_with_runs_the_stage_brackets_the_fitted_optimum_and_expects_the_interval_to_shrink():
    N, D, L = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.005, seed=0)
    spent = float((6 * N * D).sum())
    plan = plan_stage(1e22, spent * 20, N, D, L, n_bootstrap=200)
    assert plan["basis"] == "fit" and plan["runs"]
    assert plan["spent"] == pytest.approx(spent) and plan["stage_flops"] <= spent * 19
    fit = ChinchillaFit().fit(N, D, L)
    for members in by_group(plan["runs"]).values():
        c = members[0]["flops"]
        sizes = [r["params"] for r in members]
        assert min(sizes) < fit.compute_optimal(c).params < max(sizes)
        assert c >= 1e19  # nothing below the largest compute so far: smaller groups inform the target less
    exp = plan["expected"]
    assert 0 < exp["shrink"] < 1
    lo, hi = exp["interval_now"]
    elo, ehi = exp["interval_expected"]
    assert lo < elo < ehi < hi
    assert ehi / elo == pytest.approx((hi / lo) ** exp["shrink"], rel=1e-6)
    assert "expected to shrink" in plan["sentence"]


def test_a_spent_budget_ends_the_plan():
    N, D, L = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.005, seed=0)
    plan = plan_stage(1e22, float((6 * N * D).sum()) * 1.01, N, D, L, n_bootstrap=0)
    assert plan["done"] and plan["runs"] == [] and "budget is spent" in plan["sentence"]


@pytest.mark.parametrize("kwargs, field", [({"target_flops": -1.0}, "target_flops"), ({"budget": 0.0}, "budget"),
                                           ({"budget": 2e21}, "budget")])
def test_bad_budgets_name_the_field(kwargs, field):
    args = {"target_flops": 1e21, "budget": 1e19, **kwargs}
    with pytest.raises(ConfigurationError, match=f"`{field}`"):
        plan_stage(**args)


def test_the_jacobian_is_that_of_the_fitted_log_loss():
    N, D, _ = synthetic_runs(LAW, [1e18, 1e20], sizes_per_budget=4, noise=0.0)

    def log_loss(t):
        return np.log(np.exp(t[0] - t[3] * np.log(N)) + np.exp(t[1] - t[4] * np.log(D)) + np.exp(t[2]))

    numeric = np.stack([(log_loss(THETA + 1e-6 * e) - log_loss(THETA - 1e-6 * e)) / 2e-6 for e in np.eye(5)], 1)
    assert np.abs(jacobian(THETA, N, D) - numeric).max() < 1e-8


def test_the_design_ranks_candidate_groups_as_refits_of_simulated_runs_do():
    """The c-optimal score orders three candidate groups as the spread of N_opt over refits does (the larger the
    group's compute, the more it pins the extrapolation; a group below the runs adds nothing)."""
    N, D, _ = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.0)
    target, sims = 1e22, 40
    rng = np.random.default_rng(1)
    base_noise, group_noise = rng.normal(0, 0.005, (sims, len(N))), rng.normal(0, 0.005, (sims, 5))

    def spread(NN, DD):  # the same noise on the same runs for every candidate (common random numbers)
        values = []
        for i in range(sims):
            noise = np.r_[base_noise[i], group_noise[i]][:len(NN)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = ChinchillaFit().fit(NN, DD, LAW.loss(NN, DD) * np.exp(noise))
            values.append(math.log(fit.compute_optimal(target).params))
        return float(np.std(values))

    base = spread(N, D)
    predicted, simulated = [], []
    for c in (1e18, 3e19, 1e20):
        N2, D2, _ = synthetic_runs(LAW, [c], sizes_per_budget=5, noise=0.0)
        predicted.append(expected_shrink(THETA, N, D, N2, D2, target, 0.005)[2])
        simulated.append(spread(np.r_[N, N2], np.r_[D, D2]) / base)
    assert predicted[0] > predicted[1] > predicted[2]
    assert simulated[0] > simulated[1] > simulated[2]
    for p, s in zip(predicted, simulated):  # the shrink itself, within the refits' own noise
        assert p == pytest.approx(s, abs=0.2)


def test_the_planner_closes_the_loop_on_a_known_law():
    """From no runs to a spent budget, each stage trained on the true law with 0.5% noise: N_opt at the target
    within 10% of the truth, in fewer FLOPs than the budget; the fixed design with the same budget is further."""
    from lightning_scaling.law.allocation import optimal_allocation

    target, budget = 1e21, 5e19
    truth = float(optimal_allocation(LAW.E, LAW.A, LAW.B, LAW.alpha, LAW.beta, target)[0])
    rng = np.random.default_rng(0)
    N = D = L = np.zeros(0)
    for _ in range(12):
        plan = plan_stage(target, budget, N, D, L, n_bootstrap=0)
        if plan["done"]:
            break
        n, d = (np.array([r[k] for r in plan["runs"]]) for k in ("params", "tokens"))
        N, D = np.r_[N, n], np.r_[D, d]
        L = np.r_[L, LAW.loss(n, d) * np.exp(rng.normal(0, 0.005, len(n)))]
    assert plan["done"] and (6 * N * D).sum() <= budget * (1 + 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planned = ChinchillaFit().fit(N, D, L).compute_optimal(target).params
        runs = fixed_design(budget)
        n, d = (np.array([r[k] for r in runs]) for k in ("params", "tokens"))
        fixed = ChinchillaFit().fit(n, d, LAW.loss(n, d) * np.exp(np.random.default_rng(0).normal(0, 0.005,
                                                                                                  len(n))))
    assert abs(planned / truth - 1) < 0.1
    assert abs(planned / truth - 1) < abs(fixed.compute_optimal(target).params / truth - 1)


def test_the_rollout_ends_lower_than_the_per_flop_rule_it_looks_ahead_with():
    """After a first stage on a law whose optimum the prior misplaces (beta 0.20: many more tokens per parameter
    than Chinchilla's), the stage chosen by rollout ends, in the design's own prediction, with a smaller sd of
    log N_opt at the target than the per-FLOP rule spending the whole budget from here; and it is another group
    than the per-FLOP rule's first (the rule alone missed this law in `benchmarks/planning.py`)."""
    from lightning_scaling.evaluation.intervals import scatter
    from lightning_scaling.law.chinchilla import ChinchillaLaw
    from lightning_scaling.planner.rollout import affordable, arrays, next_stage, rollout

    law = ChinchillaLaw(E=1.69, A=406.4, B=180.0, alpha=0.34, beta=0.20)
    target, budget = 1e21, 5e19
    plan = plan_stage(target, budget, n_bootstrap=0)
    N, D = (np.array([r[k] for r in plan["runs"]]) for k in ("params", "tokens"))
    L = law.loss(N, D) * np.exp(np.random.default_rng(0).normal(0, 0.005, len(N)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ChinchillaFit().fit(N, D, L)
    sigma, left = max(scatter(fit, N, D, L), 0.002), budget - float((6 * N * D).sum())
    theta = np.asarray(fit.theta_, float)
    runs, expected = next_stage(fit, N, D, sigma, target, left, 2)
    per_flop_end = rollout(fit, N, D, sigma, target, left, 2, float((6 * N * D).min()))
    assert expected["sd_log_params_at_budget_end"] < per_flop_end
    # the per-FLOP rule's own first group
    scored = []
    for group_runs, cost in affordable(fit, N, D, target, 2, left, float((6 * N * D).min())):
        sd0, sd1, _ = expected_shrink(theta, N, D, *arrays(group_runs), target, sigma)
        scored.append(((np.log(sd0) - np.log(sd1)) / cost, group_runs))
    per_flop_first = max(scored, key=lambda x: x[0])[1]
    assert runs[0]["group"] != per_flop_first[0]["group"] or len(runs) != len(per_flop_first)


def test_a_family_gives_architectures_whole_steps_and_commands(tmp_path):
    family = read_family(CONFIG)
    assert family["tokens_per_step"] == 16 * 64 and set(family["settings"]) == {"muP", "PowerLR"}
    realize = family_realizer(family["hparams"], plugins.propose_architecture, family["tokens_per_step"])
    plan = with_family(plan_stage(1e13, 3e12, realize=realize), train_command(family, "sqlite:///m.db", "exp"),
                       family["settings"])
    assert plan["runs"]
    for r in plan["runs"]:
        arch = r["architecture"]
        assert r["params"] == arch["params"]
        assert r["tokens"] == r["steps"] * 1024 and r["steps"] % 8 == 0 and r["steps"] >= MIN_STEPS * 0.8
        assert r["flops"] == pytest.approx(6 * r["params"] * r["tokens"])
        assert f"--model.init_args.d_model={arch['d_model']}" in r["command"]
        assert f"--trainer.max_steps={r['steps']}" in r["command"]
        assert f"--trainer.val_check_interval={r['steps'] // 8}" in r["command"]
        assert "--trainer.logger.init_args.experiment_name=exp" in r["command"]
    assert len({r["name"] for r in plan["runs"]}) == len(plan["runs"])
    assert plan["stage_flops"] == pytest.approx(sum(r["flops"] for r in plan["runs"]))
    assert plan["hyperparameters"]["kind"] == "transfer"


def test_without_mup_the_learning_rate_and_batch_are_published_priors():
    runs = [{"params": 1e8, "tokens": 2e9}]
    hp = hyperparameters(runs)
    assert hp["kind"] == "prior" and "prior" in hp["why"]
    h = runs[0]["hyperparameters"]
    assert h["lr_step_law"] == pytest.approx(1.79 * 1e8**-0.713 * 2e9**0.307)
    assert h["batch_tokens_step_law"] == pytest.approx(0.58 * 2e9**0.571)
    assert h["lr_deepseek"] == pytest.approx(0.3118 * (6 * 1e8 * 2e9) ** -0.125)
    assert h["batch_tokens_deepseek"] == pytest.approx(0.2920 * (6 * 1e8 * 2e9) ** 0.3271)


def test_plan_command_json_and_text(tmp_path, capsys):
    assert main(["plan", "--target-flops", "1e21", "--budget", "4e19", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"runs", "stage_flops", "budget_left"} <= set(out)
    assert {"params", "tokens", "flops", "group"} <= set(out["runs"][0])
    csv = tmp_path / "runs.csv"
    N, D, L = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.005, seed=0)
    csv.write_text("params,tokens,loss\n" + "".join(f"{n},{d},{x}\n" for n, d, x in zip(N, D, L)))
    assert main(["plan", str(csv), "--target-flops", "1e22", "--budget", "2e21", "--config", CONFIG]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Stage 2:") and "lightning-scaling train --config" in text and "law now:" in text


def test_plan_command_refuses_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {}\n")
    assert main(["plan", "--target-flops", "1e21", "--budget", "4e19", "--config", str(bad)]) == 2
    assert "`model.init_args` is missing" in capsys.readouterr().err
    assert main(["plan", "--target-flops", "1e21", "--budget", "4e19", "--config", str(tmp_path / "no.yaml")]) == 2
    assert "--config" in capsys.readouterr().err


def test_validation_interval_divides_the_steps():
    assert [validation_interval(s) for s in (1160, 189, 566)] == [145, 27, 283]


def test_the_sparse_next_run_starts_from_the_dense_size_whose_average_is_the_optimum():
    """Integrated step by step over the cubic schedule (not the closed form), the planned run's N_avg is the
    recommended one only when the prunable fraction is taken into account."""
    from lightning_scaling.planner import plan_next_run
    from lightning_scaling.runs.records import RunRecord, Selection
    from lightning_scaling.schedules.sparsity import cubic_sparsity

    N, D, L = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.005, seed=0)
    records = [RunRecord(run_id=f"r{i}", schema="1", params=n, params_dense=n, tokens=d, flops=6 * n * d, loss=x)
               for i, (n, d, x) in enumerate(zip(N, D, L))]
    pruning = {"final_sparsity": 0.6, "start_fraction": 0.25, "end_fraction": 0.75, "prunable_fraction": 0.7}
    rec = plan_next_run(Selection(used=records, excluded=[]), n_bootstrap=0, pruning=pruning)
    start = rec["sparse_next"]["initial_params"]
    progress = (np.arange(100_000) + 0.5) / 100_000
    kept = np.array([1.0 - 0.7 * cubic_sparsity(t, 0.6, 0.25, 0.75) for t in progress])
    assert start * kept.mean() == pytest.approx(rec["params"], rel=1e-6)
    ignored = rec["params"] / np.mean([1.0 - cubic_sparsity(t, 0.6, 0.25, 0.75) for t in progress[::100]])
    assert abs(start / ignored - 1) > 0.05  # a plan that pruned every parameter would start this much smaller


def _records(seed=0):
    from lightning_scaling.runs.records import RunRecord

    N, D, L = synthetic_runs(LAW, [1e18, 3e18, 1e19], sizes_per_budget=5, noise=0.005, seed=seed)
    return [RunRecord(run_id=f"r{i}", run_name=f"r{i}", schema="1", params=n, params_dense=n, tokens=d,
                      flops=6 * n * d, loss=x) for i, (n, d, x) in enumerate(zip(N, D, L))]


def test_the_closing_hook_plans_the_next_stage_and_names_the_target():
    from lightning_scaling.callbacks import ScalingLawAdvisor
    from lightning_scaling.planner import recommendation_markdown
    from lightning_scaling.runs.records import Selection

    records = _records()
    spent = sum(r.flops for r in records)
    advisor = ScalingLawAdvisor(target_flops=1e22, plan_budget=20 * spent, bootstrap=100)
    selection = Selection(used=records, excluded=[])
    plan = advisor.plan(selection, {"d_model": 64, "n_layer": 2, "n_head": 4}, {})
    assert plan["basis"] == "fit" and plan["runs"] and plan["fit"]["params_opt_low"] < plan["fit"]["params_opt_high"]
    assert all(r["architecture"]["params"] == r["params"] for r in plan["runs"])
    assert plan["hyperparameters"]["kind"] == "prior"
    from lightning_scaling.planner import plan_next_run

    rec = {**plan_next_run(selection, n_bootstrap=100), "plan": plan}
    note = recommendation_markdown(rec)
    assert "Plan: at the target 1e+22 FLOPs, N_opt" in note and "Stage 2: train" in note


@pytest.mark.parametrize("kwargs, field", [({"target_flops": 1e22}, "plan_budget"),
                                           ({"plan_budget": 1e20}, "target_flops"),
                                           ({"target_flops": 1e20, "plan_budget": 1e21}, "plan_budget"),
                                           ({"target_flops": -1.0, "plan_budget": 1e20}, "target_flops"),
                                           ({"plan_min_steps": 0}, "plan_min_steps"),
                                           ({"plan_first_share": 1.0}, "plan_first_share"),
                                           ({"plan_first_groups": 0}, "plan_first_groups"),
                                           ({"plan_group_size": 2}, "plan_group_size")])
def test_the_closing_hooks_plan_arguments_are_checked(kwargs, field):
    from lightning_scaling.callbacks import ScalingLawAdvisor

    with pytest.raises(ConfigurationError, match=f"`{field}`"):
        ScalingLawAdvisor(**kwargs)


def test_the_closing_hooks_plan_is_the_sweeps_when_given_the_sweeps_options():
    """A sweep that plans with its own first stage and shortest run gives the hook the same options: the hook's
    plan is then the sweep's (the same runs, in whole steps of the run's tokens per step)."""
    from lightning_scaling.callbacks import ScalingLawAdvisor
    from lightning_scaling.runs.records import Selection

    hparams = {"d_model": 64, "n_layer": 2, "n_head": 4}
    options = dict(first_share=0.4, first_groups=2, group_size=4)
    advisor = ScalingLawAdvisor(target_flops=1e13, plan_budget=2.5e12, plan_min_steps=391, bootstrap=0,
                                **{f"plan_{k}": v for k, v in options.items()})
    hook = advisor.plan(Selection(used=[], excluded=[]), hparams, {}, tokens_per_step=512.0)
    sweep = plan_stage(1e13, 2.5e12, n_bootstrap=0, **options,
                       realize=family_realizer(hparams, plugins.propose_architecture, 512.0, 391))
    assert [(r["params"], r["steps"]) for r in hook["runs"]] == [(r["params"], r["steps"]) for r in sweep["runs"]]
    assert len({r["group"] for r in hook["runs"]}) == 2 and all(r["steps"] % 8 == 0 for r in hook["runs"])
    assert all(r["tokens"] == 512.0 * r["steps"] for r in hook["runs"])
    default = ScalingLawAdvisor(target_flops=1e13, plan_budget=2.5e12, bootstrap=0)
    assert default.plan(Selection(used=[], excluded=[]), hparams, {})["runs"] != hook["runs"]


def test_the_summary_run_charts_each_refit_and_the_experiment_describes_the_state(tmp_path):
    import mlflow

    from lightning_scaling.integrations.mlflow_store import MLflowRunStore
    from lightning_scaling.planner import plan_next_run
    from lightning_scaling.runs.records import Selection

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("practice")
    store = MLflowRunStore(uri, "practice")
    records = _records()
    alphas = []
    for n in (12, 15):
        rec = plan_next_run(Selection(used=records[:n], excluded=[]), n_bootstrap=100)
        rec["plan"] = plan_stage(1e22, 1e21, *(np.array([getattr(r, k) for r in records[:n]]) for k in
                                              ("params", "tokens", "loss")), n_bootstrap=0)
        assert store.publish_everywhere(rec)
        alphas.append(rec["alpha"])
    summary = store.summary_run_id()
    history = store.client.get_metric_history(summary, "scaling_law/alpha")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(12, alphas[0]), (15, alphas[1])]
    for key in ("params_opt", "params_opt_low", "params_opt_high", "loss", "E", "beta"):
        assert [m.step for m in store.client.get_metric_history(summary, f"scaling_law/{key}")] in ([12, 15], [15, 12])
    note = store.client.get_experiment(store.experiment_id).tags["mlflow.note.content"]
    assert "Next run:" in note and "law fitted on 15 runs" in note and "Plan: " in note and "Stage" in note
