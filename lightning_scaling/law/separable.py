"""Law forms beyond Chinchilla's, fitted the same way: linear in their coefficients for fixed exponents.

A `SeparableLawFit` is a law L(N, D) = sum_k c_k f_k(N, D; theta) with coefficients c_k > 0 and a few nonlinear
parameters theta. As for `ChinchillaFit` (variable projection), for each theta of a grid the coefficients are
solved in closed form on relative errors (a 3-column least squares); the best grid cells are then polished by
L-BFGS-B on the exact objective, the sum of Huber(delta = 1e-3) of log residuals, over (log c, theta). Compute
allocation is found numerically (the loss along C = 6ND minimised over log N), and the bootstrap refits each
resample from the full-data optimum. Both forms below reduce to Chinchilla's at one value of their extra parameter,
so a backtest that prefers them says the data asks for it.

- `ExponentInteractionFit`: L = E + A / N^alpha + B / D^(beta + gamma ln(N / N0)), the data exponent depending on the
  model size (the idea of Farseer, Li et al. 2025, in its simplest form); N0 is the geometric mean of the sizes
  fitted, so (E, A, B, alpha, beta) keep their meaning at the typical size; gamma = 0 is Chinchilla.
- `DataConstrainedFit`: L = E + A / N^alpha + B / D'^beta with the effective data of Muennighoff et al. 2023
  (Eq. 5), D' = U + U R* (1 - exp(-(D/U - 1) / R*)) for D > U unique tokens (D' = D otherwise): repeated tokens
  are worth less and less. It needs each run's unique tokens (`unique_tokens=`); R* -> infinity is Chinchilla.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_scaling.errors import NotFittedError, ScalingDataError
from lightning_scaling.law.allocation import Allocation
from lightning_scaling.law.bootstrap import percentile_interval, resample_counts
from lightning_scaling.law.form import DEFAULT_CONFIDENCE
from lightning_scaling.law.objective import HUBER_DELTA, huber
from lightning_scaling.law.search import scan_subset
from lightning_scaling.options import check_confidence, check_resamples
from lightning_scaling.runs.validation import check_enough_runs, validate_runs
from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

GRID_POINTS = 9  # per nonlinear parameter of the scan
N_POLISH = 3  # best grid cells polished
BOOTSTRAP_MAX = 200  # resamples refitted (each a full polish): enough for 10th-90th percentiles


def _huber_log_objective(prediction, logL, delta, w=None):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(prediction) - logL
    r = np.where(np.isfinite(r), r, 1e3)
    h = huber(r, delta)
    return float(h.sum() if w is None else (h * w).sum())


class SeparableLawFit:
    """Base of the separable law forms (see the module docstring); subclasses define the basis and theta."""

    law_name = "separable"
    formula = ""
    coefficient_names: tuple[str, ...] = ("E", "A", "B")
    theta_names: tuple[str, ...] = ()
    theta_bounds: tuple[tuple[float, float], ...] = ()

    def __init__(self, delta: float = HUBER_DELTA, min_runs: int = 5, min_distinct: int = 3):
        self.delta = delta
        self.min_runs = min_runs
        self.min_distinct = min_distinct

    # -- what a form defines ----------------------------------------------------------------------------------
    def basis(self, N, D, theta, **extra) -> np.ndarray:
        """The columns f_k(N, D; theta), shape (len(coefficient_names), n); `extra` holds per-run data a form needs
        (unique tokens)."""
        raise NotImplementedError

    def _prepare(self, N, D, extra: dict) -> dict:
        """Check and return the per-run extras of the runs fitted, and set data-dependent constants."""
        return {}

    # -- fitting ----------------------------------------------------------------------------------------------
    def fit(self, N, D, loss, *, params_column: str = "params", labels=None, **extra) -> SeparableLawFit:
        N, D, L = validate_runs(N, D, loss, labels)
        check_enough_runs(N, D, self.min_runs, self.min_distinct)
        self.extra_ = self._prepare(N, D, extra)
        self.N_, self.D_, self.loss_ = N, D, L
        self.n_runs_, self.params_column_ = len(N), params_column
        logL = np.log(L)
        scan = scan_subset(np.log(N) + np.log(D))  # the basins from at most SCAN_RUNS runs; the polish uses all
        extra_scan = {k: np.asarray(v)[scan] for k, v in self.extra_.items()}
        cells = self._scan(N[scan], D[scan], L[scan], logL[scan], extra_scan)
        if not cells:
            raise ScalingDataError(f"{self.law_name}: no exponents in the search box fit these runs")
        cells.sort(key=lambda cell: cell[0])
        best = min((self._polish(N, D, logL, theta, c) for _, theta, c in cells[:N_POLISH]), key=lambda x: x[0])
        self.objective_, self.theta_, self.coef_ = best
        self.boundary_ = self._boundary()
        self.degenerate_ = []
        return self

    def _grid(self):
        axes = [np.linspace(lo, hi, GRID_POINTS) for lo, hi in self.theta_bounds]
        return np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)

    def _scan(self, N, D, L, logL, extra: dict) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(objective, theta, coefficients) at every grid cell whose least-squares coefficients are all positive.

        For fixed theta the coefficients minimise the relative squared error (a least-squares solve on the design
        f_k / L); all cells are solved at once, the basis evaluated with theta as columns (cells, 1).
        """
        grid = self._grid()
        columns = [grid[:, j:j + 1] for j in range(grid.shape[1])]
        with np.errstate(all="ignore"):
            F = np.asarray(self.basis(N, D, columns, **extra), float)  # (k, cells, n)
            X = np.transpose(F / L, (1, 2, 0))  # (cells, n, k): the relative-error design
            finite = np.all(np.isfinite(X), axis=(1, 2))
            X = np.where(finite[:, None, None], X, 0.0)
            coef = np.einsum("ckn,n->ck", np.linalg.pinv(X), np.ones_like(L))
            prediction = np.einsum("ck,kcn->cn", coef, F)
            r = np.log(prediction) - logL
        ok = finite & np.all(coef > 0, axis=1) & np.all(np.isfinite(r), axis=1)
        values = huber(np.where(np.isfinite(r), r, 0.0), self.delta).sum(axis=1)
        return [(float(values[i]), grid[i], coef[i]) for i in np.flatnonzero(ok)]

    def basis_jacobian(self, N, D, theta, **extra) -> np.ndarray | None:
        """d f_k / d theta_j, shape (len(theta_names), len(coefficient_names), n); None: use finite differences."""
        return None

    def _objective_and_gradient(self, x, N, D, logL, w):
        """The Huber objective over x = (log c, theta) and its gradient (analytic where the form gives its basis
        Jacobian): d/d log c_k = sum_i w_i psi(r_i) c_k f_ki / p_i, d/d theta_j = sum_i w_i psi(r_i)
        (sum_k c_k df_ki/dtheta_j) / p_i, with p = c . f, r = log p - log L and psi = Huber'."""
        k = len(self.coefficient_names)
        c, theta = np.exp(x[:k]), x[k:]
        F = self.basis(N, D, theta, **self.extra_)
        p = c @ F
        value = _huber_log_objective(p, logL, self.delta, w)
        J = self.basis_jacobian(N, D, theta, **self.extra_)
        if J is None:
            return value, None
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(p) - logL
            psi = np.clip(r, -self.delta, self.delta) / p
        if not np.all(np.isfinite(psi)) or not np.all(np.isfinite(J)):
            return value, None
        if w is not None:
            psi = psi * w
        grad = np.concatenate([c * (F @ psi), np.einsum("k,jki,i->j", c, J, psi)])
        return value, grad

    def _polish(self, N, D, logL, theta, c, w=None):
        from scipy.optimize import minimize

        k = len(self.coefficient_names)
        analytic = self.basis_jacobian(N, D, np.asarray(theta, float), **self.extra_) is not None

        def fun(x):
            value, grad = self._objective_and_gradient(x, N, D, logL, w)
            if not analytic:
                return value
            return value, (grad if grad is not None else np.zeros_like(x))

        def value_at(x):
            return self._objective_and_gradient(x, N, D, logL, w)[0]

        x0 = np.concatenate([np.log(c), theta])
        bounds = [(None, None)] * k + list(self.theta_bounds)
        res = minimize(fun, x0, jac=analytic, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-10})
        x = res.x if value_at(res.x) <= value_at(x0) else x0
        return float(value_at(x)), x[k:].copy(), np.exp(x[:k])

    def _boundary(self) -> list[str]:
        out = []
        for name, value, (lo, hi) in zip(self.theta_names, self.theta_, self.theta_bounds):
            if min(value - lo, hi - value) <= 1e-3 * (hi - lo):
                out.append(f"{name} = {value:.4g} is on its search bound [{lo:g}, {hi:g}]")
        return out

    # -- the law-form interface -------------------------------------------------------------------------------
    def _require_fitted(self):
        if not hasattr(self, "theta_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call `fit` first.")

    def predict(self, N, D, **extra):
        """Predicted loss at (N, D); a form that uses per-run extras takes them too (default: none, a fresh run)."""
        self._require_fitted()
        arrays = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float),
                                     *(np.asarray(v, float) for v in extra.values()))
        flat = {k: a.reshape(-1) for k, a in zip(extra, arrays[2:])}
        shape = arrays[0].shape
        basis = self.basis(arrays[0].reshape(-1), arrays[1].reshape(-1), self.theta_, **flat)
        return (self.coef_ @ basis).reshape(shape)

    def compute_optimal(self, flops) -> Allocation:
        """The N minimising the law along C = 6ND, found numerically (golden section on log N)."""
        from scipy.optimize import minimize_scalar

        self._require_fitted()
        C = float(flops)

        def loss_at(logN):
            N = math.exp(logN)
            return float(self.predict(N, C / (FLOPS_PER_PARAM_TOKEN * N)))

        centre = 0.5 * math.log(C / FLOPS_PER_PARAM_TOKEN)  # N = D
        grid = centre + np.linspace(-12.0, 12.0, 97)
        values = [loss_at(g) for g in grid]
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = minimize_scalar(loss_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
        N = math.exp(res.x)
        return Allocation(N, C / (FLOPS_PER_PARAM_TOKEN * N), C, float(res.fun))

    def bootstrap(self, n_resamples: int = 1000, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE):
        """Percentile intervals from refits of up to `BOOTSTRAP_MAX` resamples, each polished from the full-data fit."""
        self._require_fitted()
        n_resamples = min(check_resamples(n_resamples, "n_resamples", allow_zero=False), BOOTSTRAP_MAX)
        check_confidence(confidence)
        rng = np.random.default_rng(seed)
        n = self.n_runs_
        logL = np.log(self.loss_)
        fits = []
        groups = getattr(self, "groups_", None)
        for _ in range(n_resamples):
            if groups is None:
                w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            else:  # whole runs drawn (their checkpoints with them: `law.bootstrap.resample_counts`)
                w = resample_counts(rng, int(np.max(groups)) + 1, 1, groups)[0]
            _, theta, coef = self._polish(self.N_, self.D_, logL, self.theta_, self.coef_, w)
            fits.append((theta, coef))
        return SeparableBootstrap(self, fits, confidence, seed)

    def parameters(self) -> dict[str, float]:
        self._require_fitted()
        return {**dict(zip(self.coefficient_names, map(float, self.coef_))),
                **dict(zip(self.theta_names, map(float, self.theta_)))}

    def fitted_text(self) -> str:
        return ", ".join(f"{k} = {v:.4g}" for k, v in self.parameters().items())

    def to_dict(self) -> dict:
        self._require_fitted()
        return {"law": self.law_name, "formula": self.formula, "fitted": f"{self.formula}: {self.fitted_text()}",
                "parameters": list(self.parameters()), **self.parameters(), "objective": self.objective_,
                "n_runs": self.n_runs_, "params_column": self.params_column_, "boundary": list(self.boundary_),
                "degenerate": []}


@dataclass
class SeparableBootstrap:
    """The bootstrap replicates of a separable law form, with the interval methods of the law-form interface."""

    fit: SeparableLawFit
    replicates: list
    confidence: float
    seed: int

    @property
    def n_resamples(self) -> int:
        return len(self.replicates)

    def _percentiles(self, values) -> tuple[float, float]:
        return percentile_interval(values, self.confidence)

    def _each(self, fn):
        original = (self.fit.theta_, self.fit.coef_)
        try:
            out = []
            for theta, coef in self.replicates:
                self.fit.theta_, self.fit.coef_ = theta, coef
                out.append(fn(self.fit))
            return out
        finally:
            self.fit.theta_, self.fit.coef_ = original

    def parameter_intervals(self) -> dict[str, tuple[float, float]]:
        samples = self._each(lambda f: f.parameters())
        return {k: self._percentiles([s[k] for s in samples]) for k in samples[0]}

    def allocation_intervals(self, flops) -> dict[str, tuple[float, float]]:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # a replicate on a bound: inf, not noise
            allocations = self._each(lambda f: f.compute_optimal(flops))
        return {k: self._percentiles([getattr(a, k) for a in allocations]) for k in ("params", "tokens", "loss")}

    def loss_interval(self, N, D, **extra) -> tuple[float, float]:
        """Percentile interval of the predicted loss at (N, D), with the per-run data a form needs (`extra`)."""
        return self._percentiles(self._each(lambda f: float(np.ravel(f.predict(N, D, **extra))[0])))


class ExponentInteractionFit(SeparableLawFit):
    """L = E + A / N^alpha + B / D^(beta + gamma ln(N / N0)): the data exponent moves with the model size."""

    law_name = "exponent_interaction"
    formula = "L(N, D) = E + A/N^alpha + B/D^(beta + gamma ln(N/N0))"
    theta_names = ("alpha", "beta", "gamma")
    theta_bounds = ((0.0, 2.0), (0.0, 2.0), (-0.2, 0.2))

    def _prepare(self, N, D, extra: dict) -> dict:
        self.N0_ = float(np.exp(np.mean(np.log(N))))
        return {}

    def basis(self, N, D, theta, **extra):
        alpha, beta, gamma = theta
        exponent = beta + gamma * np.log(N / self.N0_)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.stack(np.broadcast_arrays(np.ones_like(N), N ** -alpha, D ** -exponent))

    def basis_jacobian(self, N, D, theta, **extra):
        alpha, beta, gamma = theta
        logN, logD = np.log(N), np.log(D)
        x = np.log(N / self.N0_)
        with np.errstate(over="ignore", invalid="ignore"):
            fN, fD = N ** -alpha, D ** -(beta + gamma * x)
        zero = np.zeros_like(N)
        return np.stack([np.stack([zero, -logN * fN, zero]),         # d/d alpha
                         np.stack([zero, zero, -logD * fD]),         # d/d beta
                         np.stack([zero, zero, -logD * x * fD])])    # d/d gamma

    def parameters(self) -> dict[str, float]:
        return {**super().parameters(), "N0": self.N0_}


class DataConstrainedFit(SeparableLawFit):
    """L = E + A / N^alpha + B / D'^beta with Muennighoff et al. 2023's effective data D' (repeated tokens)."""

    law_name = "data_constrained"
    extra_fields = ("unique_tokens",)
    formula = "L(N, D) = E + A/N^alpha + B/D'^beta, D' = U + U R* (1 - exp(-(D/U - 1)/R*))"
    theta_names = ("alpha", "beta", "log_R_star")
    theta_bounds = ((0.0, 2.0), (0.0, 2.0), (math.log(0.5), math.log(500.0)))

    def _prepare(self, N, D, extra: dict) -> dict:
        U = extra.get("unique_tokens")
        if U is None:
            raise ScalingDataError("the data-constrained law needs each run's unique tokens (`unique_tokens`)")
        return {"unique_tokens": validate_runs(U, D, N, names=("unique_tokens", "tokens", "params"))[0]}

    def effective_data(self, D, U, theta):
        """D' of Muennighoff et al. 2023, Eq. 5: U + U R* (1 - exp(-R_D / R*)), R_D = D / U - 1 repetitions."""
        R_star = np.exp(theta[2])
        with np.errstate(invalid="ignore", over="ignore"):
            repeats = np.maximum(D / U - 1.0, 0.0)
            return np.where(D > U, U + U * R_star * (1.0 - np.exp(-repeats / R_star)), D)

    def basis(self, N, D, theta, unique_tokens=None):
        """Without unique tokens (a fresh run) the data is all unique: D' = D."""
        alpha, beta, _ = theta
        U = np.full_like(D, np.inf) if unique_tokens is None else unique_tokens
        with np.errstate(over="ignore", invalid="ignore"):
            columns = (np.ones_like(N), N ** -alpha, self.effective_data(D, U, theta) ** -beta)
            return np.stack(np.broadcast_arrays(*columns))

    def basis_jacobian(self, N, D, theta, unique_tokens=None):
        alpha, beta, log_r = theta
        U = np.full_like(D, np.inf) if unique_tokens is None else unique_tokens
        R = math.exp(log_r)
        with np.errstate(over="ignore", invalid="ignore"):
            Dp = self.effective_data(D, U, theta)
            repeats = np.maximum(D / U - 1.0, 0.0)
            decay = np.exp(-repeats / R)
            # dD'/d log R* = R* dD'/dR* = U R* (1 - e^(-x/R*) - (x/R*) e^(-x/R*)) where D > U
            dDp = np.where(D > U, U * R * (1.0 - decay - (repeats / R) * decay), 0.0)
            fN, fD = N ** -alpha, Dp ** -beta
        zero = np.zeros_like(N)
        return np.stack([np.stack([zero, -np.log(N) * fN, zero]),
                         np.stack([zero, zero, -np.log(Dp) * fD]),
                         np.stack([zero, zero, -beta * fD / Dp * dDp])])

    def parameters(self) -> dict[str, float]:
        params = super().parameters()
        params["R_star"] = math.exp(params.pop("log_R_star"))
        return params
