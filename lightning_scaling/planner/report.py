"""The planner's words: every renderer of its answers, each taking the typed result (`planner.results`, or the
stage plan of `planner.stages`) or its `to_dict()`.

- `recommendation_sentence`, `next_run_sentence`: what to run next, in one sentence; `format_text`: the command
  line's table of a fitted law and its recommendation; `recommendation_markdown`: the run's note in the MLflow UI;
  `experiment_markdown`: the experiment's description; `refit_metrics`: the summary run's metrics of one refit.
- `advice_text`: the command line's text of the next run (or the refusal).
- `stage_sentence`, `plan_line`, `plan_text`: the next stage of the sweep; `backtest_text`: the forward-chaining
  backtest's table; `predictions_text`: the predicted losses; `data_sentence`, `suggestion_sentence`: which data the
  fit used, and the runs to add.
"""

from __future__ import annotations

import math

from lightning_scaling.law.form import DEFAULT_CONFIDENCE
from lightning_scaling.planner.options import MIN_GROUP
from lightning_scaling.planner.wording import compute_words, count_interval, format_count


def as_dict(result) -> dict:
    """A typed result's `to_dict()`, or the dict itself."""
    return result.to_dict() if hasattr(result, "to_dict") else result


def recommendation_sentence(rec) -> str:
    """One sentence saying what to run next, with the interval when there is one."""
    rec = as_dict(rec)
    what = "average non-zero parameters (N_avg)" if rec.get("params_column") == "params_avg" else "parameters"
    unit = rec.get("data_unit", "tokens")
    s = (
        f"Train next a model of {format_count(rec['params'])} {what} on {format_count(rec['tokens'])} {unit} "
        f"({format_count(rec['tokens_per_param'])} {unit} per parameter, {compute_words(rec)}): "
        f"predicted loss {rec['loss']:.4f}"
    )
    if "loss_low" in rec:
        pct = int(round(100 * rec.get("confidence", DEFAULT_CONFIDENCE)))
        s += f" ({pct}% interval {rec['loss_low']:.4f} to {rec['loss_high']:.4f}"
        if "params_low" in rec:
            s += f"; N in {count_interval(rec, 'params', 'params')}"
        s += ")"
    return s + "."


def format_text(summary) -> str:
    """A human-readable table of a `summarize_fit` / `recommend` dict."""
    summary = as_dict(summary)
    lines = [
        f"law: {summary.get('formula', summary['law'])}, fitted on {summary['n_runs']} runs "
        f"(N from column `{summary['params_column']}`), objective {summary['objective']:.6e}"
    ]
    names = summary.get("parameters", ())
    has_ci = bool(names) and f"{names[0]}_low" in summary
    pct = int(round(100 * summary.get("confidence", DEFAULT_CONFIDENCE)))
    header = f"  {'parameter':<10} {'value':>12}" + (f"   {pct}% interval" if has_ci else "")
    lines.append(header)
    for name in summary.get("parameters", ()):
        row = f"  {name:<10} {summary[name]:>12.6g}"
        if has_ci:
            row += f"   [{summary[name + '_low']:.6g}, {summary[name + '_high']:.6g}]"
        lines.append(row)
    if summary.get("isoflop"):
        iso = summary["isoflop"]
        lines.append(
            f"isoFLOP cross-check (Approach 2): N_opt ~ C^{iso['exponent']:.3f} over {len(iso['groups'])} groups; "
            f"the law implies C^{iso['law_exponent']:.3f}"
        )
        lines.extend(f"  note: {n}" for n in iso["notes"])
    for message in summary.get("boundary", []):
        lines.append(f"WARNING: {message}")
    if "params" in summary:
        lines.append("")
        lines.append(f"compute-optimal run for C = {summary['flops']:.4g} FLOPs (C = 6ND):")
        for key, label in (("params", "params N"), ("tokens", "tokens D"), ("loss", "loss")):
            row = f"  {label:<10} {summary[key]:>12.6g}"
            if f"{key}_low" in summary:
                row += f"   [{summary[key + '_low']:.6g}, {summary[key + '_high']:.6g}]"
            lines.append(row)
        lines.append(f"  tokens/param {summary['tokens_per_param']:.3g}")
        lines.append(summary["sentence"])
    return "\n".join(lines)


