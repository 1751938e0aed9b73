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

import numpy as np

from ..schedules.flops import FLOPS_PER_PARAM_TOKEN


def step_law(params, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, batch size in tokens) of the Step Law (module docstring)."""
    N, D = np.asarray(params, float), np.asarray(tokens, float)
    return 1.79 * N**-0.713 * D**0.307, 0.58 * D**0.571


def deepseek(params, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, batch size in tokens) of DeepSeek LLM's laws in C = 6ND (module docstring)."""
    C = FLOPS_PER_PARAM_TOKEN * np.asarray(params, float) * np.asarray(tokens, float)
    return 0.3118 * C**-0.1250, 0.2920 * C**0.3271
