from ieu_potion.pipelines.potion_unlearning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
