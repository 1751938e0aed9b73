"""Run records: what the closing hook knows about each logged run, and which runs a fit may use.

A `RunRecord` is read from a tracking store (see `integrations.mlflow_store`) in the `ScalingTracker` schema: N
(the average non-zero parameter count N_avg, equal to the dense count for a dense run), D (tokens), C (measured
FLOPs), the final loss, the run's status, its configuration (muP, learning-rate schedule, pruning) and its lineage
(the run it was resumed from). `select_runs` decides which records a fit may use and says why each other one is
left out; nothing is dropped silently.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from lightning_scaling.runs.schema import FLOPS, PARAMS_AVG, TOKENS
from lightning_scaling.runs.validation import implausible
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

DIVERGENCE_RATIO = 1.5  # a final loss above 1.5x the run's own best loss means training blew up at the end
USABLE_STATUSES = ("FINISHED",)
# measured FLOPs over 6ND: forward-only counting gives 1/3, recomputation and attention more, a small model whose
# embeddings and readout dominate (N counts non-embedding parameters) up to a few hundred, a pruned run (N_avg below
# the dense count it computes with) 1/(1 - sparsity); outside this range N, D or C is not what it claims
FLOPS_RATIO = (0.1, 1e4)
STALE_AFTER_S = 1800.0  # a RUNNING run with no new metric for 30 minutes is taken for a killed process


@dataclass
class RunRecord:
    """One training run as the scaling law sees it."""

    run_id: str
    run_name: str | None = None
    status: str = "FINISHED"
    schema: str | None = None  # the `lightning_scaling.schema` tag; None for runs not written by ScalingTracker
    params: float | None = None  # N_avg: token-weighted mean of non-zero parameters (dense count if dense)
    params_dense: float | None = None  # the dense count of the same basis
    tokens: float | None = None
    flops: float | None = None
    loss: float | None = None
    best_loss: float | None = None  # lowest value of the loss over the run's history
    sparsity: float | None = None  # final sparsity of the basis
    config: dict = field(default_factory=dict)  # scaling/* parameters: muP, PowerLR, pruning settings
    resumed_from: str | None = None
    start_time: int | None = None
    is_summary: bool = False
    complete: bool = False  # training ended normally (the tracker's tag), though MLflow may still say RUNNING
    last_activity: int | None = None  # ms since the epoch of the run's latest metric (read for RUNNING runs)
    stopped_early: str | None = None  # why `LossForecast` stopped it (its final loss is not a final point)

    @property
    def sparse(self) -> bool:
        return bool(self.sparsity) and self.sparsity > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Selection:
    """The records a fit may use, and every other record with the reason it was left out."""

    used: list[RunRecord]
    excluded: list[tuple[RunRecord, str]]

    def to_dict(self) -> dict:
        return {
            "used": [r.to_dict() for r in self.used],
            "excluded": [{"run_id": r.run_id, "run_name": r.run_name, "reason": why} for r, why in self.excluded],
        }


def _finite_positive(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def select_runs(records: list[RunRecord], current_run_id: str | None = None,
                divergence_ratio: float = DIVERGENCE_RATIO, loss_key: str = "val_loss",
                stale_after: float = STALE_AFTER_S, now: float | None = None) -> Selection:
    """Keep the runs a fit may use.

    Left out, each with its reason: summary runs; FAILED, KILLED and other unfinished runs (a RUNNING run counts
    once its training ended normally, `complete`: the current run inside its closing hook, or another run whose
    hook is running now; a RUNNING run with no new metric for `stale_after` seconds is called stale: a killed
    process, which comes back when it is resumed under the same run id); runs without the schema tag; runs missing
    N, D, C or the loss; NaN, infinite or non-positive values; implausible ones (a magnitude outside
    `validation.PLAUSIBLE`, or measured FLOPs outside `FLOPS_RATIO` x 6ND); diverged runs; and runs superseded by a
    run resumed from them (the resumed run carries the whole history: its counters continue from the checkpoint).

    Args:
        now: the time in seconds since the epoch (default: the clock), for the staleness of RUNNING runs.
    """
    now = time.time() if now is None else now
    used: list[RunRecord] = []
    excluded: list[tuple[RunRecord, str]] = []
    superseded_by = {r.resumed_from: r.run_id for r in records if r.resumed_from}
    for r in records:
        why = (_state_reason(r, r.run_id == current_run_id, superseded_by, stale_after, now)
               or _values_reason(r, loss_key, divergence_ratio))
        if why:
            excluded.append((r, why))
        else:
            used.append(r)
    return Selection(used=used, excluded=excluded)


def _state_reason(r: RunRecord, current: bool, superseded_by: dict, stale_after: float, now: float) -> str | None:
    """Why a run is left out for what it is (a summary, unfinished, untagged, superseded, stopped), or None."""
    if r.is_summary:
        return "summary run written by ScalingLawAdvisor (not a training run)"
    if r.status == "RUNNING" and not (current or r.complete):
        idle = now - (r.last_activity or r.start_time or 0) / 1000.0
        if idle > stale_after:
            return (f"stale: RUNNING with no new metric for {idle:.0f} s (more than {stale_after:g} "
                    "s): a killed process? resume it under the same run id to bring it back")
        return "status RUNNING: still training"
    if r.status not in USABLE_STATUSES and r.status != "RUNNING":
        return f"status {r.status}: only finished runs are fitted"
    if r.schema is None:
        return "no `lightning_scaling.schema` tag: not logged with ScalingTracker"
    if r.run_id in superseded_by:
        return f"superseded by run {superseded_by[r.run_id]}, resumed from its checkpoint"
    if r.stopped_early:
        return (f"stopped early: {r.stopped_early} (its last loss is not the loss of its budget; "
                "its curve still informs forecasts)")
    return None


def _values_reason(r: RunRecord, loss_key: str, divergence_ratio: float) -> str | None:
    """Why a run is left out for its values (missing, not finite, implausible, diverged), or None."""
    required = ((PARAMS_AVG, r.params), (TOKENS, r.tokens), (FLOPS, r.flops), (loss_key, r.loss))
    missing = [name for name, value in required if value is None]
    if missing:
        return f"missing metric(s) {missing}"
    bad = [(name, value) for name, value in required if not _finite_positive(value)]
    if bad:
        listing = ", ".join(f"{name} ({value})" for name, value in bad)
        return f"NaN, infinite or non-positive {listing}"
    absurd = [implausible(name, [value]) for name, value in (("params", r.params), ("tokens", r.tokens),
                                                               ("flops", r.flops))]
    absurd = [problem[1] for problem in absurd if problem is not None]
    ratio = r.flops / (FLOPS_PER_PARAM_TOKEN * r.params * r.tokens)
    if not absurd and not (FLOPS_RATIO[0] <= ratio <= FLOPS_RATIO[1]):
        absurd.append(f"measured {FLOPS} {r.flops:.3g} is {ratio:.3g}x 6ND (N {r.params:.3g}, D {r.tokens:.3g}); a "
                      f"training run spends {FLOPS_RATIO[0]:g} to {FLOPS_RATIO[1]:g}x: N, D or C is wrong")
    if absurd:
        return "implausible: " + "; ".join(absurd)
    if r.best_loss is not None and math.isfinite(r.best_loss) and r.loss > divergence_ratio * r.best_loss:
        return (f"diverged: final {loss_key} {r.loss:.4g} is more than {divergence_ratio}x its best "
                f"{r.best_loss:.4g}")
    return None
