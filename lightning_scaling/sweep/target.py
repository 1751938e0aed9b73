"""`--train-target`: train the run the sweep's recommendation sizes, and compare the loss it reaches with the
prediction and its interval (what a team does by hand before it trusts the law with the big run).

The target run is a run of the sweep at stage 0 (`sweep.state`): a re-run that finds it finished reports it without
training it again, and one that finds it interrupted resumes it from its checkpoint.
"""

from __future__ import annotations

import math

from lightning_scaling.errors import ConfigurationError

__all__ = ["target_run", "target_text"]

TARGET_STAGE = 0


def target_run(rec: dict, tokens_per_step: float | None, max_steps: int | None = None) -> dict:
    """The planned run of the recommendation `rec`: its architecture, whole steps of `tokens_per_step` covering its
    tokens, and a name.

    Raises:
        ConfigurationError: no usable recommendation, a family whose tokens per step are unknown, or a run longer
            than `max_steps` (`sweep.target_steps_max`).
    """
    if not rec or rec.get("status") != "ok" or not rec.get("architecture"):
        raise ConfigurationError("--train-target: the sweep has no recommendation with an architecture to train "
                                 f"({(rec or {}).get('sentence', 'no refit yet')})")
    if not tokens_per_step:
        raise ConfigurationError("--train-target: the family's tokens per step are unknown (the data module needs "
                                 "`batch_size` and `seq_len`)")
    steps = int(math.ceil(rec["tokens"] / tokens_per_step))
    if max_steps is not None and steps > max_steps:
        raise ConfigurationError(f"--train-target: the recommended run takes {steps} steps, more than "
                                 f"sweep.target_steps_max = {max_steps}")
    arch = dict(rec["architecture"])
    interval = max(1, steps // 8)
    steps = interval * int(math.ceil(steps / interval))  # the last validation at the last step: the final loss
    return {"name": f"target-N{arch.get('params', rec['params']):.3g}-{steps}", "params": rec["params"],
            "tokens": steps * tokens_per_step, "flops": rec["flops"], "architecture": arch, "steps": steps,
            "val_check_interval": interval, "predicted": {k: rec.get(k) for k in ("loss", "loss_low", "loss_high")},
            "confidence": rec.get("confidence")}


def target_text(planned: dict, achieved: float | None) -> str:
    """Achieved against predicted, with the interval."""
    p = planned["predicted"]
    conf = planned.get("confidence")
    head = (f"target run {planned['name']}: predicted loss {p['loss']:.4f}"
            + (f", {int(round(100 * conf))}% interval [{p['loss_low']:.4f}, {p['loss_high']:.4f}]"
               if p.get("loss_low") is not None and conf else ""))
    if achieved is None:
        return head + "; it did not finish"
    took = f" in {planned['seconds']:.0f} s" if planned.get("seconds") else ""
    inside = p.get("loss_low") is not None and p["loss_low"] <= achieved <= p["loss_high"]
    return (head + f"; achieved {achieved:.4f}{took} ({achieved - p['loss']:+.4f}), "
            + ("inside the interval" if inside else "OUTSIDE the interval"))
