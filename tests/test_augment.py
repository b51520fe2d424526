"""Training augmentation: the standard set, and the domain set (resolution, noise, contrast
phase, field of view). Properties of the transforms, never of a trained model."""

import dataclasses

import pytest
import torch

from napari_advseg.errors import InvalidInputError
from napari_advseg.training.augment import (
    DOMAIN,
    _cut_border,
    _lower_resolution,
    _organ_offsets,
    augment_batch,
)
from napari_advseg.training.harden_settings import HardenConfig
from napari_advseg.training.seg_trainer import SegTrainingConfig


def batch(size=4, side=32):
    """Images in z-score units, with two square organs (labels 1 and 2) on background."""
    images = torch.randn(size, 1, side, side, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(size, side, side, dtype=torch.int64)
    labels[:, 4:14, 4:14] = 1
    labels[:, 18:28, 18:28] = 2
    return images, labels


@pytest.mark.parametrize("domain", [False, True])
def test_augmentation_keeps_shapes_and_label_values_and_is_seeded(domain):
    images, labels = batch()
    out = augment_batch(images, labels, torch.Generator().manual_seed(3), domain)
    again = augment_batch(images, labels, torch.Generator().manual_seed(3), domain)
    assert out[0].shape == images.shape and out[1].shape == labels.shape
    assert out[1].dtype == torch.int64 and set(out[1].unique().tolist()) <= {0, 1, 2}
    assert torch.isfinite(out[0]).all()
    assert torch.equal(out[0], again[0]) and torch.equal(out[1], again[1])


def test_domain_augmentation_differs_from_the_standard_set():
    images, labels = batch()
    standard = augment_batch(images, labels, torch.Generator().manual_seed(1))
    domain = augment_batch(images, labels, torch.Generator().manual_seed(1), domain=True)
    assert not torch.equal(standard[0], domain[0])


def test_a_cut_border_holds_neither_image_nor_organ():
    images, labels = batch(size=8)
    ranges = dataclasses.replace(DOMAIN, cut_probability=1.0)
    cut_images, cut_labels = _cut_border(images, labels, ranges, torch.Generator().manual_seed(0))
    for image, label in zip(cut_images, cut_labels, strict=True):
        blank = image[0] == 0.0
        rows, cols = blank.all(dim=1), blank.all(dim=0)
        band = rows.sum() if rows.any() else cols.sum()
        assert 0.05 * 32 - 1 <= band <= 0.25 * 32 + 1  # one band, 5 to 25 % of the side
        assert (label[blank] == 0).all()
    assert torch.equal(labels, batch(size=8)[1])  # the inputs are not changed in place


def test_organ_offsets_shift_each_organ_on_its_own_and_leave_background():
    _, labels = batch(size=16)
    offsets = _organ_offsets(labels, DOMAIN, torch.Generator().manual_seed(0))[:, 0]
    assert offsets.abs().max() <= DOMAIN.organ_offset + 1e-6
    assert (offsets[:, 0, 0] == 0).all() and (offsets[:, 16, 2] == 0).all()  # background
    inner_1, inner_2 = offsets[:, 9, 9], offsets[:, 23, 23]
    assert torch.equal(offsets[:, 6, 6], inner_1)  # constant inside an organ
    assert not torch.equal(inner_1, inner_2)  # each organ draws its own shift


def test_lower_resolution_blurs_only_the_chosen_samples():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    images = checker.float()[None, None].repeat(4, 1, 1, 1)
    always = dataclasses.replace(DOMAIN, resolution_probability=1.0)
    blurred = _lower_resolution(images, always, torch.Generator().manual_seed(0))
    assert (blurred.std(dim=(1, 2, 3)) < 0.5 * images.std(dim=(1, 2, 3))).all()
    never = dataclasses.replace(DOMAIN, resolution_probability=0.0)
    assert torch.equal(_lower_resolution(images, never, torch.Generator()), images)


@pytest.mark.parametrize("config", [SegTrainingConfig, HardenConfig])
def test_domain_augmentation_needs_augmentation_on(config):
    assert config(domain_augment=True).domain_augment
    with pytest.raises(InvalidInputError, match="turn augmentation on"):
        config(augment=False, domain_augment=True)
