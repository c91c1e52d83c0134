"""Project settings: the config loader that templated pipelines read, and the hooks."""

from ieu_potion.config import ProjectConfigLoader
from ieu_potion.hooks import CleanupBeforeRunHook, ValidateBeforeRunHook

HOOKS = (ValidateBeforeRunHook(), CleanupBeforeRunHook())

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}
