"""Project settings: the config loader that templated pipelines read, and the hooks."""

import warnings

from ieu_potion.adapters.config_loader import ProjectConfigLoader
from ieu_potion.hooks import (
    CleanupBeforeRunHook,
    ProgressHook,
    RunLockHook,
    TrackingHook,
    ValidateBeforeRunHook,
)

# Two warnings that would print 30 wrapped lines on every run and that no user can act on:
# Kedro 1.7's config loader calls an OmegaConf function newer OmegaConf releases
# deprecate; and the reporting pipeline reads every namespace's results (names such as
# `badnets_white.seed_0.results_ieu`) on purpose, which Kedro warns about once.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)
warnings.filterwarnings(
    "ignore", message=r"One or more dataset names contain '\.'", category=UserWarning
)

HOOKS = (
    RunLockHook(),
    ValidateBeforeRunHook(),
    CleanupBeforeRunHook(),
    ProgressHook(),
    TrackingHook(),
)

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/<env>/tracking.yml: optional MLflow tracking (docs/tracking.md)
    "config_patterns": {"tracking": ["tracking*", "tracking*/**"]},
}
