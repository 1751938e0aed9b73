"""Adapters at the edge: the MLflow run store, LightningCLI helpers, the Lightning namespaces, loggers, plots and the
model family of a sweep.

- `MLflowRunStore` (`mlflow_store`): the runs of an MLflow experiment as run records and curves; writes the summary.
- `ScalingCLI`, `MLflowSaveConfigCallback`, `run_cli` (`lightning_cli`): LightningCLI with the config saved to MLflow.
- `Callback`, `namespace_of`, `lightning_module`, `cli_module`, ... (`lightning`): both Lightning namespaces from one
  implementation.
- `frontier_figure`, `isoflop_figure` (`plots`), `read_family`, `read_yaml_mapping`, `module_search_path`,
  `train_command` (`family`), the loggers' helpers.

Importing this package is cheap: each name is imported from its module on first use (PEP 562 `__getattr__`), so
`import lightning_scaling.integrations` pulls neither MLflow, Lightning nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "family": ("SIZE_KNOBS", "module_search_path", "read_family", "read_yaml_mapping", "train_command"),
    "lightning": ("INSTALLED", "NAMESPACES", "REFUSED_STRATEGIES", "SUPPORTED_STRATEGIES", "Callback", "Namespace",
                  "check_strategy", "cli_module", "installed_namespaces", "lightning_module", "namespace_of",
                  "override", "running_trainer", "strategy_name", "warn_rank_zero"),
    "lightning_cli": ("MLflowSaveConfigCallback", "ScalingCLI", "model_namespace", "run_cli", "scaling_cli"),
    "loggers": ("keep_credentials_out_of_output", "log_schema", "mlflow_logger", "open_mlflow_runs", "run_id_of",
                "set_run_tags"),
    "mlflow_store": ("MLflowRunStore", "SUMMARY_RUN_NAME"),
    "plots": ("frontier_figure", "isoflop_figure"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
