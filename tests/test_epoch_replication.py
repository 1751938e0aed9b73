"""The Epoch replication of Chinchilla's Approach 3 (Besiroglu et al. 2024), on the shared reference data."""

import csv

import numpy as np
import pytest
from conftest import shared_csv

from lightning_scaling import ChinchillaFit

# Besiroglu et al. 2024, plain Huber fit on the 240 runs (see ../shared/data/README.md)
PUBLISHED = {"E": 1.8172, "A": 477.8, "B": 2143.4, "alpha": 0.3473, "beta": 0.3672}
PUBLISHED_OBJECTIVE = 1.018275e-3


def load(name):
    with open(shared_csv(name)) as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([float(r[c]) for r in rows]) for c in ("params", "tokens", "loss"))


def test_reaches_the_published_optimum():
    N, D, L = load("chinchilla_epoch.csv")
    fit = ChinchillaFit().fit(N, D, L)
    assert fit.objective_ <= PUBLISHED_OBJECTIVE
    for name, value in PUBLISHED.items():
        assert getattr(fit, name + "_") == pytest.approx(value, rel=0.005), name
    assert fit.boundary_ == []
