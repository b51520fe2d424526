"""Padding, resampling and the round trip to the model's grid and back."""

import numpy as np
import pytest
import torch

from napari_advseg.data.resample import grid_shape, resize_images, resize_labels
from napari_advseg.data.slices import pad_to_multiple, sample_patch_origins
from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.inference import (
    labels_to_model_grid,
    model_grid_shape,
    predict_probabilities,
    segment_volume,
    to_model_grid,
)
from napari_advseg.segmentation import SegmentationModel

from .conftest import blob_volume


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (1, 9), (31, 8)])
def test_pad_and_crop_round_trip(height, width):
    images = torch.randn(2, 1, height, width)
    padded, crop = pad_to_multiple(images, 8)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert padded.shape[-2] - height < 8 and padded.shape[-1] - width < 8
    assert torch.equal(crop(padded), images)
    if padded.shape != images.shape:
        assert float(padded.min()) == float(images.min())  # air-like fill


def test_grid_shape_keeps_field_of_view():
    assert grid_shape((512, 512), (0.8, 0.8), (3.0, 3.0)) == (137, 137)
    assert grid_shape((101, 122), (3.0, 3.0), (3.0, 3.0)) == (101, 122)
    assert grid_shape((10, 10), (1.0, 2.0), (2.0, 1.0)) == (5, 20)


def test_resize_images_round_trip_of_smooth_image():
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 80), indexing="ij")
    image = torch.sin(3 * y + 2 * x)[None, None]
    small = resize_images(image, (24, 20))
    back = resize_images(small, (96, 80))
    assert back.shape == image.shape
    assert float((back - image)[..., 8:-8, 8:-8].abs().max()) < 0.05


def test_resize_labels_stays_integer_and_aligned():
    labels = torch.zeros(1, 30, 30, dtype=torch.int64)
    labels[0, 10:20, 10:20] = 3
    up = resize_labels(labels, (90, 90))
    assert up.dtype == torch.int64 and set(up.unique().tolist()) == {0, 3}
    assert int((up == 3).sum()) == 900
    assert torch.equal(resize_labels(up, (30, 30)), labels)


def test_model_grid_round_trip_fine_scan(tiny_unet):
    network, spec = tiny_unet
    fine = blob_volume(shape=(2, 150, 130), spacing=(3.0, 0.8, 0.8))
    slices = to_model_grid(fine, spec)
    assert slices.model_shape == (40, 35)
    assert slices.images.shape[-2] % spec.input_multiple == 0
    assert slices.images.shape[-1] % spec.input_multiple == 0
    probabilities = predict_probabilities(SegmentationModel(network, spec, "tiny"), slices)
    assert probabilities.shape == (2, spec.label_map.num_classes, 150, 130)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 150, 130))
    labels = segment_volume(SegmentationModel(network, spec, "tiny"), fine)
    assert labels.shape == fine.image.shape and labels.dtype == np.uint8
    assert labels_to_model_grid(fine, spec).shape == (2, 40, 35)


def test_coarse_scan_is_upsampled(tiny_unet):
    network, spec = tiny_unet
    coarse = blob_volume(shape=(2, 24, 30), spacing=(5.0, 4.5, 4.5))
    assert model_grid_shape(coarse, spec) == (36, 45)
    labels = segment_volume(SegmentationModel(network, spec, "tiny"), coarse)
    assert labels.shape == (2, 24, 30)


def test_image_too_small_for_the_network(tiny_unet):
    _, spec = tiny_unet
    tiny = Volume(np.zeros((2, 20, 20)) + np.arange(20), (3.0, 0.5, 0.5), name="tiny.nii.gz")
    with pytest.raises(InvalidInputError, match=r"tiny.nii.gz: .* needs at least 8 pixels"):
        model_grid_shape(tiny, spec)


def test_patch_origins_in_bounds_and_biased_to_organs():
    labels = np.zeros((100, 120), np.uint8)
    labels[80:90, 100:110] = 1
    rng = np.random.default_rng(0)
    origins = sample_patch_origins(labels, 32, 400, rng, foreground_fraction=1.0)
    assert origins.min() >= 0 and origins[:, 0].max() <= 68 and origins[:, 1].max() <= 88
    contains = [(labels[y : y + 32, x : x + 32] > 0).any() for y, x in origins]
    assert all(contains)
    uniform = sample_patch_origins(labels, 32, 400, rng, foreground_fraction=0.0)
    assert np.mean([(labels[y : y + 32, x : x + 32] > 0).any() for y, x in uniform]) < 0.5
    with pytest.raises(ValueError, match="smaller than the patch"):
        sample_patch_origins(labels[:20], 32, 1, rng)
