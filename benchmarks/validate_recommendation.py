"""Check the demo's recommendation against reality: train the recommended run and compare its loss with the
predicted interval.

Reads the latest recommendation of the demo experiment (the summary run `scaling-law`, written by the closing
hook), trains a held-out run at the recommended size and token budget through the same LightningCLI config as the
demo (the architecture the recommendation proposes, or the nearest 2-layer shape when it proposes none), logs it
to a separate experiment so that it does not enter the fit, and prints predicted against achieved validation loss.

    python benchmarks/validate_recommendation.py [--tracking-uri sqlite:///mlflow.db] [--experiment tiny-gpt-demo]

Run `make demo` first. `lightning-scaling sweep --train-target` does the same at the end of a sweep, inside the
sweep's own experiment (the target run is a run of the sweep); this script keeps the check outside the fit.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HERE = ROOT / "examples" / "tiny_gpt"
# the demo sweeps' own overrides and tokens per step (examples/tiny_gpt/sweep.yaml and sweep_quick.yaml)
FULL_OVERRIDES = ["--data.init_args.batch_size=8"]
QUICK_OVERRIDES = ["--data.init_args.seq_len=32", "--model.init_args.seq_len=32", "--data.init_args.batch_size=8",
                   "--data.init_args.val_windows=128"]
TOKENS_PER_STEP = {"full": 8 * 64, "quick": 8 * 32}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="tiny-gpt-demo")
    parser.add_argument("--quick", action="store_true", help="validate the quick demo's recommendation")
    args = parser.parse_args(argv)

    import mlflow
    import torch

    from examples.tiny_gpt import propose_width
    from lightning_scaling.integrations.lightning_cli import run_cli
    from lightning_scaling.integrations.mlflow_store import MLflowRunStore
    from lightning_scaling.plugins.builtin import gpt_non_embedding_params

    torch.set_num_threads(1)
    client = mlflow.MlflowClient(args.tracking_uri)
    if client.get_experiment_by_name(args.experiment) is None:
        print(f"no experiment {args.experiment!r} at {args.tracking_uri}: run `make demo` first", file=sys.stderr)
        return 2
    rec = MLflowRunStore(args.tracking_uri, experiment_name=args.experiment).latest_recommendation()
    if rec is None:
        print("the experiment has no recommendation yet", file=sys.stderr)
        return 2
    if rec.get("status") != "ok":
        print(f"no usable recommendation: {rec.get('sentence')}", file=sys.stderr)
        return 2
    tokens_per_step = TOKENS_PER_STEP["quick" if args.quick else "full"]
    arch = rec.get("architecture") or {}
    if rec.get("sparse_next"):
        # the law's N is N_avg; a dense run of that size is a point of the same law (Jin et al. 2025), and the
        # architecture in the recommendation is for the sparse run's larger initial size: the demo's own family
        # (two layers, the width alone: what the sweep trained and its closing hook proposes) sizes the dense run
        arch = propose_width(rec["params"], {})
    d_model, n_layer, n_head = arch.get("d_model"), arch.get("n_layer"), arch.get("n_head")
    if not d_model:
        d_model, n_layer, n_head = 32, 2, 2
        while gpt_non_embedding_params(d_model + 16, 2) <= rec["params"]:
            d_model += 16
    N = gpt_non_embedding_params(d_model, n_layer)
    steps = max(1, int(round(rec["tokens"] / tokens_per_step)))
    name = f"validate-d{d_model}-L{n_layer}-{steps}"
    print(f"recommendation: N={rec['params']:.4g}, D={rec['tokens']:.4g} tokens, predicted val_loss "
          f"{rec['loss']:.4f} [{rec['loss_low']:.4f}, {rec['loss_high']:.4f}] ({int(100 * rec['confidence'])}%)")
    print(f"training {name}: d_model={d_model}, n_layer={n_layer}, n_head={n_head} (N={N}), {steps} steps "
          f"({steps * tokens_per_step} tokens)", flush=True)
    cli = ["fit", "--config", str(HERE / "config.yaml"),
           f"--model.init_args.d_model={d_model}", f"--model.init_args.n_layer={n_layer}",
           f"--model.init_args.n_head={n_head}", f"--trainer.max_steps={steps}",
           f"--trainer.val_check_interval={steps}", f"--trainer.logger.init_args.run_name={name}",
           f"--trainer.logger.init_args.experiment_name={args.experiment}-validation",
           f"--trainer.logger.init_args.tracking_uri={args.tracking_uri}"]
    cli += QUICK_OVERRIDES if args.quick else FULL_OVERRIDES
    start = time.perf_counter()
    code = run_cli(cli)
    if code:
        return code
    seconds = time.perf_counter() - start
    vexp = client.get_experiment_by_name(f"{args.experiment}-validation")
    run = client.search_runs([vexp.experiment_id], filter_string=f"attributes.run_name = '{name}'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    achieved = run.data.metrics["val_loss"]
    N_run = run.data.metrics["scaling/params_avg"]
    D_run = run.data.metrics["scaling/tokens"]
    # the law's prediction at the size actually trained (the nearest feasible shape), with the fitted parameters
    at_run = rec["E"] + rec["A"] * N_run ** -rec["alpha"] + rec["B"] * D_run ** -rec["beta"]
    inside = rec["loss_low"] <= achieved <= rec["loss_high"]
    rows = [
        ("recommended N / D", f"{rec['params']:.4g} / {rec['tokens']:.4g}"),
        ("trained N / D", f"{N_run:.4g} / {D_run:.4g}"),
        ("predicted val_loss (recommended run)", f"{rec['loss']:.4f}"),
        (f"{int(100 * rec['confidence'])}% interval", f"[{rec['loss_low']:.4f}, {rec['loss_high']:.4f}]"),
        ("law at the trained N, D", f"{at_run:.4f}"),
        ("achieved val_loss", f"{achieved:.4f}"),
        ("achieved - predicted", f"{achieved - rec['loss']:+.4f} ({100 * (achieved / rec['loss'] - 1):+.2f}%)"),
        ("inside the interval", "yes" if inside else "NO"),
        ("training time", f"{seconds:.0f} s"),
    ]
    print("\n| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if not math.isfinite(achieved):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
