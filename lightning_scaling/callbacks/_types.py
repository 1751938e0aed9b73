"""Constrained argument types for the callbacks' signatures, so that LightningCLI rejects a bad YAML value at parse
time with a message naming the field (jsonargparse reads these type hints).

The allowed values are declared once, as constraint objects and `Literal`s in `lightning_scaling.options` and beside
the schedules; the types here are built from them. Each callback checks the same constraints in `__init__` (its
`_parameter_constraints`), for Python users, and the cross-field rules (e.g. pruning start before end).
"""

from __future__ import annotations

from jsonargparse.typing import (  # noqa: F401  (re-exported for the callbacks' signatures)
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from lightning_scaling.options import (  # noqa: F401  (re-exported for the callbacks' signatures)
    DecayShape,
    HiddenInit,
    OptimizerKind,
    ParamsBasis,
    PruningScope,
    UseCurves,
)
from lightning_scaling.schedules.lr import POWER_CONSTRAINTS
from lightning_scaling.schedules.sparsity import PRUNING_CONSTRAINTS

Sparsity = restricted_number_type("Sparsity", float, PRUNING_CONSTRAINTS["final_sparsity"].comparisons())
PowerExponent = restricted_number_type("PowerExponent", float, POWER_CONSTRAINTS["b"].comparisons())
