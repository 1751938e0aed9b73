"""From a fitted law to a decision: the next run's size, with intervals, in one serialisable object.

`summarize_fit` gives the law with bootstrap intervals on its parameters and the isoFLOP cross-check;
`recommend` adds the compute-optimal run for a budget C (Hoffmann et al. 2022, Eq. 4) with intervals on N, D and
the predicted loss. Both return plain dicts whose keys are the command line's JSON schema, so the CLI, the closing
hook and the MLflow summary all say the same thing.
"""

from __future__ import annotations

from ..law.allocation import compute_optimal
from ..law.bootstrap import BootstrapResult
from ..law.isoflop import isoflop_analysis
from ..law.chinchilla import PARAM_NAMES

ALLOCATION_KEYS = ("params", "tokens", "flops", "loss")


def summarize_fit(fit, bootstrap: BootstrapResult | None = None, flops=None) -> dict:
    """The fitted law as a dict: E, A, B, alpha, beta, objective, n_runs, params_column, boundary, isoflop.

    With `bootstrap`, each parameter gets ``<name>_low`` / ``<name>_high`` (percentile bounds) and the dict has
    ``confidence`` and ``bootstrap`` (the number of replicates).
    """
    out = fit.to_dict()
    if bootstrap is not None:
        for name, (lo, hi) in bootstrap.parameter_intervals().items():
            out[f"{name}_low"], out[f"{name}_high"] = lo, hi
        out["confidence"] = bootstrap.confidence
        out["bootstrap"] = bootstrap.n_resamples
        out["seed"] = bootstrap.seed
    iso = isoflop_analysis(fit.N_, fit.D_, fit.loss_, flops)
    law_exponent = fit.beta_ / (fit.alpha_ + fit.beta_)
    out["isoflop"] = None if iso is None else {**iso.to_dict(), "law_exponent": law_exponent}
    return out


def recommend(fit, flops: float, bootstrap: BootstrapResult | None = None, run_flops=None) -> dict:
    """The compute-optimal next run for a budget of `flops` FLOPs (C = 6 N D), with the law it came from.

    Returns:
        `summarize_fit`'s dict plus ``params``, ``tokens``, ``flops``, ``loss`` and ``tokens_per_param``; with
        `bootstrap`, ``<key>_low`` / ``<key>_high`` for each of params, tokens, flops and loss (the budget is
        given, so its bounds equal it), and a one-line ``sentence`` saying what to run next.
    """
    out = summarize_fit(fit, bootstrap, run_flops)
    allocation = compute_optimal(fit.law_, flops)
    out.update(allocation.to_dict())
    if bootstrap is not None:
        intervals = bootstrap.allocation_intervals(flops)
        for key in ("params", "tokens", "loss"):
            out[f"{key}_low"], out[f"{key}_high"] = intervals[key]
        out["flops_low"] = out["flops_high"] = allocation.flops
    out["sentence"] = recommendation_sentence(out)
    return out


def _num(x: float) -> str:
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
        f"Train next a model of {_num(rec['params'])} {what} on {_num(rec['tokens'])} {unit} "
        f"({_num(rec['tokens_per_param'])} {unit} per parameter, {rec['flops']:.3g} FLOPs): "
        f"predicted loss {rec['loss']:.4f}"
    )
    if "loss_low" in rec:
        pct = int(round(100 * rec["confidence"]))
        s += (
            f" ({pct}% interval {rec['loss_low']:.4f} to {rec['loss_high']:.4f}; "
            f"N in {_num(rec['params_low'])}..{_num(rec['params_high'])})"
        )
    return s + "."


def format_text(summary: dict) -> str:
    """A human-readable table of a `summarize_fit` / `recommend` dict."""
    lines = [
        f"law: L(N, D) = E + A/N^alpha + B/D^beta, fitted on {summary['n_runs']} runs "
        f"(N from column `{summary['params_column']}`), Huber objective {summary['objective']:.6e}"
    ]
    has_ci = "E_low" in summary
    pct = int(round(100 * summary.get("confidence", 0.8)))
    header = f"  {'parameter':<10} {'value':>12}" + (f"   {pct}% interval" if has_ci else "")
    lines.append(header)
    for name in PARAM_NAMES:
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
