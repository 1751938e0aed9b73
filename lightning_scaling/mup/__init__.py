"""muP on top of Microsoft's `mup` package: base shapes, muP optimizers in place, and the coordinate check.

- `shapes`: base shapes from the module's hyperparameters, attaching them (with the package's traps avoided),
  the readout check and conversion, the attention scale.
- `optim`: an optimizer returned by `configure_optimizers` made muP-correct in place.
- `coord_check`: activation size against width, per layer, as slopes and a plot.
"""

from .coord_check import CoordCheckResult, coord_check
from .optim import make_optimizer_mup, mup_param_groups
from .shapes import (
    attach,
    attention_scale,
    base_shapes_from_hparams,
    convert_to_mureadout,
    find_readout,
    reattach,
)

__all__ = [
    "CoordCheckResult",
    "attach",
    "attention_scale",
    "base_shapes_from_hparams",
    "convert_to_mureadout",
    "coord_check",
    "find_readout",
    "make_optimizer_mup",
    "mup_param_groups",
    "reattach",
]
