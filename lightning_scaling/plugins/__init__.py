"""Plugins (pluggy, project name ``"lightning_scaling"``): the hook specifications, the plugin manager and the
built-in plugin.

- `hookspecs`: the hooks a plugin can implement, one docstring each; `hookimpl` marks an implementation.
- `manager`: the process-wide plugin manager and the calls the rest of the package makes through it.
- `builtin`: what the package does out of the box, registered through the same hooks third parties use.
"""

from lightning_scaling.plugins.builtin import DEFAULT_VOCAB_SIZE, GPT_KEYS, gpt_non_embedding_params, gpt_shape_for
from lightning_scaling.plugins.hookspecs import PROJECT_NAME, hookimpl, hookspec
from lightning_scaling.plugins.manager import (
    BUILTIN_NAME,
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    PluginWarning,
    check_plugins,
    estimate_flops,
    executor_factories,
    law_forms,
    notify_recommendation,
    plugin_manager,
    propose_architecture,
    reset_plugin_manager,
)

__all__ = [
    "BUILTIN_NAME",
    "DEFAULT_VOCAB_SIZE",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "GPT_KEYS",
    "PROJECT_NAME",
    "PluginWarning",
    "check_plugins",
    "estimate_flops",
    "executor_factories",
    "gpt_non_embedding_params",
    "gpt_shape_for",
    "hookimpl",
    "hookspec",
    "law_forms",
    "notify_recommendation",
    "plugin_manager",
    "propose_architecture",
    "reset_plugin_manager",
]
