"""Project settings: the config loader that templated pipelines read, and the hooks."""

from ieu_potion.adapters.config_loader import ProjectConfigLoader
from ieu_potion.hooks import CleanupBeforeRunHook, ProgressHook, ValidateBeforeRunHook

HOOKS = (ValidateBeforeRunHook(), CleanupBeforeRunHook(), ProgressHook())

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}
