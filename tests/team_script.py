"""One member of a team: a small training run with the real callbacks, logging to a shared MLflow store.

    python tests/team_script.py --uri URI --experiment NAME --d-model 16 --steps 12 --name r0 --out r0.json
        [--start-at EPOCH_SECONDS]

Imports first, then waits until `--start-at` so that processes started together open their runs at the same
moment (the experiment-creation race). Writes {"run_id", "status", "n_runs", "warnings"} to `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import MLFlowLogger
from lightning_scaling.callbacks import PowerLR, ScalingLawAdvisor, ScalingTracker
from lightning_scaling.integrations.loggers import open_mlflow_runs

T = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--no-retry", action="store_true", help="let Lightning open the run (the race)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(0, verbose=False)
    model = TinyGPT(d_model=args.d_model, n_layer=1, n_head=2, seq_len=T, lr=3e-3)
    dm = ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=1_000_000, seed=0, val_windows=16)
    logger = MLFlowLogger(experiment_name=args.experiment, tracking_uri=args.uri, run_name=args.name)
    advisor = ScalingLawAdvisor(bootstrap=50, growth=4.0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=args.steps, logger=logger,
                      callbacks=[ScalingTracker(log_every_n_steps=5), PowerLR(), advisor],
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      val_check_interval=args.steps, limit_val_batches=4, log_every_n_steps=5)
    time.sleep(max(0.0, args.start_at - time.time()))
    if not args.no_retry:
        open_mlflow_runs(trainer)  # Lightning would open the run without a retry, before any callback hook
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, dm)
    rec = advisor.recommendation or {}
    ours = [str(w.message) for w in caught if "ScalingLawAdvisor" in str(w.message)]
    with open(args.out, "w") as fh:
        json.dump({"run_id": logger.run_id, "status": rec.get("status"), "n_runs": rec.get("n_runs"),
                   "warnings": ours}, fh)


if __name__ == "__main__":
    main()
