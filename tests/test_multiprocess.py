"""The callbacks on 2 CPU processes: DDP (gloo), and FSDP2 through Lightning's ModelParallelStrategy with a resume.

Each run is `multiprocess_script.py` in a subprocess (Lightning's launcher starts the second rank by re-running it);
every rank writes what it saw, and the numbers are compared across ranks and against the independent per-rank
counts: tokens are the global count, masks and muP groups are identical on every rank, the learning rate agrees
at every step, the closing hook ran once, MLflow holds one training run, and between logging intervals no rank
issued a collective or read a device tensor on the host from this package's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("multiprocess_script.py")
STEPS = 12
LOG_EVERY = 4


def launch(out: Path, strategy: str, *extra: str) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), strategy, str(STEPS), *extra], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def training_runs(out: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multiprocess")
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if r.data.tags.get("lightning_scaling.summary") != "true"], runs


def check_agreement(ranks: list[dict], steps: int = STEPS, tokens_before: float = 0) -> None:
    a, b = ranks
    assert a["world_size"] == b["world_size"] == 2
    global_tokens = tokens_before + a["local_tokens"] + b["local_tokens"]
    assert a["tracker"]["scaling/tokens"] == b["tracker"]["scaling/tokens"] == global_tokens
    assert a["tracker"] == b["tracker"]
    assert a["masks_sha256"] == b["masks_sha256"] and a["sparsity"] == b["sparsity"] == 0.5
    assert a["groups_sha256"] == b["groups_sha256"]
    assert a["lrs"] == b["lrs"] and len(a["lrs"]) == steps
    assert [r["advised"] for r in ranks] == [True, False], "the closing hook runs once, on rank zero"


def test_ddp_two_processes(tmp_path):
    ranks = launch(tmp_path, "ddp")
    check_agreement(ranks)
    sync_steps = {1} | {s for s in range(1, STEPS + 1) if s % LOG_EVERY == 0}
    for rank in ranks:
        for record in rank["per_step"]:
            busy = record.get("collectives", 0) + record.get("host_reads", 0)
            if record["step"] in sync_steps:
                assert record.get("collectives", 0) <= 4, record  # the clock's and the tracker's reduce
            else:
                assert busy == 0, f"rank {rank['rank']} synced between logging intervals: {record}"
    _, training, runs = training_runs(tmp_path)
    assert len(training) == 1 and len(runs) == 2, "one training run plus the summary run"
    assert training[0].data.metrics["scaling/tokens"] == ranks[0]["tracker"]["scaling/tokens"]


def test_fsdp2_full_counts_and_exact_resume(tmp_path):
    from compat_models import HFGPT2

    full = launch(tmp_path / "full", "fsdp2", "--save-every", str(STEPS // 2))
    check_agreement(full)
    assert full[0]["tracker"]["params_total"] == sum(p.numel() for p in HFGPT2().parameters()), "full-model count"
    ckpt = tmp_path / "full" / "ckpt" / f"epoch=0-step={STEPS // 2}.ckpt"
    resumed = launch(tmp_path / "resumed", "fsdp2", "--resume", str(ckpt))
    import torch

    tokens_at_ckpt = torch.load(ckpt, weights_only=False)["callbacks"]["ScalingTracker{}"]["clock"]["exact_tokens"]
    check_agreement(resumed, steps=STEPS - STEPS // 2, tokens_before=tokens_at_ckpt)
    for key in ("tracker", "masks_sha256", "groups_sha256"):
        assert resumed[0][key] == full[0][key], key
    assert resumed[0]["lrs"] == full[0]["lrs"][STEPS // 2:]
    # lineage: the resumed run names the run whose checkpoint it continued, and supersedes it
    first_run = full[0]["run_id"]
    client, training, _ = training_runs(tmp_path / "resumed")
    assert training[0].data.tags["lightning_scaling.resumed_from"] == first_run
