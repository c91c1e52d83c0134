"""Image-set containers and the readers of source data sets (the Kedro dataset types that
persist them are `adapters/datasets.py`)."""

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

__all__ = ["DataLayoutError", "ImageSet"]
