from ieu_potion.pipelines.ieu_finetune.pipeline import backbone_pipeline, create_pipeline

__all__ = ["backbone_pipeline", "create_pipeline"]
