"""How the planner's numbers are worded: counts with SI suffixes, count intervals clipped to what a run can have,
and the next run's compute in the runs' own unit (6ND in FLOPs for tokens; the runs' measured FLOPs for samples)."""

from __future__ import annotations

import statistics

from lightning_scaling.runs.validation import PLAUSIBLE

__all__ = ["compute_words", "count_interval", "format_count", "measured_compute"]


def format_count(x: float) -> str:
    """3 significant figures with an SI suffix: 1.23M, 4.5B, 6.7e+21."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale and abs(x) < 1e15:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def count_interval(rec: dict, key: str, column: str) -> str:
    """``low..high`` of a count (`key` "params" or "tokens"), clipped to what a run can have (`runs.validation`'s
    plausible range of `column`) and saying so: a bootstrap replicate in a degenerate corner of the fit can put a
    bound far outside it (1e-25 parameters)."""
    floor, ceiling = PLAUSIBLE[column]
    low, high = rec[f"{key}_low"], rec[f"{key}_high"]
    text = f"{format_count(max(low, floor))}..{format_count(min(high, ceiling))}"
    clipped = [side for side, hit in (("below", low < floor), ("above", high > ceiling)) if hit]
    return text + (f" (clipped {' and '.join(clipped)} at what a run can have)" if clipped else "")


def measured_compute(rec: dict) -> tuple[float, float] | None:
    """(the next run's compute from the runs' own measured FLOPs, those FLOPs per parameter per unit of data) when
    the runs count their data in another unit than tokens (samples: 6ND is then no FLOP count) and logged their
    FLOPs; else None. The median over the runs of measured FLOPs / (N D)."""
    if rec.get("data_unit", "tokens") == "tokens":
        return None
    ratios = [r["flops"] / r["compute_6nd"] * 6.0 for r in (rec.get("runs") or {}).get("used", [])
              if r.get("flops") and r.get("compute_6nd")]
    if not ratios:
        return None
    per = float(statistics.median(ratios))
    return per * rec["flops"] / 6.0, per


def compute_words(rec: dict) -> str:
    """The next run's compute in words: C = 6ND in FLOPs for tokens; for another unit, the runs' measured FLOPs
    per parameter per unit (labelled), or 6ND said to be no FLOP count when the runs logged none."""
    unit = rec.get("data_unit", "tokens")
    if unit == "tokens":
        return f"{rec['flops']:.3g} FLOPs"
    measured = measured_compute(rec)
    if measured is None:
        return f"6ND = {rec['flops']:.3g} with D in {unit} (not FLOPs: the runs logged no FLOPs)"
    flops, per = measured
    return f"{flops:.3g} FLOPs at the runs' measured {per:.3g} FLOPs per parameter per {unit.rstrip('s')}"
