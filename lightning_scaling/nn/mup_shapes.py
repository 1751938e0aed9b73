"""Base shapes for muP (Yang et al. 2022, "Tensor Programs V"), on top of Microsoft's `mup` package.

A base shape says, for every parameter, which dimensions are "width" (they grow when the model is widened) and
their size in the base model the hyperparameters were tuned on. `mup.set_base_shapes` attaches it to each parameter
as `p.infshape`; muP's readout, optimizer and initialisation read it from there.

This module builds base shapes from the LightningModule's own class and hyperparameters (base and delta models on
the meta device: no memory, no initialisation cost), serialises them (the `.bsh` format of `mup.save_base_shapes`),
and works around the package's traps:

- `copy.deepcopy` drops `p.infshape` (torch's `Parameter.__deepcopy__` copies only data): the shapes are also kept
  on the module, and a forward pre-hook on each `MuReadout` re-attaches them to a copy that lost them;
- `state_dict` carries no shapes: the callback keeps them in its own checkpoint state;
- mup's DDP name handling strips characters with `str.strip("module.")`: we only ever pass the unwrapped module;
- `set_base_shapes` rescales the readout and biases and must not do it twice: a resumed run re-attaches with
  `rescale_params=False`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mup
import torch
from torch import nn

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.nn.layers import is_linear, readout_names, tied_embedding
from lightning_scaling.options import Choice, Parametrization

SHAPES_ATTR = "_lightning_scaling_base_shapes"  # module attribute: {param name: base shape list}
#: Attribute names under which attention modules keep their head width and their logit scale.
HEAD_DIM_ATTRS = ("d_head", "head_dim", "head_size", "attention_head_size", "d_k")
SCALE_ATTRS = ("scale", "scaling", "softmax_scale", "attn_scale", "scale_factor", "sm_scale")


def serialize(infshapes: Mapping[str, mup.InfShape]) -> dict[str, list]:
    """{name: base shape} with None for a finite dimension and the base size for a width dimension."""
    return {name: list(s.base_shape()) for name, s in infshapes.items()}


def deserialize(shapes: Mapping[str, list]) -> dict[str, mup.InfShape]:
    return {name: mup.InfShape.from_base_shape(list(v)) for name, v in shapes.items()}


def _build_on_meta(cls, hparams: dict) -> nn.Module:
    with torch.device("meta"):
        model = cls(**hparams)
        configure = getattr(model, "configure_model", None)
        if callable(configure):
            try:
                configure()
            except Exception:
                # a `configure_model` that shards the model (FSDP2's `fully_shard` over the trainer's device mesh)
                # cannot run on a detached copy; a copy whose layers were built in `__init__` has its shapes anyway
                if not any(True for _ in model.parameters()):
                    raise
    return model


def base_shapes_from_hparams(module: nn.Module, base: Mapping[str, int], delta: Mapping[str, int] | None = None,
                             convert_readout: str | None = None) -> dict[str, list]:
    """Base shapes from the module's class rebuilt with `base` and `delta` hyperparameters, on the meta device.

    Args:
        module: the model; its class must be constructible from its saved hyperparameters (`module.hparams`).
        base: the hyperparameters of the base model, e.g. {"d_model": 64}.
        delta: the same keys at other values, to tell which dimensions are widths; default: each base value x 2.
        convert_readout: name of a plain Linear readout the callback will convert; converted in the copies too.

    Raises:
        ConfigurationError: the class cannot be rebuilt from its hyperparameters, or a key is unknown.
    """
    # LightningCLI adds private entries such as `_class_path`; they are not constructor arguments
    hparams = {k: v for k, v in dict(getattr(module, "hparams", {}) or {}).items() if not k.startswith("_")}
    if not hparams:
        raise ConfigurationError(
            f"`base` needs the module's saved hyperparameters to rebuild it, but {type(module).__name__} has none: "
            "call `self.save_hyperparameters()` in its __init__, or pass `base_shapes=` a file made by "
            "`mup.make_base_shapes`"
        )
    unknown = sorted(set(base) - set(hparams))
    if unknown:
        raise ConfigurationError(
            f"`base` has keys {unknown} that are not hyperparameters of {type(module).__name__}; "
            f"its hyperparameters are {sorted(hparams)}"
        )
    delta = dict(delta) if delta is not None else {k: 2 * v for k, v in base.items()}
    if set(delta) != set(base):
        raise ConfigurationError(f"`delta` must have the same keys as `base` {sorted(base)}, got {sorted(delta)}")
    if any(delta[k] == base[k] for k in base):
        raise ConfigurationError(f"`delta` must differ from `base` in every key, got base={dict(base)}, delta={delta}")
    try:
        base_model = _build_on_meta(type(module), {**hparams, **base})
        delta_model = _build_on_meta(type(module), {**hparams, **delta})
    except Exception as err:  # the user's constructor: report what failed, with the way out
        raise ConfigurationError(
            f"could not rebuild {type(module).__name__} from its hyperparameters with {dict(base)} / {delta}: "
            f"{type(err).__name__}: {err}. Pass `base_shapes=` a file made by `mup.make_base_shapes` instead."
        ) from err
    if convert_readout:
        for model in (base_model, delta_model):
            convert_to_mureadout(model, convert_readout)
    return serialize(mup.make_base_shapes(base_model, delta_model))


def load_base_shapes_file(path: str) -> dict[str, list]:
    try:
        return serialize(mup.load_base_shapes(path))
    except FileNotFoundError:
        raise ConfigurationError(f"`base_shapes` file not found: {path!r}") from None


# -- the readout ------------------------------------------------------------------------------------------------
def find_readout(module: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The output layer: the submodule called `name`, else the one readout `layers.readout_names` finds by identity
    (a mup readout, a weight tied to an embedding, a map onto the vocabulary, or the last linear map)."""
    modules = dict(module.named_modules())
    if name is not None:
        if name not in modules:
            raise ConfigurationError(
                f"`readout` names no submodule: {name!r}; submodules include {sorted(modules)[:12]}"
            )
        return name, modules[name]
    found = readout_names(module)
    if not found:
        raise ConfigurationError("muP needs a readout layer, but the module has no linear layer (nn.Linear or Conv1D)")
    if len(found) > 1:
        raise ConfigurationError(f"the module has several readouts {found}: name the one muP scales with `readout=`")
    return found[0], modules[found[0]]


