"""The built-in plugin: what `lightning_scaling` does out of the box, through the same hooks third parties use.

`lightning_scaling.plugins.plugin_manager()` registers this module under the name ``"builtin"`` before loading the
plugins of the ``lightning_scaling`` entry point group, so any installed plugin is called before it and can replace
its answers (pluggy calls the plugin registered last first).

Architecture proposals. A recommendation says "train N parameters next"; for a GPT-like model (hyperparameters
``d_model``, ``n_layer``, ``n_head``, optionally ``vocab_size``) this plugin turns N into a shape. N is the
non-embedding count of the example model, `TinyGPT.count_params(..., include_embeddings=False)`:

    N = n_layer (12 d^2 + 13 d) + 2 d + V d

(per block: QKV 3d^2 + 3d, attention output d^2 + d, MLP 4d^2 + 4d and 4d^2 + d, two LayerNorms 4d; then the final
LayerNorm 2d and the untied, bias-free readout V d). The shape keeps the finished run's head width d_head = d_model
/ n_head, so attention behaves the same, and its aspect ratio d_model / n_layer, which Kaplan et al. 2020 (Sec. 3.1,
Fig. 5) find matters little over a wide range, so holding it fixed removes a free choice rather than tuning one.
The search (`gpt_shape_for`) tries every depth n_layer in 1..128 and, for each, the two widths (multiples of d_head)
whose count brackets N. Among the candidates within 15% of N it keeps those whose aspect ratio is within a factor
1.25 of the closest one (in log scale) and returns the one nearest N. The 15% is what the d_head grid costs at small
widths (at d_model = 32 the next multiple of 16 is 50% more parameters), and it is cheap: along an isoFLOP curve the
loss is flat at its minimum (Hoffmann et al. 2022, Fig. 3), so 15% in N moves the loss at second order, while a
depth far from the sweep's aspect ratio (d_model = 16 with 10 layers, for a sweep of 2-layer models of width 32 to
64) leaves the region the law was fitted on.

Law forms: ``"chinchilla"`` is `ChinchillaFit`, L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022).

    >>> propose_architecture(3172608, {"d_model": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256})
    {'d_model': 192, 'n_layer': 7, 'n_head': 12, 'params': 3163584}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

from lightning_scaling.errors import ConfigurationError
from lightning_scaling.law.fit import ChinchillaFit
from lightning_scaling.options import Integer, Interval, Positive, validate
from lightning_scaling.plugins.hookspecs import hookimpl

#: The hyperparameters that mark a GPT-like model; without all of them `propose_architecture` returns None.
GPT_KEYS = ("d_model", "n_layer", "n_head")
DEFAULT_VOCAB_SIZE = 256  # the byte-level vocabulary of the example TinyGPT
MAX_LAYERS = 128  # deeper than any model this package's sweeps train; the search is 2 x 128 candidates
SHAPE_RTOL = 0.15  # a shape within 15% of N is admissible: at the compute-optimal point the loss is flat in N
ASPECT_BAND = 1.25  # aspect ratios within this factor of the best admissible one count as equally good


def gpt_non_embedding_params(d_model: int, n_layer: int, vocab_size: int = DEFAULT_VOCAB_SIZE) -> int:
    """Non-embedding parameters of the example GPT: n_layer (12 d^2 + 13 d) + 2 d + V d.

    Equal to `TinyGPT.count_params(d_model, n_layer, vocab_size, include_embeddings=False)` (which needs torch).

    >>> gpt_non_embedding_params(64, 2)
    116480
    """
    d = d_model
    return n_layer * (12 * d * d + 13 * d) + 2 * d + vocab_size * d


#: The arguments of `gpt_shape_for` and their allowed values.
SHAPE_CONSTRAINTS = {
    "params": Positive(text="a finite number > 0"),
    "d_head": Integer(1),
    "aspect": Positive(text="a finite number > 0"),
    "vocab_size": Integer(1),
    "max_layers": Integer(1),
    "rtol": Interval(0, 1, closed="left"),
    "aspect_band": Interval(1, None, text="a finite number >= 1"),
}


def gpt_shape_for(
    params: float,
    *,
    d_head: int,
    aspect: float,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_layers: int = MAX_LAYERS,
    rtol: float = SHAPE_RTOL,
    aspect_band: float = ASPECT_BAND,
) -> dict:
    """A GPT shape with d_model a multiple of `d_head`, about `params` non-embedding parameters and about `aspect`.

    For each depth L in 1..`max_layers`, the widths tried are the two multiples of `d_head` around the root of
    N(d, L) = params (a quadratic in d). The admissible candidates are those within `rtol` of `params` (or, if none
    is, those as close as the best one). Among them, those whose d_model / n_layer is within a factor `aspect_band`
    of the closest to `aspect` (in log scale) are equally good, and the one nearest `params` wins.

    Args:
        params: the target non-embedding count N, > 0.
        d_head: head width; d_model is a multiple of it and n_head = d_model / d_head.
        aspect: the target aspect ratio d_model / n_layer, > 0.
        vocab_size: V, the readout's output size.
        max_layers: the deepest candidate.
        rtol: relative error on N accepted before the aspect ratio is considered, in [0, 1).
        aspect_band: factor, >= 1, within which aspect ratios count as equally close to `aspect`.

    Returns:
        ``{"d_model": d, "n_layer": L, "n_head": d // d_head, "params": N(d, L)}``.

    Raises:
        ConfigurationError: an argument out of range.

    >>> gpt_shape_for(1e6, d_head=32, aspect=32.0)
    {'d_model': 128, 'n_layer': 5, 'n_head': 4, 'params': 1024384}
    """
    v = validate(SHAPE_CONSTRAINTS, params=params, d_head=d_head, aspect=aspect, vocab_size=vocab_size,
                 max_layers=max_layers, rtol=rtol, aspect_band=aspect_band)
    d_head, aspect, vocab_size, max_layers = v["d_head"], v["aspect"], v["vocab_size"], v["max_layers"]
    rtol, aspect_band = v["rtol"], v["aspect_band"]
    N = float(v["params"])
    candidates = []  # (relative error, log-aspect distance, n_layer, d_model, count)
    for L in range(1, max_layers + 1):
        a, b = 12 * L, 13 * L + 2 + vocab_size  # N(d, L) = a d^2 + b d
        d_root = (-b + math.sqrt(b * b + 4 * a * N)) / (2 * a)
        k = max(1, math.floor(d_root / d_head))
        for d in (k * d_head, (k + 1) * d_head):
            n = gpt_non_embedding_params(d, L, vocab_size)
            candidates.append((abs(n - N) / N, abs(math.log(d / L / aspect)), L, d, n))
    best = min(c[0] for c in candidates)
    admissible = [c for c in candidates if c[0] <= max(best, rtol)]
    closest = min(c[1] for c in admissible)
    in_band = [c for c in admissible if c[1] <= closest + math.log(aspect_band) + 1e-12]
    _, _, L, d, n = min(in_band, key=lambda c: (c[0], c[1]))
    return {"d_model": d, "n_layer": L, "n_head": d // d_head, "params": n}


def _int_hparam(hparams: Mapping, key: str) -> int:
    """``hparams[key]`` as a positive int; run stores such as MLflow give values back as strings ("64")."""
    value = hparams[key]
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if isinstance(value, Real) and not isinstance(value, (bool, Integral)) and float(value).is_integer():
        value = int(value)  # 64.0, as some loggers store integers
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigurationError(f"`hparams[{key!r}]` must be an integer >= 1, got {hparams[key]!r}")
    return int(value)


@hookimpl
def propose_architecture(params: float, hparams: dict) -> dict | None:
    """A GPT shape of about `params` non-embedding parameters with the run's d_head and aspect ratio.

    Returns None unless `hparams` has ``d_model``, ``n_layer`` and ``n_head`` (``vocab_size`` defaults to 256).

    Raises:
        ConfigurationError: one of those hyperparameters is not a positive integer, or d_model is not a multiple
            of n_head.
    """
    if not isinstance(hparams, Mapping) or any(hparams.get(key) is None for key in GPT_KEYS):
        return None
    d_model, n_layer, n_head = (_int_hparam(hparams, key) for key in GPT_KEYS)
    if d_model % n_head:
        raise ConfigurationError(
            f"`hparams['d_model']` must be a multiple of `hparams['n_head']`, got d_model={d_model}, n_head={n_head}"
        )
    vocab_size = DEFAULT_VOCAB_SIZE if hparams.get("vocab_size") is None else _int_hparam(hparams, "vocab_size")
    return gpt_shape_for(params, d_head=d_model // n_head, aspect=d_model / n_layer, vocab_size=vocab_size)


@hookimpl
def register_law_forms(register) -> None:
    """``"chinchilla"``: `ChinchillaFit`, L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Approach 3),
    the baseline; ``"exponent_interaction"``: the data exponent moves with N (`ExponentInteractionFit`);
    ``"data_constrained"``: repeated tokens worth less (Muennighoff et al. 2023, `DataConstrainedFit`, for runs
    that give their unique tokens)."""
    from lightning_scaling.law.separable import DataConstrainedFit, ExponentInteractionFit

    register("chinchilla", ChinchillaFit)
    register("exponent_interaction", ExponentInteractionFit)
    register("data_constrained", DataConstrainedFit)