def advice_text(advice) -> str:
    """The command line's text of an `Advice`: the law's table and the next run (`format_text`), the law form's
    choice, the backtest and the data used; a refusal's sentence and details without a run size."""
    rec = as_dict(advice)
    if rec["status"] == "insufficient_runs":
        return "\n".join([rec["sentence"], f"Details: {rec['message']}"])
    lines = [format_text(rec)]
    if rec["status"] == "degenerate":
        return "\n".join(lines + [f"WARNING: {d['message']}" for d in rec["degenerate"]] + ["", rec["sentence"]])
    for label, text in (("law form", (rec.get("law_selection") or {}).get("reason")),
                        ("intervals", rec["intervals"].get("meaning")),
                        ("backtest", rec["backtest"].get("sentence")), ("data", rec["data"].get("sentence"))):
        if text:
            lines.append(f"{label}: {text}")
    return "\n".join(lines)


#: Where the whole recommendation is, as the closing hook publishes it.
PUBLISHED = "Details in `scaling_law/recommendation.json`."


def recommendation_markdown(rec, details: str = PUBLISHED) -> str:
    """The run description shown in the MLflow UI: a short table and one sentence saying what to run next; the
    last line says where the details are (`details`: the artifact the closing hook writes, by default)."""
    rec = as_dict(rec)
    if rec.get("status") == "degenerate":
        lines = ["### Scaling law: no recommendation (the fit is degenerate)", "", f"**{rec['sentence']}**", "",
                 f"Fitted on {rec['n_runs']} runs: {rec.get('fitted', rec.get('law', ''))}.", ""]
        lines += [f"- {d['message']}." for d in rec.get("degenerate", [])] + [""]
        lines.append(_runs_line(rec, details))
        return "\n".join(lines)
    if rec.get("status") != "ok":
        lines = ["### Scaling law: not enough runs yet", "", rec.get("sentence", ""), ""]
        if rec.get("message"):
            lines += [f"Details: {rec['message']}", ""]
        lines.append(_runs_line(rec, details))
        return "\n".join(lines)
    pct = int(round(100 * rec.get("confidence", DEFAULT_CONFIDENCE)))

    def interval(key, fmt=format_count):
        return f"{fmt(rec[key + '_low'])} to {fmt(rec[key + '_high'])}" if f"{key}_low" in rec else ""

    def counts(key, column):
        return count_interval(rec, key, column).replace("..", " to ") if f"{key}_low" in rec else ""

    what = "N_avg (non-zero params)" if rec.get("params_column") == "params_avg" else "parameters N"
    unit = rec.get("data_unit", "tokens")
    rows = [
        (what, format_count(rec["params"]), counts("params", "params")),
        (f"{unit} D", format_count(rec["tokens"]), counts("tokens", "tokens")),
        ("compute C = 6ND" if unit == "tokens" else "compute", compute_words(rec), rec.get("budget_rule") or ""),
        (f"{unit} per parameter", format_count(rec["tokens_per_param"]), ""),
        ("predicted loss", f"{rec['loss']:.4f}", interval("loss", lambda v: f"{v:.4f}")),
    ]
    law = rec.get("fitted", rec.get("formula", rec.get("law", "")))
    lines = [
        f"### Next run: {format_count(rec['params'])} parameters on {format_count(rec['tokens'])} {unit}",
        "",
        f"**{rec['sentence']}**",
        "",
        f"| | value | {pct}% interval |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"Law fitted on {rec['n_runs']} runs: {law}.",
    ]
    for message in rec.get("boundary", []):
        lines.append(f"Warning: {message}.")
    if rec.get("intervals", {}).get("meaning"):
        lines.append(f"Intervals: {rec['intervals']['meaning']}")
    if rec.get("law_selection"):
        lines.append(f"Law form: {rec['law_selection']['reason']}.")
    if rec.get("backtest", {}).get("sentence"):
        lines.append(f"Backtest: {rec['backtest']['sentence']}.")
    if rec.get("data", {}).get("sentence"):
        lines.append(f"Data: {rec['data']['sentence']}.")
    if rec.get("plan"):
        lines.append(f"Plan: {plan_line(rec['plan'])}")
    settings = rec.get("settings") or {}
    if settings:
        lines.append("Reuse: " + "; ".join(f"{k} {v}" for k, v in settings.items()) + ".")
    lines.append(_runs_line(rec, details))
    return "\n".join(lines)