def convert_to_mureadout(module: nn.Module, name: str) -> nn.Module:
    """Replace the plain Linear at `name` by a mup readout with the same weights (in place).

    A readout whose weight is tied to an input embedding (GPT-2's `lm_head`) becomes a `mup.MuSharedReadout` of that
    embedding's weight, so it stays tied; any other becomes a `mup.MuReadout`.
    """
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, attr)
    if isinstance(old, mup.MuReadout):
        return old
    if not isinstance(old, nn.Linear):
        raise ConfigurationError(
            f"`readout` {name!r} must be an nn.Linear to convert, got {type(old).__name__}"
            + (": a Conv1D readout stores its weight transposed; replace it by mup.MuReadout in the model"
               if is_linear(old) else "")
        )
    embedding = tied_embedding(module, old)
    if embedding is not None:  # keep it tied: the readout's weight is the embedding's parameter
        new = mup.MuSharedReadout(embedding.weight, bias=False)
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.detach().clone())
    else:
        new = mup.MuReadout(old.in_features, old.out_features, bias=old.bias is not None,
                            device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            if old.weight.device.type != "meta":
                new.weight.copy_(old.weight)
                if old.bias is not None:
                    new.bias.copy_(old.bias)
    setattr(parent, attr, new)
    return new


def is_shared_readout(readout: nn.Module) -> bool:
    return isinstance(readout, mup.MuSharedReadout)


def check_readout(module: nn.Module, infshapes: Mapping[str, mup.InfShape]) -> None:
    """Every Linear mapping a width to a non-width (an output layer) must be a MuReadout; say which is not."""
    bad = []
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Linear) and not isinstance(mod, mup.MuReadout):
            s = infshapes.get(f"{name}.weight" if name else "weight")
            if s is not None and s[1].isinf() and not s[0].isinf():
                bad.append(name)
    if bad:
        raise ConfigurationError(
            f"{bad} map a width dimension to a fixed one (an output layer) but are plain nn.Linear: muP needs "
            "`mup.MuReadout` there (or `mup.MuSharedReadout` when its weight is tied to the input embedding). "
            "Replace it in the model, or pass MuP(convert_readout=True) to convert it in place keeping its weights."
        )


