"""The coordinate check of muP (Yang et al. 2022, "Tensor Programs V", Sec. 7 and Fig. 5), on the CPU.

Train a few steps at several widths and record, for every layer, the typical size of its output coordinates
(mean |x|). Under a correct muP every curve is flat in width: the slope of log size against log width is near 0.
Under the standard parametrisation (SP) with a fixed learning rate, hidden and output activations blow up with
width after a few steps. A non-zero slope under muP points at what was missed: usually the 1/d_head attention
scale, the readout (`MuReadout`), or the optimizer (per-group learning rates).

`mup.get_coord_data` does this too but defaults to CUDA and wants a DataLoader; this version runs wherever the
model is, on a fixed list of batches, and returns slopes as numbers that a test can check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.nn.mup_optim import make_optimizer_mup
from lightning_scaling.nn.mup_shapes import attach, rescale_fixed_init, serialize
from lightning_scaling.options import Choice, HiddenInit, Integer, Parametrization, validate

PARAMETRIZATIONS = get_args(Parametrization)
COORD_CHECK_CONSTRAINTS = {
    "parametrization": Choice.of(Parametrization),
    "hidden_init": Choice.of(HiddenInit),
    "steps": Integer(1),
}


@dataclass
class CoordCheckResult:
    """Activation sizes and their slopes against width.

    Attributes:
        widths: the widths trained.
        sizes: sizes[step][layer] -> array over widths of mean |activation| (averaged over seeds).
        parametrization: "mup" or "sp".
    """

    widths: list[int]
    sizes: list[dict[str, np.ndarray]]
    parametrization: str
    losses: dict[int, list[float]] = field(default_factory=dict)

    def slopes(self, step: int = -1) -> dict[str, float]:
        """Slope of log(size) against log(width) per layer at `step` (default: the last step)."""
        x = np.log(np.asarray(self.widths, float))
        out = {}
        for layer, values in self.sizes[step].items():
            y = np.log(np.maximum(values, 1e-30))
            out[layer] = float(np.polyfit(x, y, 1)[0])
        return out

    def max_abs_slope(self, step: int = -1) -> tuple[str, float]:
        slopes = self.slopes(step)
        layer = max(slopes, key=lambda k: abs(slopes[k]))
        return layer, slopes[layer]

    def to_dict(self) -> dict:
        return {
            "parametrization": self.parametrization,
            "widths": list(self.widths),
            "slopes": self.slopes(),
            "sizes": [{k: v.tolist() for k, v in step.items()} for step in self.sizes],
        }

    def plot(self, path, title: str | None = None):
        """Save a log-log plot of activation size against width, one panel per recorded step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = len(self.sizes)
        fig, axes = plt.subplots(1, steps, figsize=(3.2 * steps, 3.2), sharey=True, squeeze=False)
        for t, ax in enumerate(axes[0]):
            for layer, values in self.sizes[t].items():
                ax.plot(self.widths, values, marker="o", ms=3, lw=1, label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"step {t + 1}")
            ax.set_xlabel("width")
        axes[0][0].set_ylabel("mean |activation|")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=6, frameon=False)
        fig.suptitle(title or f"coordinate check ({self.parametrization})")
        fig.tight_layout(rect=(0, 0, 0.82, 1))
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def default_loss(model: nn.Module, batch) -> torch.Tensor:
    """Next-token cross-entropy for `(input_ids, targets)` batches."""
    x, y = batch[0], batch[1]
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())
            and not isinstance(m, (nn.Dropout, nn.Identity))]