def _runs_line(rec: dict, details: str = PUBLISHED) -> str:
    excluded = rec["runs"]["excluded"]
    line = f"Runs used: {len(rec['runs']['used'])}; left out: {len(excluded)}"
    if excluded:
        line += " (" + "; ".join(f"{e['run_name'] or e['run_id']}: {e['reason']}" for e in excluded[:6])
        line += "; ..." if len(excluded) > 6 else ""
        line += ")"
    return f"{line}. {details}"


REFIT_KEYS = ("E", "A", "B", "alpha", "beta", "params", "params_low", "params_high", "tokens", "flops", "loss",
              "loss_low", "loss_high")


def refit_metrics(rec) -> dict[str, float]:
    """The summary run's metrics of one refit (`scaling_law/<key>`): the law's parameters, the recommended N with
    its interval, D, C and the predicted loss with its interval; empty without a recommendation."""
    rec = as_dict(rec)
    if rec.get("status") != "ok":
        return {}
    out = {}
    for key in REFIT_KEYS:
        value = rec.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"scaling_law/{'params_opt' + key[6:] if key.startswith('params') else key}"] = float(value)
    return out


def plan_line(plan) -> str:
    """The plan in one line: the target's N_opt with its interval, then the next stage (`planner.stages`)."""
    plan = as_dict(plan)
    fit = plan.get("fit") or {}
    s = ""
    if fit.get("params_opt_at_target"):
        s = f"at the target {plan['target_flops']:.3g} FLOPs, N_opt {format_count(fit['params_opt_at_target'])}"
        if "params_opt_low" in fit:
            s += f" ({format_count(fit['params_opt_low'])} to {format_count(fit['params_opt_high'])})"
        s += ". "
    return s + plan["sentence"]


def experiment_markdown(rec) -> str:
    """The experiment's description (shown on its page in the MLflow UI): the current recommendation and the next
    stage of the plan, in a few lines."""
    rec = as_dict(rec)
    lines = ["### Scaling law: where this experiment stands", ""]
    if rec.get("status") == "ok":
        unit = rec.get("data_unit", "tokens")
        pct = int(round(100 * rec.get("confidence", DEFAULT_CONFIDENCE)))
        s = f"**Next run: {format_count(rec['params'])} parameters on {format_count(rec['tokens'])} {unit}**"
        if "params_low" in rec:
            s += f" (N {pct}% interval {format_count(rec['params_low'])} to {format_count(rec['params_high'])})"
        lines += [s, "", f"Predicted loss {rec['loss']:.4f}; law fitted on {rec['n_runs']} runs: "
                  f"{rec.get('fitted', rec.get('law', ''))}."]
    else:
        lines.append(rec.get("sentence", "No recommendation yet."))
    plan = rec.get("plan")
    if plan:
        lines += ["", f"Plan: {plan_line(plan)}"]
    lines += ["", "Details: the summary run `scaling-law` (its charts show each refit, step = runs fitted)."]
    return "\n".join(lines)