# -- attaching --------------------------------------------------------------------------------------------------
def _infshape(base_shape: list, param: torch.Tensor) -> mup.InfShape:
    return mup.infshape.zip_infshape(mup.InfShape.from_base_shape(list(base_shape)), list(param.shape))


def _reattach_hook(readout, args):
    """Forward pre-hook on a MuReadout: restore `infshape` lost by a deepcopy of the model."""
    if not hasattr(readout.weight, "infshape"):
        for key, param in readout.named_parameters(recurse=False):
            param.infshape = _infshape(getattr(readout, SHAPES_ATTR)[key], param)


def attach(module: nn.Module, shapes: Mapping[str, list], rescale_params: bool) -> None:
    """`mup.set_base_shapes` with our checks; remember the shapes on the module so copies can re-attach them."""
    base = deserialize(shapes)
    names = {n for n, _ in module.named_parameters()}
    if set(base) != names:
        raise ConfigurationError(
            "the base shapes do not match the model's parameters: missing "
            f"{sorted(names - set(base))[:8]}, unexpected {sorted(set(base) - names)[:8]}"
        )
    infshapes = {n: _infshape(shapes[n], p) for n, p in module.named_parameters()}
    check_readout(module, infshapes)
    mup.set_base_shapes(module, base, rescale_params=rescale_params, do_assert=False)
    module.__dict__[SHAPES_ATTR] = dict(shapes)
    canonical = {id(p): n for n, p in module.named_parameters()}  # a tied weight is named after its embedding
    for mod in module.modules():
        if isinstance(mod, mup.MuReadout):
            mod.__dict__[SHAPES_ATTR] = {k: shapes[canonical[id(p)]] for k, p in mod.named_parameters(recurse=False)}
            if not getattr(mod, "_lightning_scaling_hooked", False):
                mod.register_forward_pre_hook(_reattach_hook)
                mod._lightning_scaling_hooked = True


def reattach(module: nn.Module) -> None:
    """Re-attach base shapes to every parameter of a copy that lost them (e.g. after `copy.deepcopy`)."""
    shapes = getattr(module, SHAPES_ATTR, None)
    if shapes is None:
        raise ConfigurationError("this module has no base shapes to re-attach: was it set up by the MuP callback?")
    for name, p in module.named_parameters():
        p.infshape = _infshape(shapes[name], p)


@torch.no_grad()
def rescale_init(module: nn.Module) -> None:
    """muP's one-time rescale of a freshly initialised model, as `mup.set_base_shapes(rescale_params=True)` does it:
    readout weights and biases by sqrt(width_mult), the biases of other linear and conv layers by sqrt(fan_in mult).

    A tied readout (`mup.MuSharedReadout`) keeps its weight, which is the input embedding's: only its bias is
    rescaled.
    """
    for mod in module.modules():
        if isinstance(mod, mup.MuReadout):
            mod._rescale_parameters()
            if isinstance(mod, mup.MuSharedReadout):
                mod.weight.mul_(1.0 / math.sqrt(float(mod.width_mult())))
        elif isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
            mup.layer.rescale_linear_bias(mod)


