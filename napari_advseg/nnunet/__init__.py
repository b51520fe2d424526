"""nnU-Net v2 trained-model folders as segmentation models (see :mod:`.folder`, :mod:`.network`)."""

from .folder import NnUNetModel, available_folds, derive_spec, is_nnunet_folder, read_nnunet_folder

__all__ = [
    "NnUNetModel",
    "available_folds",
    "derive_spec",
    "is_nnunet_folder",
    "read_nnunet_folder",
]