def data_sentence(data: dict) -> str:
    """``data`` in one line: what the fit used, the backtests that decided it and the N_opt intervals."""
    s = f"fitted on {data['used']} ({data['final_points']} runs"
    if data["checkpoint_points"]:
        s += f", {data['checkpoint_points']} checkpoints"
    s += ")"
    mape = data.get("backtest_mape")
    if mape and mape["final_only"] is not None and mape["whole_curve"] is not None:
        s += (f"; backtest MAPE {mape['whole_curve']:.2f}% with checkpoints, {mape['final_only']:.2f}% from final "
              "losses alone")
    iv = data.get("params_interval") or {}
    if iv:
        s += (f"; N_opt interval spans {iv['whole_curve_ratio']:.2f}x with checkpoints, "
              f"{iv['final_only_ratio']:.2f}x without")
    if data["used"] == "final losses":
        s += f"; checkpoints not used: {data['reason']}"
    return s


def suggestion_sentence(suggestions: list[dict], unit: str = "tokens") -> str:
    """The runs to add, in words."""
    return "add runs such as " + "; ".join(
        f"N={format_count(s['params'])} on D={format_count(s['tokens'])} {unit}" for s in suggestions) + "."


def next_run_sentence(rec: dict) -> str:
    """The recommendation's sentence with the sparse next run and the architecture, when there are."""
    s = rec["sentence"].rstrip(".")
    if rec.get("sparse_next"):
        sp = rec["sparse_next"]
        s += (f"; as a sparse run, start from {format_count(sp['initial_params'])} parameters and prune to "
              f"{sp['final_sparsity']:.0%} between {sp['start_fraction']:.0%} and {sp['end_fraction']:.0%} of training")
    arch = rec.get("architecture")
    if arch:
        shape = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "params")
        s += f" (e.g. {shape})"
    return s + "."


LEFT_OVER = 0.05  # a plan done with more than this share of its budget left says why


def stage_sentence(plan) -> str:
    """The stage plan (`planner.stages`) in one sentence: what to train next, or why the sweep is done."""
    plan = as_dict(plan)
    if plan["done"] and plan.get("left_out") and plan["budget_left"] > 0:
        return (f"No stage this family can train: {plan['left_out'][0]['reason']} (every group of the "
                f"{'first stage' if plan['basis'] == 'prior' else 'stage'} is left out; a larger budget, or shorter "
                "runs allowed, would make room).")
    if plan["done"] and plan["budget_left"] >= LEFT_OVER * plan["budget"]:
        return (f"No further stage: no group of at least {MIN_GROUP} new runs fits in what is left "
                f"({format_count(plan['budget_left'])} of {format_count(plan['budget'])} FLOPs) and lowers the "
                "uncertainty of N_opt at the target; train the target run the recommendation sizes.")
    if plan["done"]:
        return (f"The budget is spent ({format_count(plan['spent'])} of {format_count(plan['budget'])} FLOPs): no "
                "further stage; train the target run the recommendation sizes.")
    groups = sorted({r["group"] for r in plan["runs"]})
    s = (f"Stage {plan['stage']}: train {len(plan['runs'])} runs in {len(groups)} isoFLOP group"
         f"{'s' if len(groups) > 1 else ''} ({format_count(plan['stage_flops'])} FLOPs; "
         f"{format_count(max(plan['budget_left'], 0.0))} left of {format_count(plan['budget'])})")
    if plan["basis"] == "prior":
        s += ", bracketing the prior's optimum widely (no fit yet)"
    exp = plan.get("expected") or {}
    if exp.get("shrink") is not None:
        s += f"; expected to shrink the uncertainty of N_opt at the target to {exp['shrink']:.0%} of today's"
        if exp.get("interval_expected"):
            lo, hi = exp["interval_now"]
            elo, ehi = exp["interval_expected"]
            s += (f" (interval {format_count(lo)}..{format_count(hi)} now, about {format_count(elo)}.."
                  f"{format_count(ehi)} after)")
    return s + "."