def _train_and_record(model, batches, steps, lr, loss_fn, mup_optimizer) -> tuple[list[dict[str, float]], list[float]]:
    records: list[dict[str, float]] = []
    current: dict[str, float] = {}

    def hook(name):
        def record(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            if isinstance(output, torch.Tensor):
                current[name] = float(output.detach().abs().float().mean())
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _leaf_modules(model)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    if mup_optimizer:
        make_optimizer_mup(optimizer, "adam")
    losses = []
    try:
        model.train()
        for t in range(steps):
            current.clear()
            loss = loss_fn(model, batches[t % len(batches)])
            records.append(dict(current))
            losses.append(float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for h in handles:
            h.remove()
    return records, losses


def coord_check(  # noqa: PLR0913  # the keyword arguments are the `coord-check` config's keys
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    batches: Sequence,
    *,
    parametrization: str = "mup",
    steps: int = 4,
    lr: float = 1e-2,
    seeds: Sequence[int] = (0,),
    base_width: int | None = None,
    hidden_init: str = "fan_in",
    loss_fn: Callable | None = None,
) -> CoordCheckResult:
    """Train `steps` steps at each width and record activation sizes per layer.

    Args:
        make_model: builds the model at a width, e.g. ``lambda w: TinyGPT(d_model=w, readout="mup", ...)``.
        widths: at least three widths.
        batches: batches to train on (cycled), e.g. `(input_ids, targets)` tuples.
        parametrization: "mup" (base shapes from `base_width` and twice it, muP AdamW) or "sp" (plain AdamW).
        steps: optimizer steps (activations of each step's forward pass are recorded).
        lr: Adam learning rate (the base learning rate under muP).
        seeds: seeds averaged over.
        base_width: width of the muP base model (default: the smallest width).
        hidden_init: "fan_in" (the model's init std already scales as 1/sqrt(fan_in)) or "fixed" (a
            width-independent std, rescaled by 1/sqrt(width_mult) under muP).
        loss_fn: `loss_fn(model, batch) -> loss` (default: next-token cross-entropy).
    """
    steps = validate(COORD_CHECK_CONSTRAINTS, parametrization=parametrization, hidden_init=hidden_init,
                     steps=steps)["steps"]
    widths = sorted(int(w) for w in widths)
    if len(set(widths)) < 3:
        raise ConfigurationError(f"`widths` needs at least 3 distinct widths to measure a slope, got {widths}")
    loss_fn = loss_fn or default_loss
    shapes = None
    if parametrization == "mup":
        import mup

        base_width = base_width or widths[0]
        with torch.device("meta"):
            base, delta = make_model(base_width), make_model(2 * base_width)
        shapes = serialize(mup.make_base_shapes(base, delta))
    per_seed = []
    losses: dict[int, list[float]] = {}
    for seed in seeds:
        rows = []
        for w in widths:
            torch.manual_seed(seed)
            model = make_model(w)
            if shapes is not None:
                attach(model, shapes, rescale_params=True)
                if hidden_init == "fixed":
                    rescale_fixed_init(model)
            records, loss_curve = _train_and_record(model, batches, steps, lr, loss_fn, shapes is not None)
            rows.append(records)
            losses.setdefault(w, loss_curve)
        per_seed.append(rows)
    layers = list(per_seed[0][0][0].keys())
    sizes = []
    for t in range(steps):
        sizes.append({
            layer: np.array([np.mean([per_seed[s][i][t][layer] for s in range(len(seeds))])
                             for i in range(len(widths))])
            for layer in layers
        })
    return CoordCheckResult(widths=widths, sizes=sizes, parametrization=parametrization, losses=losses)


# -- from a configuration file ----------------------------------------------------------------------------------
CONFIG_KEYS = ("model", "data", "width_key", "widths", "parametrizations", "sp_overrides", "steps", "lr", "seeds",
               "batches", "hidden_init")


def _import(path: str):
    import importlib

    module, _, name = path.rpartition(".")
    if not module:
        raise ConfigurationError(f"`class_path` must be a dotted path such as 'package.module.Class', got {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(f"`class_path` {path!r} cannot be imported: {err}") from None


def coord_check_from_config(config: dict) -> dict[str, CoordCheckResult]:
    """Run the coordinate check described by a config dict (see `examples/tiny_gpt/coord_check.yaml`).

    Keys: `model` and `data` ({class_path, init_args}), `width_key` (the init argument that is the width),
    `widths`, `parametrizations` (any of "mup", "sp"), `sp_overrides` (init arguments that turn the muP model into
    its SP twin, e.g. a plain readout), `steps`, `lr`, `seeds`, `batches` (how many batches to draw),
    `hidden_init`.
    """
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigurationError(f"unknown config key(s) {unknown}; allowed: {list(CONFIG_KEYS)}")
    for key in ("model", "data", "width_key", "widths"):
        if key not in config:
            raise ConfigurationError(f"config key `{key}` is required")
    model_cls = _import(config["model"]["class_path"])
    model_args = dict(config["model"].get("init_args", {}))
    data = _import(config["data"]["class_path"])(**config["data"].get("init_args", {}))
    if hasattr(data, "setup"):
        data.setup("fit")
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(int(config.get("batches", 4)))]
    width_key = config["width_key"]
    results = {}
    for parametrization in config.get("parametrizations", ["mup", "sp"]):
        if parametrization not in PARAMETRIZATIONS:
            raise ConfigurationError(
                f"`parametrizations` entries must be in {PARAMETRIZATIONS}, got {parametrization!r}"
            )
        args = dict(model_args)
        if parametrization == "sp":
            args.update(config.get("sp_overrides", {}))

        def make(width, args=args):
            return model_cls(**{**args, width_key: width})

        results[parametrization] = coord_check(
            make, config["widths"], batches, parametrization=parametrization, steps=int(config.get("steps", 4)),
            lr=float(config.get("lr", 3e-3)), seeds=tuple(config.get("seeds", (0,))),
            hidden_init=config.get("hidden_init", "fan_in"),
        )
    return results
