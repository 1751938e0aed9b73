"""One member of a team: a small training run with the real callbacks, logging to a shared MLflow store.

    python tests/team_script.py --uri URI --experiment NAME --d-model 16 --steps 12 --name r0 --out r0.json
        [--barrier DIR --members N]

Imports and builds its model and data first, then waits at the barrier (a file per member in DIR, until N are
there) so that processes started together open their runs at the same moment (the experiment-creation race).
Writes {"run_id", "status", "n_runs", "warnings", "seconds"} to `--out` (seconds: to the barrier, training, hook).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import MLFlowLogger

from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
from lightning_scaling.callbacks import PowerLR, ScalingLawAdvisor, ScalingTracker
from lightning_scaling.integrations import open_mlflow_runs

T = 32
STARTED = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--barrier", help="a folder shared by the members started together")
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--no-retry", action="store_true", help="let Lightning open the run (the race)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(0, verbose=False)
    model = TinyGPT(d_model=args.d_model, n_layer=1, n_head=2, seq_len=T, lr=3e-3)
    dm = ByteCorpusDataModule(seq_len=T, batch_size=4, max_bytes=1_000_000, seed=0, val_windows=16)
    logger = MLFlowLogger(experiment_name=args.experiment, tracking_uri=args.uri, run_name=args.name)
    advisor = ScalingLawAdvisor(bootstrap=50, growth=4.0, law="chinchilla")  # the store under test, not the law choice
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=args.steps, logger=logger,
                      callbacks=[ScalingTracker(log_every_n_steps=5), PowerLR(), advisor],
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      val_check_interval=args.steps, limit_val_batches=4, log_every_n_steps=5)
    ready = time.time()
    if args.barrier:
        wait_for_the_others(Path(args.barrier), args.name, args.members)
    opened = time.time()
    if not args.no_retry:
        open_mlflow_runs(trainer)  # Lightning would open the run without a retry, before any callback hook
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, dm)
    ended = time.time()
    rec = advisor.recommendation or {}
    ours = [str(w.message) for w in caught if "ScalingLawAdvisor" in str(w.message)]
    with open(args.out, "w") as fh:
        json.dump({"run_id": logger.run_id, "status": rec.get("status"), "n_runs": rec.get("n_runs"),
                   "warnings": ours, "seconds": {"ready": ready - STARTED, "barrier": opened - ready,
                                                 "fit_and_hook": ended - opened}}, fh)


def wait_for_the_others(folder: Path, name: str, members: int, timeout: float = 600.0) -> None:
    """Mark this member ready in `folder` and return once `members` are (each polls, 20 ms apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ready").touch()
    deadline = time.time() + timeout
    while len(list(folder.glob("*.ready"))) < members:
        if time.time() > deadline:
            raise TimeoutError(f"only {len(list(folder.glob('*.ready')))} of {members} members reached the barrier")
        time.sleep(0.02)


if __name__ == "__main__":
    main()
