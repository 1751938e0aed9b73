"""From a fitted law to a decision: the next run's size, with intervals, in one serialisable object, and its words.

`summarize_fit` gives the law with bootstrap intervals on its parameters and the isoFLOP cross-check;
`recommend` adds the compute-optimal run for a budget C (Hoffmann et al. 2022, Eq. 4) with intervals on N, D and
the predicted loss. Both return plain dicts whose keys are the command line's JSON schema, so the CLI, the closing
hook and the MLflow summary all say the same thing; `figure_data` adds the curves the figures draw. The fit is any
law form (`lightning_scaling.law.form`): everything is asked of it through that interface.

The words: `recommendation_sentence` (one line), `format_text` (the command line's table) and
`recommendation_markdown` (the run description in the MLflow UI).
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.law.form import DEFAULT_CONFIDENCE, Intervals
from lightning_scaling.law.isoflop import group_by_flops, isoflop_analysis
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

ALLOCATION_KEYS = ("params", "tokens", "flops", "loss")


def optimal_params_exponent(fit, flops: float) -> float:
    """a in N_opt ~ C^a at `flops`, from the law form's own compute-optimal sizes at C and 2C (NaN when the law
    gives no finite positive size, as a degenerate fit may)."""
    with np.errstate(all="ignore"):
        low, high = fit.compute_optimal(flops).params, fit.compute_optimal(2.0 * flops).params
    if not (0 < low < math.inf and 0 < high < math.inf):
        return math.nan
    return math.log(high / low) / math.log(2.0)


def summarize_fit(fit, bootstrap: Intervals | None = None, flops=None, points=None) -> dict:
    """The fitted law as a dict: the form's own `to_dict` (law, parameters, objective, n_runs, params_column,
    boundary) and the isoFLOP cross-check (Approach 2) with the exponent the law implies.

    With `bootstrap`, each parameter gets ``<name>_low`` / ``<name>_high`` (percentile bounds) and the dict has
    ``confidence`` and ``bootstrap`` (the number of replicates). `points` (N, D, loss) are the runs the isoFLOP
    cross-check groups (default the fit's own points; a whole-curve fit passes the final losses).
    """
    out = fit.to_dict()
    if bootstrap is not None:
        for name, (lo, hi) in bootstrap.parameter_intervals().items():
            out[f"{name}_low"], out[f"{name}_high"] = lo, hi
        out["confidence"] = bootstrap.confidence
        out["bootstrap"] = bootstrap.n_resamples
        out["seed"] = bootstrap.seed
    iso = isoflop_analysis(*(points if points is not None else (fit.N_, fit.D_, fit.loss_)), flops)
    if iso is not None:
        reference = float(np.exp(np.mean(np.log([g.flops for g in iso.groups]))))
        out["isoflop"] = {**iso.to_dict(), "law_exponent": optimal_params_exponent(fit, reference)}
    else:
        out["isoflop"] = None
    return out


def recommend(fit, flops: float, bootstrap: Intervals | None = None, run_flops=None, points=None) -> dict:
    """The compute-optimal next run for a budget of `flops` FLOPs (C = 6 N D), with the law it came from.

    Returns:
        `summarize_fit`'s dict plus ``params``, ``tokens``, ``flops``, ``loss`` and ``tokens_per_param``; with
        `bootstrap`, ``<key>_low`` / ``<key>_high`` for each of params, tokens, flops and loss (the budget is
        given, so its bounds equal it), and a one-line ``sentence`` saying what to run next.
    """
    out = summarize_fit(fit, bootstrap, run_flops, points)
    allocation = fit.compute_optimal(flops)
    out.update(allocation.to_dict())
    if bootstrap is not None:
        intervals = bootstrap.allocation_intervals(flops)
        for key in ("params", "tokens", "loss"):
            out[f"{key}_low"], out[f"{key}_high"] = intervals[key]
        out["flops_low"] = out["flops_high"] = allocation.flops
    out["sentence"] = recommendation_sentence(out)
    return out


FIGURE_GROUPS = 12  # isoFLOP curves drawn at most: beyond that many budgets, the runs are binned by compute


def figure_data(fit, run_flops, budget: float, points: int = 100) -> dict:
    """The curves the figures draw, from the law form itself: the compute-optimal frontier L_opt(C) from half the
    smallest run's compute to three times past the budget, and the law along each isoFLOP group's curve C = 6ND
    with the group's optimum (runs at more than `FIGURE_GROUPS` budgets are split into that many equal-count
    compute bins, each drawn at its mean compute, so that the figure and recommendation.json stay small)."""
    C = np.asarray(run_flops, float)
    grid = np.geomspace(C.min() / 2, max(budget, C.max()) * 3, points)
    with np.errstate(all="ignore"):  # a degenerate fit's allocation can be 0 or infinite: drawn where finite
        frontier = [fit.compute_optimal(c) for c in grid]
    groups = []
    N = np.asarray(fit.N_, float)
    budgets = group_by_flops(C)
    if len(budgets) > FIGURE_GROUPS:  # runs at many budgets (a large store): curves for equal-count compute bins
        budgets = [np.sort(b) for b in np.array_split(np.argsort(C, kind="stable"), FIGURE_GROUPS)]
    for idx in budgets:
        c = float(np.exp(np.log(C[idx]).mean()))
        n = np.geomspace(N[idx].min() / 3, N[idx].max() * 3, points // 2)
        with np.errstate(all="ignore"):
            opt = fit.compute_optimal(c)
        law = np.asarray(fit.predict(n, c / (FLOPS_PER_PARAM_TOKEN * n)))
        groups.append({"flops": c, "members": [int(i) for i in idx], "params": n.tolist(), "loss": law.tolist(),
                       "params_opt": opt.params, "loss_opt": opt.loss})
    return {"frontier": {"flops": grid.tolist(), "loss": [a.loss for a in frontier]}, "isoflop": groups}


def format_count(x: float) -> str:
    """3 significant figures with an SI suffix: 1.23M, 4.5B, 6.7e+21."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale and abs(x) < 1e15:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def recommendation_sentence(rec: dict) -> str:
    """One sentence saying what to run next, with the interval when there is one."""
    what = "average non-zero parameters (N_avg)" if rec.get("params_column") == "params_avg" else "parameters"
    unit = rec.get("data_unit", "tokens")
    s = (
        f"Train next a model of {format_count(rec['params'])} {what} on {format_count(rec['tokens'])} {unit} "
        f"({format_count(rec['tokens_per_param'])} {unit} per parameter, {rec['flops']:.3g} FLOPs): "
        f"predicted loss {rec['loss']:.4f}"
    )
    if "loss_low" in rec:
        pct = int(round(100 * rec.get("confidence", DEFAULT_CONFIDENCE)))
        s += f" ({pct}% interval {rec['loss_low']:.4f} to {rec['loss_high']:.4f}"
        if "params_low" in rec:
            s += f"; N in {format_count(rec['params_low'])}..{format_count(rec['params_high'])}"
        s += ")"
    return s + "."


