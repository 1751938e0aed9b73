"""`ChinchillaFit`: a scikit-learn style estimator for L(N, D) = E + A / N^alpha + B / D^beta.

The objective is that of Hoffmann et al. 2022, Approach 3 (Sec. D.2), as replicated by Besiroglu et al. 2024:
the sum over runs of Huber(delta = 1e-3) of the log-loss residual, in the LSE parametrisation (see `objective.py`).
The global search (see `search.py`) scans a dense grid of exponents with the linear coefficients solved in closed
form, then polishes one start per basin with batched Newton steps on the exact Hessian. The original 4500-start
L-BFGS method, which the fast search is tested against, is `benchmarks/hoffmann_grid.py`.

    >>> import numpy as np
    >>> from lightning_scaling import ChinchillaFit, ChinchillaLaw
    >>> law = ChinchillaLaw(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.37)
    >>> N, D = np.meshgrid([1e7, 3e7, 1e8, 3e8], [2e8, 1e9, 5e9, 2e10])
    >>> fit = ChinchillaFit().fit(N.ravel(), D.ravel(), law.loss(N, D).ravel())
    >>> round(fit.alpha_, 3), round(fit.beta_, 3), round(fit.E_, 3)
    (0.34, 0.37, 1.7)
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Literal, get_args

import numpy as np

from lightning_scaling.errors import NotFittedError
from lightning_scaling.law.chinchilla import PARAM_NAMES, ChinchillaLaw
from lightning_scaling.law.form import DEFAULT_CONFIDENCE
from lightning_scaling.law.objective import HUBER_DELTA, huber_objective
from lightning_scaling.law.search import SCAN_RUNS, basin_starts, box_polish, newton, profile_scan, scan_subset
from lightning_scaling.options import Choice, Constraint, Integer, Interval, Positive, validate
from lightning_scaling.runs.validation import check_enough_runs, validate_runs

ParamsColumn = Literal["params", "params_avg"]  # which N the runs gave: dense counts, or N_avg of sparse runs
PARAMS_COLUMNS = get_args(ParamsColumn)
VANISHING_TERM = 1e-3  # a term that moves the loss by less than 0.1% over all the runs carries no information


class FitWarning(UserWarning):
    """A fit that succeeded but is poorly constrained (a parameter on its search bound)."""


class ChinchillaFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta to runs (Hoffmann et al. 2022, Approach 3).

    Args:
        delta: Huber threshold on log-loss residuals (Hoffmann et al. 2022: 1e-3).
        exponent_max: alpha and beta are searched in [0, exponent_max]. Published exponents are 0.07-0.7.
        grid_step: spacing of the exponent grid of the global scan. 0.05 resolves every basin we have seen.
        n_starts: how many basins (local minima of the profile over the exponents) to polish.
        min_runs: refuse to fit fewer runs (the law has five parameters).
        min_distinct: refuse to fit fewer distinct N or distinct D values.
        warn: emit a `FitWarning` for each parameter on its search box; False for nested fits that read
            ``boundary_`` and ``degenerate_`` instead (`law.form.quietly`).

    Fitted attributes: ``E_``, ``A_``, ``B_``, ``alpha_``, ``beta_``, ``objective_``, ``law_`` (a
    `ChinchillaLaw`), ``theta_`` (a, b, e, alpha, beta), ``n_runs_``, ``params_column_`` ("params" or
    "params_avg": which N the runs gave), ``boundary_`` (list of messages, empty when every parameter is interior),
    ``n_basins_`` (local minima polished), ``centre_`` (the mean log N and log D the search worked around) and
    ``basins_`` (the polished optimum of every basin, in those centred logs: the bootstrap's starts).

    It implements the law-form interface (`lightning_scaling.law.form`): `compute_optimal` and `bootstrap` too.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "delta": Positive(text="a finite number > 0"),
        "exponent_max": Interval(0.5, 10),  # published exponents are 0.07-0.7; below 0.5 the box cuts them off
        "grid_step": Interval(0.001, 0.25),  # finer is slow for nothing, coarser misses basins
        "n_starts": Integer(1),
        "min_runs": Integer(5),  # the law has five parameters
        "min_distinct": Integer(3),  # an exponent needs three distinct values to be told from a curve's bend
    }

    def __init__(
        self,
        delta: float = HUBER_DELTA,
        exponent_max: float = 3.0,
        grid_step: float = 0.05,
        n_starts: int = 8,
        min_runs: int = 5,
        min_distinct: int = 3,
        warn: bool = True,
    ):
        self.delta = delta
        self.exponent_max = exponent_max
        self.grid_step = grid_step
        self.n_starts = n_starts
        self.min_runs = min_runs
        self.min_distinct = min_distinct
        self.warn = warn

    # -- fitting ----------------------------------------------------------------------------------------------
    def _check_options(self) -> None:
        """Validate the options against `_parameter_constraints` (at `fit`, as scikit-learn does); text converted."""
        options = validate(self._parameter_constraints, delta=self.delta, exponent_max=self.exponent_max,
                           grid_step=self.grid_step, n_starts=self.n_starts, min_runs=self.min_runs,
                           min_distinct=self.min_distinct)
        for name, value in options.items():  # numbers are kept as given; only text is converted
            setattr(self, name, value)

    def fit(self, N, D, loss, *, params_column: str = "params", labels=None) -> ChinchillaFit:
        """Fit the law to runs.

        Args:
            N: parameters per run: dense counts, or N_avg (average non-zero parameters) for sparse runs.
            D: training tokens per run.
            loss: final loss per run (nats per token).
            params_column: which N was given, "params" or "params_avg"; recorded as ``params_column_``.
            labels: how to name each run in error messages (default "row i").

        Returns:
            self

        Raises:
            ScalingDataError: a value is NaN, infinite or not positive (the message names the row).
            InsufficientRunsError: fewer than `min_runs` runs or `min_distinct` distinct N or D; the message
                proposes runs to add.
        """
        self._check_options()
        Choice.of(ParamsColumn).check("params_column", params_column)
        N, D, L = validate_runs(N, D, loss, labels)
        check_enough_runs(N, D, self.min_runs, self.min_distinct)
        logN, logD, logL = np.log(N), np.log(D), np.log(L)
        theta, value = self._minimise(logN, logD, logL)
        self._set_fitted(theta, value, N, D, L, params_column)
        return self

    def _grid(self):
        n = int(round(self.exponent_max / self.grid_step)) + 1
        return np.linspace(0.0, self.exponent_max, n)

    def _minimise(self, logN, logD, logL):
        mN, mD = logN.mean(), logD.mean()
        cN, cD = logN - mN, logD - mD
        grid = self._grid()
        scan = scan_subset(cN + cD, SCAN_RUNS)
        values, coefs = profile_scan(cN[scan], cD[scan], logL[scan], grid, grid, delta=self.delta)
        starts = basin_starts(values, coefs, grid, grid, self.n_starts)
        thetas, f = newton(starts, cN, cD, logL, delta=self.delta, exponent_max=self.exponent_max)
        thetas, f = box_polish(thetas, f, cN, cD, logL, delta=self.delta, exponent_max=self.exponent_max)
        best = int(np.argmin(f))
        self.n_basins_ = len(starts)
        self.centre_ = (float(mN), float(mD))
        self.basins_ = thetas
        return _uncentre(thetas[best], mN, mD), float(f[best])

    def _set_fitted(self, theta, value, N, D, L, params_column):
        self.theta_ = np.asarray(theta, float)
        a, b, e, alpha, beta = self.theta_
        self.A_, self.B_, self.E_ = math.exp(a), math.exp(b), math.exp(e)
        self.alpha_, self.beta_ = float(alpha), float(beta)
        self.objective_ = value
        self.n_runs_ = len(N)
        self.params_column_ = params_column
        self.N_, self.D_, self.loss_ = N, D, L
        self.boundary_ = self._boundary_messages()
        for message in self.boundary_ if self.warn else ():
            warnings.warn(message, FitWarning, stacklevel=3)

    def _boundary_messages(self) -> list[str]:
        """Which parameters sit on the search box or carry no signal, and what runs would move them off it.

        Also sets ``degenerate_``: one ``{"parameter", "kind", "axis", "message", "refuses"}`` per problem, ``kind``
        "bound" (an exponent at 0 or `exponent_max`, E at 0) or "vanishing" (a term whose variation over the runs
        is below `VANISHING_TERM` of the loss: the loss does not depend on that axis there), ``axis`` the one that
        lacks spread ("N", "D", or "compute" for E). A degenerate fit still predicts. An exponent on its bound or a
        vanishing term ``refuses`` the recommendation: the allocation N_opt = G (C/6)^(beta/(alpha+beta)) is then
        not measured. E at 0 is flagged but does not refuse: the allocation does not involve E, and the predicted
        loss carries the calibrated extrapolation interval (`evaluation.intervals`), which sees such a bias in the
        forward-chaining residuals.
        """
        out: list[dict] = []
        bound_tol = 1e-3
        terms = {"alpha": ("N", self.A_ * self.N_ ** -self.alpha_), "beta": ("D", self.B_ * self.D_ ** -self.beta_)}
        for name, (axis, term) in terms.items():
            value = getattr(self, f"{name}_")
            if value <= bound_tol or value >= self.exponent_max - bound_tol:
                out.append({"parameter": name, "kind": "bound", "axis": axis, "message": (
                    f"{name} = {value:.4g} is on its search bound [0, {self.exponent_max}]: loss does not follow a "
                    f"power law in {axis} over these runs; add runs spanning at least a 10x range of {axis} at a "
                    f"fixed {'token count' if axis == 'N' else 'size'}"), "refuses": True})
            elif float(np.ptp(term)) < VANISHING_TERM * float(self.loss_.mean()):
                coefficient = "A" if name == "alpha" else "B"
                out.append({"parameter": coefficient, "kind": "vanishing", "axis": axis, "message": (
                    f"the {coefficient}/{axis}^{name} term varies by {float(np.ptp(term)):.2g} over these runs, "
                    f"less than {VANISHING_TERM:g} of the loss: the loss does not depend on {axis} here, so "
                    f"{coefficient} = {getattr(self, coefficient + '_'):.3g} and {name} = {value:.3g} are not "
                    f"measured; add runs spanning at least a 10x range of {axis}"), "refuses": True})
        if self.E_ <= 1e-6 * float(self.loss_.min()):
            out.append({"parameter": "E", "kind": "bound", "axis": "compute", "message": (
                f"E = {self.E_:.3g} is at its lower bound 0: the irreducible loss is not constrained; add runs "
                "at larger compute (both N and D larger) so the curve's flattening is visible"), "refuses": False})
        self.degenerate_ = out
        return [d["message"] for d in out]

    # -- prediction -------------------------------------------------------------------------------------------
    def _require_fitted(self):
        if not hasattr(self, "theta_"):
            raise NotFittedError(
                "This ChinchillaFit instance is not fitted yet: call `fit(N, D, loss)` before using it."
            )

    @property
    def law_(self) -> ChinchillaLaw:
        self._require_fitted()
        return ChinchillaLaw(E=self.E_, A=self.A_, B=self.B_, alpha=self.alpha_, beta=self.beta_)

    def predict(self, N, D):
        """Predicted loss at N parameters and D tokens (arrays broadcast)."""
        self._require_fitted()
        return self.law_.loss(N, D)

    def compute_optimal(self, flops):
        """The compute-optimal run at budget `flops` (C = 6ND): an `Allocation` (Hoffmann et al. 2022, Eq. 4)."""
        from lightning_scaling.law.allocation import compute_optimal

        return compute_optimal(self.law_, flops)

    def bootstrap(self, n_resamples: int = 1000, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE):
        """Percentile intervals from refits on resampled runs: a `BootstrapResult` (see `law.bootstrap`)."""
        from lightning_scaling.law.bootstrap import bootstrap

        return bootstrap(self, n_resamples, seed=seed, confidence=confidence)

    def score(self, N, D, loss) -> float:
        """The Huber objective of the fitted law on other runs (lower is better)."""
        self._require_fitted()
        N, D, L = validate_runs(N, D, loss)
        return huber_objective(self.theta_, N, D, L, self.delta)[0]

    def to_dict(self) -> dict:
        """The fitted law and fit diagnostics as plain JSON-ready values."""
        self._require_fitted()
        return {
            "law": "chinchilla",
            "formula": "L(N, D) = E + A/N^alpha + B/D^beta",
            "fitted": f"L = {self.E_:.4g} + {self.A_:.4g}/N^{self.alpha_:.3f} + {self.B_:.4g}/D^{self.beta_:.3f}",
            "parameters": list(PARAM_NAMES),
            "E": self.E_,
            "A": self.A_,
            "B": self.B_,
            "alpha": self.alpha_,
            "beta": self.beta_,
            "objective": self.objective_,
            "n_runs": self.n_runs_,
            "params_column": self.params_column_,
            "boundary": list(self.boundary_),
            "degenerate": [dict(d) for d in self.degenerate_],
        }

    def __repr__(self) -> str:
        if hasattr(self, "theta_"):
            return f"ChinchillaFit({self.law_}, objective={self.objective_:.6g}, n_runs={self.n_runs_})"
        return "ChinchillaFit(not fitted)"


def _uncentre(theta, mN, mD):
    """Map (a, b) fitted on centred logs back to the data's units: a = a_c + alpha mean(log N)."""
    a, b, e, alpha, beta = theta
    return np.array([a + alpha * mN, b + beta * mD, e, alpha, beta])
