"""The whole-curve law (numpy and scipy only): the loss along a run as a function of the learning rates it has seen.

- `annealing`: the learning-rate annealing law of one curve (Tissue et al. 2024) and its schedule areas;
- `forecast`: the law fitted across runs (shared shape, per-run coefficients) and the forecast of a run's rest;
- `stacking`: the final-loss law across the other runs stacked with a run's own curve forecast;
- `correction`: every validation point of a run corrected for its schedule, as points of the final-loss law.
"""
