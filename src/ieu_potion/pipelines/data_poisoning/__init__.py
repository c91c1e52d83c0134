from ieu_potion.pipelines.data_poisoning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
