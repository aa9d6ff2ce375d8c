"""Image data modules: procedural shapes, scikit-image photo crops and image folders."""

from singexp.data.base import ImageDataModule
from singexp.data.folder import ImageFolderDataModule
from singexp.data.photos import PhotosDataModule
from singexp.data.shapes import ShapesDataModule

# Config names under conf/dataset/ (the presets use ImageFolderDataModule).
DATASETS: tuple[str, ...] = ("shapes", "photos", "image_folder", "celebahq", "ffhq", "tinyimagenet")

__all__ = [
    "DATASETS",
    "ImageDataModule",
    "ImageFolderDataModule",
    "PhotosDataModule",
    "ShapesDataModule",
]
