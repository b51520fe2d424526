"""Tests of the procedural abdominal CT phantom (napari_advseg.data.phantom)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_advseg.data.phantom import PhantomConfig, generate_phantom
from napari_advseg.errors import InvalidInputError

PANCREAS, KIDNEYS, LIVER, SPLEEN = 1, 2, 3, 4
ORGANS = (PANCREAS, KIDNEYS, LIVER, SPLEEN)
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def subjects() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: generate_phantom(seed, PhantomConfig(contrast="enhanced")) for seed in SEEDS}


def _body_mask(image: np.ndarray) -> np.ndarray:
    """Inside the skin: not air, with enclosed gas and lung filled in, slice by slice."""
    filled = np.zeros(image.shape, dtype=bool)
    for z, plane in enumerate(image > -500):
        filled[z] = ndimage.binary_fill_holes(plane)
    return filled


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(mask))


def test_shapes_and_dtypes(subjects):
    for image, labels in subjects.values():
        assert image.shape == labels.shape == PhantomConfig().shape
        assert image.dtype == np.int16
        assert labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, *ORGANS}
        assert -1024 <= image.min() and image.max() <= 3071


def test_same_seed_is_bit_identical_and_seeds_differ(subjects):
    image, labels = generate_phantom(3, PhantomConfig(contrast="enhanced"))
    assert np.array_equal(image, subjects[3][0])
    assert np.array_equal(labels, subjects[3][1])
    for a, b in [(0, 1), (1, 2), (4, 5)]:
        assert not np.array_equal(subjects[a][0], subjects[b][0])
        assert not np.array_equal(subjects[a][1], subjects[b][1])
    # Subjects differ in anatomy, not just in noise: organ volumes change.
    volumes = {
        seed: np.bincount(lab.ravel(), minlength=5)[1:] for seed, (_, lab) in subjects.items()
    }
    assert len({tuple(v) for v in volumes.values()}) == len(SEEDS)


def test_all_organs_present_and_together_on_a_slice(subjects):
    for _, labels in subjects.values():
        present = np.stack([(labels == k).any(axis=(1, 2)) for k in ORGANS])  # (4, nz)
        assert present.any(axis=1).all()
        assert present.all(axis=0).sum() >= 3  # several slices show all four
        mid = labels.shape[0] // 2
        assert present.all(axis=0)[mid - 3 : mid + 4].any()  # ... around the middle


def test_partial_and_empty_slices(subjects):
    for _, labels in subjects.values():
        present = np.stack([(labels == k).any(axis=(1, 2)) for k in ORGANS])
        n_present = present.sum(axis=0)
        assert (n_present == 0).any(), "no organ-free slice"
        assert ((n_present > 0) & (n_present < 4)).sum() >= 5, "too few partial slices"
        # Organ-free slices are at the inferior end, the liver reaches the top.
        assert n_present[0] == 0
        assert present[LIVER - 1, -1]


def test_organ_hu_means(subjects):
    # Means over the whole label, partial volume with fat, gas and lung at the edges included.
    ranges = {PANCREAS: (60, 110), KIDNEYS: (100, 165), LIVER: (90, 125), SPLEEN: (85, 130)}
    for image, labels in subjects.values():
        for organ, (lo, hi) in ranges.items():
            mean = float(image[labels == organ].mean())
            assert lo <= mean <= hi, (organ, mean)
        # Kidneys: bright cortex around a darker medulla and pelvis.
        kidney = image[labels == KIDNEYS]
        assert np.percentile(kidney, 90) > 150
        assert np.percentile(kidney, 10) < 90
        # Air outside the body.
        assert abs(float(image[:, :4, :4].mean()) + 1000) < 20


def test_contrast_phase_changes_intensity_not_anatomy(subjects):
    image, labels = subjects[2]
    native_image, native_labels = generate_phantom(2, PhantomConfig(contrast="native"))
    assert np.array_equal(labels, native_labels)
    assert 40 <= float(native_image[labels == LIVER].mean()) <= 70
    assert float(native_image[labels == KIDNEYS].mean()) < 50
    assert float(image[labels == KIDNEYS].mean()) > 100
    mixed = [generate_phantom(s, PhantomConfig((16, 64, 64))) for s in range(12)]
    livers = [float(img[lab == LIVER].mean()) for img, lab in mixed]
    assert min(livers) < 70 and max(livers) > 85  # native and enhanced subjects in one cohort
    with pytest.raises(InvalidInputError, match="contrast must be one of"):
        PhantomConfig(contrast="arterial")


def test_left_right_and_anterior_posterior_layout(subjects):
    for image, labels in subjects.values():
        nz, ny, nx = labels.shape
        liver = _centroid(labels == LIVER)
        spleen = _centroid(labels == SPLEEN)
        kidneys = _centroid(labels == KIDNEYS)
        pancreas = _centroid(labels == PANCREAS)
        # Radiological convention: the patient's right (liver) on the image's left.
        assert liver[2] < nx / 2 < spleen[2]
        assert liver[2] < spleen[2] - 15
        # Spleen and kidneys are posterior (larger row) to the liver; pancreas anterior to them.
        assert spleen[1] > liver[1]
        assert kidneys[1] > liver[1]
        assert pancreas[1] < kidneys[1]
        # The spine (bone) is at the bottom centre of a mid slice.
        bone = image[nz // 2] > 400
        spine = _centroid(bone & (np.abs(np.arange(nx) - nx / 2) < 12)[None, :])
        assert spine[0] > ny / 2
        # The liver spans the superior slices, the kidneys are lower.
        assert liver[0] > kidneys[0]


def test_kidneys_are_two_components_either_side_of_the_spine(subjects):
    good = 0
    for _, labels in subjects.values():
        kidney = labels == KIDNEYS
        z = int(np.argmax(kidney.sum(axis=(1, 2))))
        comp, _ = ndimage.label(kidney[z])
        sizes = np.bincount(comp.ravel())[1:]
        big = [i + 1 for i, size in enumerate(sizes) if size >= 10]
        if len(big) == 2:
            xs = sorted(_centroid(comp == i)[1] for i in big)
            nx = labels.shape[2]
            good += xs[0] < nx / 2 < xs[1]
    assert good >= len(SEEDS) - 1


def test_organs_do_not_overlap_and_lie_inside_the_body(subjects):
    for image, labels in subjects.values():
        body = _body_mask(image)
        organ = labels > 0
        assert not (organ & ~body).any()
        assert (image[organ] > -500).all()
        # Organs stay off the field-of-view border.
        assert not organ[:, [0, -1], :].any() and not organ[:, :, [0, -1]].any()


def test_non_default_shape_and_spacing():
    config = PhantomConfig(shape=(12, 96, 80), spacing=(5.0, 4.0, 4.0), noise_hu=5.0)
    image, labels = generate_phantom(7, config)
    assert image.shape == labels.shape == (12, 96, 80)
    assert set(np.unique(labels)) == {0, *ORGANS}
    body = _body_mask(image)
    assert not ((labels > 0) & ~body).any()
    # The body fits the narrow 320 mm field of view (air at the left/right edges).
    assert (image[:, :, 0] < -900).mean() > 0.95 and (image[:, :, -1] < -900).mean() > 0.95
    # Organ sizes are physical: liver area on its largest slice in mm^2 similar to the default.
    area = (labels == LIVER).sum(axis=(1, 2)).max() * 4.0 * 4.0
    _, default_labels = generate_phantom(7)
    default_area = (default_labels == LIVER).sum(axis=(1, 2)).max() * 3.0 * 3.0
    assert 0.6 < area / default_area < 1.4


def test_config_is_normalised_and_hashable():
    config = PhantomConfig(shape=[12, 96, 80], spacing=[5, 4, 4])  # type: ignore[arg-type]
    assert config.shape == (12, 96, 80) and config.spacing == (5.0, 4.0, 4.0)
    assert hash(config) == hash(PhantomConfig((12, 96, 80), (5.0, 4.0, 4.0)))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"shape": (7, 128, 128)}, "shape"),
        ({"shape": (40, 128)}, "shape"),
        ({"shape": (40, 128, 0)}, "shape"),
        ({"shape": (40, 128.5, 128)}, "shape"),
        ({"shape": "abc"}, "shape"),
        ({"spacing": (0.0, 3.0, 3.0)}, "spacing"),
        ({"spacing": (3.0, -1.0, 3.0)}, "spacing"),
        ({"spacing": (3.0, 3.0, math.nan)}, "spacing"),
        ({"spacing": (3.0, 3.0)}, "spacing"),
        ({"noise_hu": -1.0}, "noise"),
    ],
)
def test_invalid_config_raises_the_packages_error(kwargs, word):
    # InvalidInputError is also a ValueError, so callers catching ValueError keep working.
    with pytest.raises(InvalidInputError, match=word):
        generate_phantom(0, PhantomConfig(**kwargs))


def test_package_keeps_the_public_names():
    import napari_advseg.data.phantom as phantom
    from napari_advseg.data.phantom import config, generate

    assert phantom.__all__ == ["PhantomConfig", "generate_phantom"]
    assert phantom.PhantomConfig is config.PhantomConfig
    assert phantom.generate_phantom is generate.generate_phantom
