"""The plugin hooks, under the path plugin authors import: ``from lightning_scaling.hookspecs import hookimpl``.

Their one home is `lightning_scaling.plugins.hookspecs`; this module re-exports it.
"""

from lightning_scaling.plugins.hookspecs import *  # noqa: F401,F403
from lightning_scaling.plugins.hookspecs import PROJECT_NAME, hookimpl, hookspec  # noqa: F401
