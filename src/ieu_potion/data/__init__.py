"""Image-set containers, loaders and the Kedro dataset types that persist them."""

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

__all__ = ["DataLayoutError", "ImageSet"]
