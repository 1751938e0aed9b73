"""Shared fixtures: the reference data folder (optional) and seeded synthetic runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_scaling.law import ChinchillaLaw

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_REASON = "../shared/data not found (reference data is not part of the repository)"

#: A law in the range of published fits (Besiroglu et al. 2024), used as ground truth in tests.
TRUE_LAW = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def shared_csv(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(SHARED_REASON)
    return path


def grid_runs(law=TRUE_LAW, noise=0.01, seed=0, sizes=(3e6, 1e7, 3e7, 1e8, 3e8),
              tokens=(1e8, 4e8, 1.6e9, 6.4e9, 2.5e10)):
    """A full factorial design of sizes x token counts with seeded multiplicative noise."""
    N, D = (x.ravel() for x in np.meshgrid(np.asarray(sizes, float), np.asarray(tokens, float)))
    L = law.loss(N, D) * np.exp(np.random.default_rng(seed).normal(0.0, noise, N.size))
    return N, D, L


@pytest.fixture
def runs():
    return grid_runs()


@pytest.fixture
def single_threaded():
    """Tiny models train fastest on one thread, and a busy 2-core machine does not slow them down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stop_at(step: int):
    """A callback that ends training after `step` optimizer steps, as an interruption would."""
    from lightning.pytorch.callbacks import Callback

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step >= step:
                trainer.should_stop = True

    return StopAt()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A throwaway single-node SLURM cluster (tests/slurm_cluster.py), with ``SLURM_CONF`` set in this process while
    it runs; yields a `SlurmCluster` (`partition`, `env`). Skips, saying why, without SLURM, MUNGE or root."""
    import slurm_cluster as slurm

    reason = slurm.slurm_missing()
    if reason:
        pytest.skip(reason)
    with slurm.cluster() as running:
        yield running
