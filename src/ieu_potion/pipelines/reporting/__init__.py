"""reporting: tables, figures and one self-contained HTML report from a run's artifacts."""

from ieu_potion.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
