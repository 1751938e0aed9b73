"""Constrained argument types for the callbacks, so that LightningCLI rejects a bad YAML value at parse time with
a message naming the field (jsonargparse reads these type hints); `__init__` validates the same ranges for
Python users, and the cross-field rules (e.g. pruning start before end)."""

from __future__ import annotations

from typing import Literal

from jsonargparse.typing import (  # noqa: F401  (re-exported for the callbacks' signatures)
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

Sparsity = restricted_number_type("Sparsity", float, [(">=", 0), ("<", 1)])
PowerExponent = restricted_number_type("PowerExponent", float, [(">=", -1), ("<", 0)])
DecayShape = Literal["exponential", "linear", "1-sqrt"]
PruningScope = Literal["layer", "global"]
ParamsBasis = Literal["non_embedding", "total"]
HiddenInit = Literal["fan_in", "fixed"]
OptimizerKind = Literal["adam", "sgd"]
UseCurves = Literal["auto", "always", "never"]
