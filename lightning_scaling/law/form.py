"""The interface a law form implements, so that the advisor, the command line and plugins can use any of them.

A law form is a scikit-learn style estimator of L(N, D) (see `ChinchillaFit`, the built-in one): `fit` validates
the runs, returns self and sets fitted attributes with a trailing underscore; everything the recommendation needs
is asked of the fitted estimator through these methods, never computed from one form's parameters:

    fit(N, D, loss, *, params_column="params", labels=None) -> self
    predict(N, D) -> losses (arrays broadcast)
    compute_optimal(flops) -> Allocation       the compute-optimal run at budget C = 6ND
    bootstrap(n_resamples, seed, confidence) -> Intervals
    to_dict() -> dict                           the fitted law, JSON-ready, with "law" (its name) and "boundary"
    N_, D_, loss_, n_runs_, params_column_, boundary_   the runs fitted, and messages for a poorly constrained fit

`Intervals` is what `bootstrap` returns: `confidence`, `n_resamples`, `seed`, and

    parameter_intervals() -> {parameter: (low, high)}
    allocation_intervals(flops) -> {"params": (low, high), "tokens": ..., "loss": ...}
    loss_interval(N, D) -> (low, high)

A form that needs per-run data beyond N and D (the unique tokens of a data-constrained law) names it in a class
attribute ``extra_fields`` and takes it as keyword arrays in `fit` and `predict` (absent in `predict`: a fresh run);
`fit_runs` and `predict_runs` pass each form exactly the extras it declares.

A plugin registers a form through the `register_law_forms` hook with a factory (a class with default arguments);
`check_law_form` says what an estimator lacks.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

import numpy as np

from lightning_scaling.errors import ConfigurationError

METHODS = ("fit", "predict", "compute_optimal", "bootstrap", "to_dict")
DEFAULT_CONFIDENCE = 0.8  # an 80% interval (10th to 90th percentile): wide enough to act on, not a guarantee


@runtime_checkable
class Intervals(Protocol):
    confidence: float
    n_resamples: int

    def parameter_intervals(self) -> dict: ...

    def allocation_intervals(self, flops) -> dict: ...

    def loss_interval(self, N, D) -> tuple[float, float]: ...


@runtime_checkable
class LawForm(Protocol):
    def fit(self, N, D, loss, *, params_column: str = "params", labels=None) -> LawForm: ...

    def predict(self, N, D): ...

    def compute_optimal(self, flops): ...

    def bootstrap(self, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.8) -> Intervals: ...

    def to_dict(self) -> dict: ...


def check_law_form(estimator, name: str = "the law form") -> None:
    """Raise `ConfigurationError` naming the methods of the interface that `estimator` lacks."""
    missing = [m for m in METHODS if not callable(getattr(estimator, m, None))]
    if missing:
        raise ConfigurationError(
            f"{name} ({type(estimator).__name__}) does not implement {missing}: a law form needs "
            f"{', '.join(METHODS)} (see lightning_scaling.law.form)"
        )


def extras_for(form, extra: dict | None, idx=None) -> dict:
    """The per-run extras `form` declares in ``extra_fields``, taken from `extra` (at `idx` when given)."""
    at = slice(None) if idx is None else idx
    return {k: np.asarray(extra[k], float)[at] for k in getattr(form, "extra_fields", ()) if extra and k in extra}


_SHARED: ContextVar[dict | None] = ContextVar("lightning_scaling_shared_fits", default=None)


@contextmanager
def shared_fits():
    """Inside the block, `fit_runs` fits a form on a given set of runs once: the calibration, the backtest and the
    choice of form all refit the same forms on the same compute-ordered prefixes of the runs, and share the fits.

    Fits are keyed by the factory, the runs' values (a digest of N, D, L and the extras at `idx`) and the fit's
    keyword arguments, so different data never share one; a fit that raised is not kept.
    """
    token = _SHARED.set({}) if _SHARED.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _SHARED.reset(token)


def quietly(estimator):
    """The estimator, set to report what sits on its search box only through its results (`boundary_`,
    `degenerate_`) instead of a `FitWarning`: for nested fits (folds, calibration, the other forms, the law across
    runs), where a bound hit is expected and the caller reads the result. A form without a `warn` setting is
    returned as it is."""
    if hasattr(estimator, "warn"):
        estimator.warn = False
    return estimator


def fit_runs(factory, N, D, L, idx=None, extra: dict | None = None, *, quiet: bool = False, **fit_kwargs):
    """A new estimator from `factory` fitted on the runs at `idx` (all when None), with the extras it declares
    (inside `shared_fits`, the same fit for the same runs); `quiet`: see `quietly`."""
    at = slice(None) if idx is None else idx
    estimator = quietly(factory()) if quiet else factory()
    extras = extras_for(estimator, extra, idx)
    cache = _SHARED.get()
    if cache is None:
        return estimator.fit(N[at], D[at], L[at], **fit_kwargs, **extras)
    digest = hashlib.blake2b(digest_size=16)
    for values in (N[at], D[at], L[at], *(extras[k] for k in sorted(extras))):
        digest.update(np.ascontiguousarray(values, dtype=float).tobytes())
        digest.update(b"|")
    key = (factory, quiet, digest.hexdigest(), tuple(sorted(extras)), tuple(sorted(fit_kwargs.items())))
    try:
        hash(key)
    except TypeError:  # unhashable fit arguments (labels): not shared
        return estimator.fit(N[at], D[at], L[at], **fit_kwargs, **extras)
    if key not in cache:
        cache[key] = estimator.fit(N[at], D[at], L[at], **fit_kwargs, **extras)
    return cache[key]


def predict_runs(fit, N, D, idx=None, extra: dict | None = None) -> np.ndarray:
    """The fitted form's prediction at the runs at `idx` (all when None), with the extras it declares."""
    if idx is None:  # N and D may be scalars or broadcast against each other
        return np.asarray(fit.predict(N, D, **extras_for(fit, extra)), float)
    return np.asarray(fit.predict(N[idx], D[idx], **extras_for(fit, extra, idx)), float)
