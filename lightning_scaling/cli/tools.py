"""The commands around the law: `demo` (the law recovered from runs generated from the published Chinchilla law),
`coord-check` (muP's coordinate check of a model family) and `train` (LightningCLI's `fit` from a YAML config)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lightning_scaling.cli import deferred
from lightning_scaling.cli.command import Command
from lightning_scaling.cli.options import BOOTSTRAP, CONFIDENCE, FORMAT, SEED, argument
from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law import CHINCHILLA_PAPER_LAW, ChinchillaFit, compute_optimal, synthetic_runs
from lightning_scaling.planner import format_text
from lightning_scaling.planner.recommendation import recommend

DEMO_BUDGETS = (1e18, 3e18, 1e19, 3e19)  # four isoFLOP groups half a decade apart, as a first sweep spaces them


# -- demo ---------------------------------------------------------------------------------------------------------
def run_demo(args) -> dict:
    law = CHINCHILLA_PAPER_LAW
    budgets = list(DEMO_BUDGETS)
    N, D, L = synthetic_runs(law, budgets, sizes_per_budget=5, noise=0.005, seed=args.seed)
    next_flops = 4 * max(budgets)
    out = _demo_recommendation(N, D, L, next_flops, args)
    truth = compute_optimal(law, next_flops)
    out["demo"] = {
        "true_law": law.to_dict(),
        "true_optimum": truth.to_dict(),
        "runs": [{"params": float(n), "tokens": float(d), "loss": float(x)} for n, d, x in zip(N, D, L)],
        "design": f"{len(budgets)} isoFLOP groups at C = {', '.join(f'{c:.0e}' for c in budgets)} FLOPs, "
        "5 sizes each, 0.5% log-normal loss noise",
    }
    return out


def _demo_recommendation(N, D, L, next_flops: float, args) -> dict:
    fit = ChinchillaFit(warn=False).fit(N, D, L)  # the demo's law is interior; its boundary_ would say otherwise
    boot = fit.bootstrap(args.bootstrap or 1000, seed=args.seed, confidence=args.confidence)
    return recommend(fit, next_flops, boot)


def demo_text(out: dict) -> str:
    demo = out["demo"]
    truth, true_law = demo["true_optimum"], demo["true_law"]
    lines = [
        "lightning-scaling demo: runs generated from the published Chinchilla law "
        "(Hoffmann et al. 2022, Eq. 10: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)",
        f"design: {demo['design']} ({len(demo['runs'])} runs)",
        "",
        format_text(out),
        "",
        f"truth at C = {out['flops']:.4g}: N_opt = {truth['params']:.4g}, D_opt = {truth['tokens']:.4g}, "
        f"loss = {truth['loss']:.4f} (true alpha = {true_law['alpha']}, beta = {true_law['beta']})",
    ]
    inside = out["params_low"] <= truth["params"] <= out["params_high"]
    lines.append(f"the true N_opt is {'inside' if inside else 'OUTSIDE'} the {int(100 * out['confidence'])}% interval")
    return "\n".join(lines)


# -- coord-check --------------------------------------------------------------------------------------------------
def run_coord_check(args) -> dict:
    """Run the coordinate check of a config file; write a plot and JSON per parametrisation into `--out`."""
    try:
        config = yaml.safe_load(Path(args.config).read_text())
    except yaml.YAMLError as err:
        raise ConfigurationError(f"{args.config}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"{args.config}: expected a mapping of config keys, got {type(config).__name__}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name, result in deferred.coord_check(config).items():
        plot = result.plot(out_dir / f"coord_check_{name}.png")
        data = result.to_dict()
        data["plot"] = str(plot)
        (out_dir / f"coord_check_{name}.json").write_text(json.dumps(data, indent=2))
        report[name] = data
    return report


def coord_check_text(report: dict) -> str:
    lines = []
    for name, data in report.items():
        slopes = data["slopes"]
        worst = max(slopes, key=lambda k: abs(slopes[k]))
        lines.append(f"{name}: slope of log mean|activation| against log width at step {len(data['sizes'])}, "
                     f"widths {data['widths']} (plot: {data['plot']})")
        lines.extend(f"  {layer:<28} {slope:+.3f}" for layer, slope in slopes.items())
        lines.append(f"  largest |slope|: {worst} {slopes[worst]:+.3f}"
                     + ("  (flat: muP holds)" if abs(slopes[worst]) <= 0.1 else "  (grows with width)"))
    return "\n".join(lines)


# -- the commands -------------------------------------------------------------------------------------------------
DEMO = Command(
    "demo", "fit runs generated from the published Chinchilla law and recommend",
    (FORMAT, BOOTSTRAP.but(default=1000), SEED, CONFIDENCE), run_demo, demo_text)

TRAIN = Command(
    "train", "train with LightningCLI from a YAML config (e.g. examples/tiny_gpt/config.yaml); every option after "
    "`train` goes to LightningCLI's `fit`", forward=deferred.train)

COORD_CHECK = Command(
    "coord-check", "muP coordinate check: activation size against width per layer",
    (argument("--config", required=True, metavar="CONFIG.yaml",
              help="model, data, widths (see examples/tiny_gpt/coord_check.yaml)"),
     argument("--out", default="coord_check", metavar="DIR", help="folder for plots and JSON (default coord_check)"),
     FORMAT),
    run_coord_check, coord_check_text)