def format_text(summary: dict) -> str:
    """A human-readable table of a `summarize_fit` / `recommend` dict."""
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


def recommendation_markdown(rec: dict) -> str:
    """The run description shown in the MLflow UI: a short table and one sentence saying what to run next."""
    if rec.get("status") == "degenerate":
        lines = ["### Scaling law: no recommendation (the fit is degenerate)", "", f"**{rec['sentence']}**", "",
                 f"Fitted on {rec['n_runs']} runs: {rec.get('fitted', rec.get('law', ''))}.", ""]
        lines += [f"- {d['message']}." for d in rec.get("degenerate", [])] + [""]
        lines.append(_runs_line(rec))
        return "\n".join(lines)
    if rec.get("status") != "ok":
        lines = ["### Scaling law: not enough runs yet", "", rec.get("sentence", ""), ""]
        if rec.get("message"):
            lines += [f"Details: {rec['message']}", ""]
        lines.append(_runs_line(rec))
        return "\n".join(lines)
    pct = int(round(100 * rec.get("confidence", DEFAULT_CONFIDENCE)))

    def interval(key, fmt=format_count):
        return f"{fmt(rec[key + '_low'])} to {fmt(rec[key + '_high'])}" if f"{key}_low" in rec else ""

    what = "N_avg (non-zero params)" if rec.get("params_column") == "params_avg" else "parameters N"
    unit = rec.get("data_unit", "tokens")
    rows = [
        (what, format_count(rec["params"]), interval("params")),
        (f"{unit} D", format_count(rec["tokens"]), interval("tokens")),
        ("compute C = 6ND", f"{rec['flops']:.3g} FLOPs", rec.get("budget_rule") or ""),
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
    lines.append(_runs_line(rec))
    return "\n".join(lines)


def _runs_line(rec: dict) -> str:
    excluded = rec["runs"]["excluded"]
    line = f"Runs used: {len(rec['runs']['used'])}; left out: {len(excluded)}"
    if excluded:
        line += " (" + "; ".join(f"{e['run_name'] or e['run_id']}: {e['reason']}" for e in excluded[:6])
        line += "; ..." if len(excluded) > 6 else ""
        line += ")"
    return line + ". Details in `scaling_law/recommendation.json`."


REFIT_KEYS = ("E", "A", "B", "alpha", "beta", "params", "params_low", "params_high", "tokens", "flops", "loss",
              "loss_low", "loss_high")


def refit_metrics(rec: dict) -> dict[str, float]:
    """The summary run's metrics of one refit (`scaling_law/<key>`): the law's parameters, the recommended N with
    its interval, D, C and the predicted loss with its interval; empty without a recommendation."""
    if rec.get("status") != "ok":
        return {}
    out = {}
    for key in REFIT_KEYS:
        value = rec.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"scaling_law/{'params_opt' + key[6:] if key.startswith('params') else key}"] = float(value)
    return out


def plan_line(plan: dict) -> str:
    """The plan in one line: the target's N_opt with its interval, then the next stage (`planner.stages`)."""
    fit = plan.get("fit") or {}
    s = ""
    if fit.get("params_opt_at_target"):
        s = f"at the target {plan['target_flops']:.3g} FLOPs, N_opt {format_count(fit['params_opt_at_target'])}"
        if "params_opt_low" in fit:
            s += f" ({format_count(fit['params_opt_low'])} to {format_count(fit['params_opt_high'])})"
        s += ". "
    return s + plan["sentence"]


def experiment_markdown(rec: dict) -> str:
    """The experiment's description (shown on its page in the MLflow UI): the current recommendation and the next
    stage of the plan, in a few lines."""
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

