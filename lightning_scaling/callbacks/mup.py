"""`MuP`: the maximal update parametrisation (Yang et al. 2022) for a LightningModule, by adding one callback.

What it does, in Lightning's order (setup -> configure_model -> checkpoint restore -> configure_optimizers ->
on_fit_start):

1. In `configure_model` (wrapped at `setup`, so it works whether the model is built in `__init__` or in
   `configure_model`, and after the user's own sharding there): finds the readout, converts it to a mup readout
   when asked (`MuSharedReadout` when it is tied to the input embedding, so it stays tied), computes base shapes
   (from `base`/`delta` hyperparameters on the meta device, or from a `.bsh` file), and attaches them with
   `mup.set_base_shapes`.
2. At checkpoint restore (`load_state_dict`), the checkpoint's base shapes are checked against these and
   re-attached; the run is then known to be a resume.
3. In `configure_optimizers` (wrapped likewise): a fresh run gets muP's one-time rescale of its initialisation
   (readout, biases, and with `hidden_init="fixed"` the hidden matrices); a resumed run does not, its weights are
   the checkpoint's. Whatever optimizer the module returns (Adam/AdamW/SGD and relatives) then gets muP's per-group
   learning rates and weight decays, in place, equal to what `mup.MuAdamW` / `mup.MuSGD` would build; LR schedulers
   bound to it are remapped.
4. Logs `scaling/mup_base_width` and `scaling/mup_width_mult` as params, and warns when attention looks scaled by
   1/sqrt(d_head) (muP needs 1/d_head; `lightning-scaling coord-check` shows the difference).
5. At `teardown` the module's methods are given back: a second fit, with other settings, starts clean, and the
   module pickles.

The base shapes are kept in the callback's checkpoint state, and on the module so that a `copy.deepcopy` of it
(which drops `p.infshape`) re-attaches them on its first forward.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.integrations.lightning import Callback, check_strategy, override, warn_rank_zero
from lightning_scaling.nn.mup_optim import make_optimizer_mup, split_optimizers_and_schedulers
from lightning_scaling.nn.mup_shapes import (
    attach,
    attention_scale_problems,
    base_shapes_from_hparams,
    convert_to_mureadout,
    find_readout,
    is_shared_readout,
    keep_fixed_readout_init,
    load_base_shapes_file,
    reattach,
    rescale_fixed_init,
    rescale_init,
)
from lightning_scaling.options import Choice, Constraint, HiddenInit, OptimizerKind, validate

if TYPE_CHECKING:
    from lightning_scaling.integrations.lightning import LightningModule, Trainer
from lightning_scaling.callbacks._state import check_state_version

STATE_VERSION = 1


class MuP(Callback):
    """Apply muP to the module: base shapes, MuReadout, muP optimizer groups.

    Args:
        base: hyperparameters of the base model, e.g. ``{"d_model": 64}``; the module's class is rebuilt from its
            saved hyperparameters with these (and with `delta`) on the meta device.
        delta: the same keys at other values, marking which dimensions are widths (default: `base` values x 2).
        base_shapes: instead of `base`/`delta`, a file written by `mup.make_base_shapes(..., savefile=...)`.
        readout: name of the output layer (default: `lm_head`-like names, else the module's last Linear).
        convert_readout: convert a plain Linear readout into `mup.MuReadout` in place, keeping its weights;
            otherwise a plain Linear readout is an error telling what to change.
        hidden_init: "fan_in" when the module initialises hidden matrices with std ~ 1/sqrt(fan_in) (PyTorch's
            default, what mup assumes); "fixed" for a width-independent std such as GPT-2's 0.02, which the
            callback rescales by 1/sqrt(width_mult) so that the base width keeps its tuned init. A readout converted
            by `convert_readout` then keeps its fixed-std weights, so its effective std goes as 1/width_mult.
        optimizer_kind: "adam" or "sgd" rules for optimizers the callback does not recognise.

    Raises:
        ConfigurationError: conflicting or missing arguments (the message names them).

    Example::

        model = TinyGPT(d_model=256, readout="mup", attn_scale="inverse")
        trainer = pl.Trainer(callbacks=[MuP(base={"d_model": 64}, hidden_init="fixed"), PowerLR()])
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "hidden_init": Choice.of(HiddenInit),
        "optimizer_kind": Choice.of(OptimizerKind, or_none=True),
    }

    def __init__(
        self,
        base: dict[str, int] | None = None,
        delta: dict[str, int] | None = None,
        base_shapes: str | None = None,
        readout: str | None = None,
        convert_readout: bool = False,
        hidden_init: HiddenInit = "fan_in",
        optimizer_kind: OptimizerKind | None = None,
    ):
        if (base is None) == (base_shapes is None):
            raise ConfigurationError(
                "MuP needs exactly one of `base` (e.g. base={'d_model': 64}) or `base_shapes` (a .bsh file), "
                f"got base={base!r}, base_shapes={base_shapes!r}"
            )
        if delta is not None and base is None:
            raise ConfigurationError("`delta` goes with `base`; with `base_shapes` the widths are in the file")
        for name, value in (("base", base), ("delta", delta)):
            if value is not None and not (isinstance(value, Mapping) and value
                                          and all(isinstance(v, int) and v > 0 for v in value.values())):
                raise ConfigurationError(f"`{name}` must map hyperparameter names to positive integers, got {value!r}")
        v = validate(self._parameter_constraints, hidden_init=hidden_init, optimizer_kind=optimizer_kind)
        self.base = dict(base) if base is not None else None
        self.delta = dict(delta) if delta is not None else None
        self.base_shapes = base_shapes
        self.readout = readout
        self.convert_readout = convert_readout
        self.hidden_init = v["hidden_init"]
        self.optimizer_kind = v["optimizer_kind"]
        self.shapes: dict[str, list] | None = None
        self.width_mult: float | None = None
        self.base_width: int | None = None
        self.rescaled = False  # whether this fit rescaled the initialisation (False for a resume)
        self._module = None
        self._resumed = False
        self._converted = False
        self._readout_name: str | None = None

    @property
    @override
    def state_key(self) -> str:
        return "MuP"  # one per Trainer; a fixed key lets a resume with other base shapes be detected and refused

    # -- hooks ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or "configure_model" in vars(pl_module):  # already wrapped (by us or by hand): leave it
            return
        check_strategy(trainer, "MuP")
        self._module = weakref.ref(pl_module)
        self._resumed = False
        self.rescaled = False
        self._converted = False
        user_configure_model = pl_module.configure_model
        user_configure_optimizers = pl_module.configure_optimizers
        callback = weakref.proxy(self)

        def configure_model(module):
            if any(True for _ in module.parameters()):  # built in __init__: convert before the user's own
                callback._convert(module)                # `configure_model` may shard it (FSDP2)
            user_configure_model()
            callback._apply(module)

        def configure_optimizers(module):
            reattach(module)  # the strategy may have replaced the parameters since (FSDP2 moving them to the device)
            callback._rescale(module)
            config = user_configure_optimizers()
            optimizers, schedulers = split_optimizers_and_schedulers(config)
            for optimizer in optimizers:
                make_optimizer_mup(optimizer, callback.optimizer_kind, schedulers)
            return config

        pl_module.configure_model = types.MethodType(configure_model, pl_module)
        pl_module.configure_optimizers = types.MethodType(configure_optimizers, pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.width_mult is not None:
            for logger in trainer.loggers:
                logger.log_hyperparams({"scaling/mup_base_width": self.base_width,
                                        "scaling/mup_width_mult": self.width_mult})

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # give the module its own methods back
            for name in ("configure_model", "configure_optimizers"):
                if isinstance(vars(pl_module).get(name), types.MethodType):
                    del pl_module.__dict__[name]
            self._module = None

    def _convert(self, module) -> str:
        """Find the readout and, if asked, convert it to a mup readout (once); returns its name."""
        name, original = find_readout(module, self.readout)
        if self.convert_readout and convert_to_mureadout(module, name) is not original:
            self._converted = True
        return name

    def _apply(self, module) -> None:
        """Convert the readout if asked and attach base shapes (no rescale: that waits for `configure_optimizers`)."""
        name = self._convert(module)
        shapes = (
            base_shapes_from_hparams(module, self.base, self.delta, name if self.convert_readout else None)
            if self.base is not None
            else load_base_shapes_file(self.base_shapes)
        )
        if self.shapes is not None and self.shapes != shapes:
            raise ConfigurationError(
                "the base shapes differ from the ones this callback used before (e.g. in the checkpoint): "
                "resume with the same `base`/`delta`/`base_shapes`"
            )
        attach(module, shapes, rescale_params=False)
        readout = module.get_submodule(name)
        self._readout_name = name
        self.shapes = shapes
        self.width_mult = float(readout.width_mult())
        self.base_width = int(readout.weight.infshape[1].base_dim or readout.weight.shape[-1])
        problems = attention_scale_problems(module)
        if problems:
            warn_rank_zero(
                getattr(module, "_trainer", None),
                "muP needs attention logits scaled by 1/d_head, but this model looks scaled by 1/sqrt(d_head) ("
                + "; ".join(problems)
                + "): use lightning_scaling.nn.attention_scale(d_head) in the attention. The coordinate check "
                "(`lightning-scaling coord-check`) shows it as attention outputs growing with width.",
            )

    def _rescale(self, module) -> None:
        """muP's one-time rescale of the initialisation, for a fresh run only (a resumed run has trained weights)."""
        if self._resumed or getattr(module, "_lightning_scaling_rescaled", False):
            return
        rescale_init(module)
        if self.hidden_init == "fixed":
            rescale_fixed_init(module)
            if self._converted and not is_shared_readout(module.get_submodule(self._readout_name)):
                keep_fixed_readout_init(module.get_submodule(self._readout_name))
        module.__dict__["_lightning_scaling_rescaled"] = True  # a second fit of the same module trains on
        self.rescaled = True

    # -- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "shapes": self.shapes, "width_mult": self.width_mult,
                "base_width": self.base_width}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        check_state_version("MuP", state_dict, STATE_VERSION)
        saved = state_dict["shapes"]
        if self.shapes is not None and saved is not None and saved != self.shapes:
            raise ConfigurationError(
                "the checkpoint was trained with other muP base shapes than this callback's: resume with the same "
                "`base`/`delta`/`base_shapes`"
            )
        self.shapes = saved
        self.width_mult = state_dict["width_mult"]
        self.base_width = state_dict["base_width"]
        module = self._module() if self._module is not None else None
        if module is not None and saved is not None:
            attach(module, saved, rescale_params=False)  # the checkpoint's shapes onto the restored parameters
        self._resumed = True
