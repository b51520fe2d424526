"""napari-advseg: learned, realistic adversarial examples against segmentation networks.

The backend (data, networks, training, evaluation, command line) imports neither Qt nor napari;
the napari plugin lives in :mod:`napari_advseg._napari`.
"""

__version__ = "0.1.0"