@torch.no_grad()
def rescale_fixed_init(module: nn.Module) -> None:
    """Turn a width-independent init std (GPT-2's 0.02) into muP's for hidden matrices: std / sqrt(width_mult).

    Hidden matrices (both dimensions widths) need an init variance proportional to 1/fan_in; a fixed std tuned at
    the base width is right there and must shrink as 1/sqrt(width_mult) beyond it (Yang et al. 2022, Table 3).
    """
    for p in module.parameters():
        s = getattr(p, "infshape", None)
        if s is not None and s.ninf() == 2:
            p.mul_(1.0 / math.sqrt(s.width_mult()))


def keep_fixed_readout_init(readout: nn.Module) -> None:
    """Undo mup's readout rescale for a readout initialised with a fixed std (a Linear converted to MuReadout).

    `set_base_shapes(rescale_params=True)` multiplies a MuReadout's weights by sqrt(width_mult). That is right for
    MuReadout's own 1/fan_in init: the forward divides by width_mult, so the effective variance goes as 1/fan_in^2
    (Yang et al. 2022, Table 3). A width-independent std (GPT-2's 0.02) tuned at the base width must instead be kept
    as it is: the forward's 1/width_mult alone gives the effective std / width_mult, muP's 1/fan_in. Multiplied by
    sqrt(width_mult) it would shrink only as 1/sqrt(width_mult).
    """
    with torch.no_grad():
        readout.weight.mul_(1.0 / math.sqrt(float(readout.width_mult())))


def attention_scale(d_head: int, parametrization: str = "mup") -> float:
    """The attention logit scale: 1/d_head under muP (Yang et al. 2022, Sec. 4), 1/sqrt(d_head) under SP.

    Example:
        >>> attention_scale(64), attention_scale(64, "sp")
        (0.015625, 0.125)
    """
    if Choice.of(Parametrization).check("parametrization", parametrization) == "mup":
        return 1.0 / d_head
    return 1.0 / math.sqrt(d_head)


def attention_scale_problems(module: nn.Module) -> list[str]:
    """Places that look like 1/sqrt(d_head) attention scaling (the common muP mistake).

    Found: `nn.MultiheadAttention` (which always scales by 1/sqrt(head_dim)); an attention module whose head width
    (`d_head`, `head_dim`, `head_size`, ...) and logit scale (`scale`, `scaling` as in Hugging Face GPT-2 and Llama,
    `softmax_scale`, ...) are in that ratio; a hyperparameter ``attn_scale``/``attention_scale`` saying so. A model
    whose hyperparameters declare the muP rule (``"inverse"``, ``"mup"`` or ``"1/d"``) is taken at its word: with
    ``attn_mult = sqrt(d_head)`` the muP scale attn_mult / d_head equals 1/sqrt(d_head) at that one head width, and
    the numbers alone cannot tell the two rules apart.
    """
    problems = []
    hparams = dict(getattr(module, "hparams", {}) or {})
    declared = {str(hparams.get(key, "")).lower() for key in ("attn_scale", "attention_scale")}
    for key in ("attn_scale", "attention_scale"):
        if str(hparams.get(key, "")).lower() in ("inverse_sqrt", "sqrt", "1/sqrt", "standard", "sp"):
            problems.append(f"hyperparameter {key}={hparams[key]!r}")
    if declared & {"inverse", "mup", "1/d"}:
        return problems
    for name, mod in module.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            problems.append(f"{name} is nn.MultiheadAttention (1/sqrt(head_dim) = 1/sqrt({mod.head_dim}))")
            continue
        d_head = next((v for a in HEAD_DIM_ATTRS if isinstance(v := getattr(mod, a, None), int) and v > 0), None)
        if d_head is None:
            continue
        for attr in SCALE_ATTRS:
            scale = getattr(mod, attr, None)
            if isinstance(scale, float) and math.isclose(scale, d_head**-0.5, rel_tol=1e-6) and d_head > 1:
                problems.append(f"{name}.{attr} = 1/sqrt({d_head})")
                break
    return problems