def backtest_text(result) -> str:
    """The backtest as a table, one fold per line."""
    result = as_dict(result)
    pct = int(round(100 * result["confidence"]))
    lines = [f"backtest of the {result['form']} law: forward chaining over compute "
             f"({'one fold per isoFLOP budget' if result['design'] == 'isoflop' else 'shares of the runs by compute'})"]
    if result.get("law_selection"):
        lines.append(f"law form: {result['law_selection']['reason']}")
    lines.append(f"  {'fit on':>7} {'up to C':>10} {'predict':>7} {'at C':>10} {'MAPE':>7} {'max err':>8} "
                 f"{f'{pct}% covered':>12}  N_opt law / isoFLOP")
    for f in result["folds"]:
        covered = f"{f['covered']}/{f['test_runs']}" if f["covered"] is not None else "n/a"
        iso = ", ".join(f"{g['ratio']:.2f}" for g in f["isoflop"]) or "-"
        lines.append(f"  {f['train_runs']:>7} {f['train_max_flops']:>10.3g} {f['test_runs']:>7} "
                     f"{f['test_flops']:>10.3g} {f['mape']:>6.2f}% {f['max_error']:>7.2f}% {covered:>12}  {iso}")
    if result["held_out"]:
        cov = (f"; intervals covered {result['covered']} of the calibrated folds' runs "
               f"({100 * result['coverage']:.0f}%)" if result["coverage"] is not None else "")
        lines.append(f"pooled: MAPE {result['mape']:.2f}% over {result['held_out']} held-out runs{cov}")
    lines.append(result["sentence"])
    return "\n".join(lines)


def predictions_text(rows) -> str:
    """The predictions (`planner.predict`) as a table, one point per line."""
    rows = [as_dict(r) for r in rows]
    pct = int(round(100 * rows[0]["confidence"]))
    lines = [f"law: {rows[0]['law']}; {pct}% prediction intervals ({rows[0]['interval']})",
             f"  {'params':>12} {'tokens':>12} {'loss':>8}   {pct}% interval"]
    lines += [f"  {r['params']:>12.4g} {r['tokens']:>12.4g} {r['loss']:>8.4f}   [{r['loss_low']:.4f}, "
              f"{r['loss_high']:.4f}]" for r in rows]
    return "\n".join(lines)


def plan_text(plan) -> str:
    """The stage plan (`planner.sweep.plan_sweep`) as the command line prints it: the sentence, what it rests on,
    the runs with their commands, and the learning rate and batch size."""
    plan = as_dict(plan)
    lines = [plan["sentence"], ""]
    if plan["basis"] == "prior":
        lines.append(f"prior: {plan['prior']['law']} ({plan['prior']['used_for']})")
    else:
        fit = plan["fit"]
        s = f"law now: {fit['law']}; N_opt at the target {format_count(fit['params_opt_at_target'])}"
        if "params_opt_low" in fit:
            s += (f" ({int(round(100 * fit['confidence']))}% interval {format_count(fit['params_opt_low'])}.."
                  f"{format_count(fit['params_opt_high'])})")
        lines.append(s)
    if plan["runs"]:
        lines += ["", f"  {'group':<16} {'params':>10} {'tokens':>10} {'FLOPs':>10}  command"]
        for r in plan["runs"]:
            lines.append(f"  {r['group']:<16} {format_count(r['params']):>10} {format_count(r['tokens']):>10} "
                         f"{r['flops']:>10.3g}  {r.get('command', '')}")
    hp = plan.get("hyperparameters") or {}
    if hp:
        lines += ["", f"learning rate and batch size ({hp['kind']}): {hp['why']}"]
        lines += [f"  learning-rate sweep not used: {why}" for why in hp.get("sweeps_not_used", [])]
    return "\n".join(lines)
