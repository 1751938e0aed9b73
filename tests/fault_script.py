"""A training process for the fault tests: a small run with the real callbacks, a checkpoint every few steps, and a
pause per step so that a test can kill it or stop its tracking server while it trains.

    python tests/fault_script.py --uri URI --experiment NAME --steps 60 --ckpt-dir DIR --out report.json
        [--step-sleep 0.25] [--resume-run-id RUN_ID --ckpt DIR/last.ckpt]

`--resume-run-id` continues that MLflow run (the same run id) from `--ckpt`. Writes {"run_id", "global_step",
"status", "warnings"} to `--out` when training ends.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling.callbacks import ScalingLawAdvisor, ScalingTracker

T, BATCH, LOG_EVERY = 32, 4, 5


class Pause(Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--step-sleep", type=float, default=0.25)
    parser.add_argument("--resume-run-id")
    parser.add_argument("--ckpt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(0, verbose=False)
    model = TinyGPT(d_model=16, n_layer=1, n_head=2, seq_len=T, lr=3e-3)
    dm = ByteCorpusDataModule(seq_len=T, batch_size=BATCH, max_bytes=1_000_000, seed=0, val_windows=16)
    logger = MLFlowLogger(experiment_name=args.experiment, tracking_uri=args.uri, run_id=args.resume_run_id,
                          run_name=None if args.resume_run_id else "faulty")
    checkpoints = ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=LOG_EVERY, save_last=True,
                                  save_top_k=-1)
    advisor = ScalingLawAdvisor(bootstrap=0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=args.steps, logger=logger,
                      callbacks=[ScalingTracker(log_every_n_steps=LOG_EVERY), checkpoints, Pause(args.step_sleep),
                                 advisor],
                      enable_progress_bar=False, enable_model_summary=False, val_check_interval=LOG_EVERY * 4,
                      limit_val_batches=2, log_every_n_steps=LOG_EVERY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, dm, ckpt_path=args.ckpt)
    rec = advisor.recommendation or {}
    with open(args.out, "w") as fh:
        json.dump({"run_id": logger.run_id, "global_step": trainer.global_step, "status": rec.get("status"),
                   "warnings": [str(w.message) for w in caught if "ScalingLawAdvisor" in str(w.message)]}, fh)


if __name__ == "__main__":
    main()
