from ieu_potion.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
