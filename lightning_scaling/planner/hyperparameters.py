"""Published laws for the learning rate and batch size at a model size and token budget: priors for a plan.

- Step Law (Li et al. 2025, "Predictable Scale: Part I", Eq. 1-2): eta_opt = 1.79 N^-0.713 D^0.307 and
  B_opt = 0.58 D^0.571 tokens, N the non-embedding parameters, D the training tokens (AdamW, fitted on 3,700 runs
  at 60M-1B parameters; with a constant-then-decay schedule).
- DeepSeek LLM (DeepSeek-AI 2024, Eq. 1): eta_opt = 0.3118 C^-0.1250 and B_opt = 0.2920 C^0.3271 tokens, C = M D
  with M the non-embedding FLOPs per token (about 6 N here: C = 6ND).

Both are priors: they were fitted on other models, data and optimisers; a team's own learning-rate sweep replaces
them. With muP and the Power schedule the question does not arise the same way: the base learning rate tuned on
the small proxy transfers across widths (Yang et al. 2022) and the Power schedule's a, b across batch sizes and
token budgets (Shen et al. 2024), so the plan reuses them.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_scaling.schedules.flops import FLOPS_PER_PARAM_TOKEN

STEP_LAW_EXPONENTS = (-0.713, 0.307)  # Step Law's exponents on N and D (Li et al. 2025, Eq. 1)


def step_law(params, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, batch size in tokens) of the Step Law (module docstring)."""
    N, D = np.asarray(params, float), np.asarray(tokens, float)
    p, q = STEP_LAW_EXPONENTS
    return 1.79 * N**p * D**q, 0.58 * D**0.571


def deepseek(params, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, batch size in tokens) of DeepSeek LLM's laws in C = 6ND (module docstring)."""
    C = FLOPS_PER_PARAM_TOKEN * np.asarray(params, float) * np.asarray(tokens, float)
    return 0.3118 * C**-0.1250, 0.2920 * C**0.3271


# -- the team's own learning-rate law, from sweeps in the store ---------------------------------------------------
SAME_POINT = 0.02  # runs within 2% in both N and D are one point of a sweep (as `planner.rollout.SAME_RUN`)
MIN_SWEEP = 3  # a sweep has at least three distinct learning rates (a parabola in log lr)
DISTINCT_LR = 0.05  # learning rates closer than 5% (in log) count as one


def lr_sweeps(params, tokens, lr, loss) -> tuple[list[dict], list[str]]:
    """The learning-rate sweeps among runs: groups at one (N, D) (within `SAME_POINT`) with at least `MIN_SWEEP`
    distinct learning rates. Each is fitted by a parabola of the loss in log lr; its vertex is the sweep's optimum,
    used when the parabola opens upward and the vertex lies inside the learning rates swept.

    Returns (sweeps, reasons): each sweep {"params", "tokens", "lr_opt", "lrs", "loss_at_opt"}; each reason says
    why a group with several learning rates was not used."""
    N, D, eta, L = (np.asarray(a, float) for a in (params, tokens, lr, loss))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(eta) & np.isfinite(L) & (N > 0) & (D > 0) & (eta > 0)
    idx = np.flatnonzero(ok)
    groups: list[list[int]] = []
    for i in idx:
        for g in groups:
            j = g[0]
            if abs(math.log(N[i] / N[j])) < SAME_POINT and abs(math.log(D[i] / D[j])) < SAME_POINT:
                g.append(int(i))
                break
        else:
            groups.append([int(i)])
    sweeps, reasons = [], []
    for g in groups:
        x = np.log(eta[g])
        distinct = _distinct(x)
        if distinct < 2:
            continue
        where = f"N={np.median(N[g]):.3g}, D={np.median(D[g]):.3g}"
        if distinct < MIN_SWEEP:
            reasons.append(f"{where}: {distinct} learning rates (a sweep needs {MIN_SWEEP})")
            continue
        c, b, a = np.polyfit(x, L[g], 2)
        if not c > 0:
            reasons.append(f"{where}: the loss does not curve up in log lr (no optimum inside the sweep)")
            continue
        vertex = -b / (2 * c)
        if not (x.min() <= vertex <= x.max()):
            side = "below" if vertex < x.min() else "above"
            reasons.append(f"{where}: the optimum lies {side} the learning rates swept "
                           f"({math.exp(x.min()):.3g}..{math.exp(x.max()):.3g}); widen the sweep")
            continue
        sweeps.append({"params": float(np.exp(np.log(N[g]).mean())), "tokens": float(np.exp(np.log(D[g]).mean())),
                       "lr_opt": float(math.exp(vertex)), "lrs": distinct,
                       "loss_at_opt": float(a + b * vertex + c * vertex**2)})
    return sweeps, reasons


def _distinct(x: np.ndarray) -> int:
    x = np.sort(x)
    return int(1 + np.sum(np.diff(x) > DISTINCT_LR)) if len(x) else 0


def fit_lr_law(sweeps: list[dict]) -> dict | None:
    """eta_opt = k N^p D^q fitted to the sweeps' optima by least squares in logs (None without a sweep).

    The exponents the sweeps cannot tell apart are Step Law's (`STEP_LAW_EXPONENTS`): one sweep sets k only;
    sweeps along one direction in (log N, log D) (e.g. one tokens-per-parameter ratio, or one size) fit the
    exponent along that direction with the other kept. Returns {"k", "p", "q", "fitted": which of p, q were fitted,
    "sweeps": the count, "rmse_log": the scatter in log eta of the optima about the law}."""
    if not sweeps:
        return None
    x = np.log([[s["params"], s["tokens"]] for s in sweeps])
    y = np.log([s["lr_opt"] for s in sweeps])
    p0, q0 = STEP_LAW_EXPONENTS
    spread_N = np.ptp(x[:, 0]) > 2 * SAME_POINT
    spread_D = np.ptp(x[:, 1]) > 2 * SAME_POINT
    design = np.column_stack([np.ones(len(y)), x - x.mean(axis=0)])
    full = len(y) >= 3 and spread_N and spread_D and np.linalg.cond(design) < 1e3
    if full:
        coef = np.linalg.lstsq(np.column_stack([np.ones(len(y)), x]), y, rcond=None)[0]
        logk, p, q, fitted = coef[0], coef[1], coef[2], ["p", "q"]
    elif len(y) >= 2 and (spread_N or spread_D):
        # one direction: D's exponent when only D moves, else N's (N alone, or both together at one tokens per
        # parameter), the other kept from Step Law
        if spread_D and not spread_N:
            p, q, fitted = p0, np.polyfit(x[:, 1], y - p0 * x[:, 0], 1)[0], ["q"]
        else:
            p, q, fitted = np.polyfit(x[:, 0], y - q0 * x[:, 1], 1)[0], q0, ["p"]
        logk = float(np.mean(y - p * x[:, 0] - q * x[:, 1]))
    else:
        p, q, fitted = p0, q0, []
        logk = float(np.mean(y - p * x[:, 0] - q * x[:, 1]))
    resid = y - (logk + p * x[:, 0] + q * x[:, 1])
    return {"k": float(math.exp(logk)), "p": float(p), "q": float(q), "fitted": fitted, "sweeps": len(y),
            "rmse_log": float(np.sqrt(np.mean(resid**2)))}


def lr_from_law(law: dict, params, tokens) -> np.ndarray:
    """eta_opt of a fitted learning-rate law (`fit_lr_law`) at N, D."""
    return law["k"] * np.asarray(params, float) ** law["p"] * np.asarray(tokens, float) ** law["q"]
