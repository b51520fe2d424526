"""Reader, writer and sample data, through the npe2 manifest (no viewer needed)."""

import nibabel as nib
import numpy as np
import pytest
from npe2 import PluginManager

from napari_advseg._napari.io import get_reader, read_nifti_layers, write_image, write_labels
from napari_advseg._napari.layer_data import GRID_KEY
from napari_advseg.errors import InvalidInputError

from .conftest import blob_volume, save_array, save_pair


@pytest.fixture(scope="module")
def manifest():
    manager = PluginManager.instance()
    manager.discover(include_npe1=False)
    return manager.get_manifest("napari-advseg")


def test_reader_gives_image_and_labels_layers(tmp_path):
    volume = blob_volume(spacing=(5.0, 0.8, 0.7))
    image_path, labels_path = save_pair(tmp_path, volume)
    reader = get_reader([str(image_path), str(labels_path)])
    (image, image_meta, image_type), (labels, labels_meta, labels_type) = reader(
        [str(image_path), str(labels_path)]
    )
    assert (image_type, labels_type) == ("image", "labels")
    assert image_meta["scale"] == labels_meta["scale"] == pytest.approx((5.0, 0.8, 0.7))
    np.testing.assert_array_equal(labels, volume.labels)
    assert labels_meta["colormap"].map(np.array([3]))[0][0] > 0.9  # liver orange: red channel
    assert image.dtype == np.float32 and image_meta["contrast_limits"] == (-160.0, 240.0)
    assert get_reader("notes.txt") is None and get_reader(["a.nii.gz", "b.png"]) is None


def test_writer_lands_on_the_source_grid(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, (9, 7, 5)).astype(np.int16)
    affine = np.array([[0, -2.0, 0, 10], [0, 0, 3.0, -5], [1.5, 0, 0, 7], [0, 0, 0, 1]])
    source = save_array(tmp_path / "odd.nii.gz", data, affine)
    ((image, meta, _),) = read_nifti_layers(str(source))
    (out,) = write_image(str(tmp_path / "copy"), image, meta)
    written = nib.load(out)
    assert out.endswith(".nii.gz")
    np.testing.assert_allclose(np.asarray(written.dataobj), data)
    np.testing.assert_allclose(written.affine, affine)
    labels = (image > 0).astype(np.uint8)
    (labels_out,) = write_labels(str(tmp_path / "mask.nii.gz"), labels, meta)
    assert np.asarray(nib.load(labels_out).dataobj).dtype == np.uint8


def test_writer_without_grid_uses_the_scale(tmp_path):
    (out,) = write_labels(
        str(tmp_path / "m.nii"), np.ones((3, 4, 5), np.uint8), {"scale": (2.0, 1.0, 0.5)}
    )
    assert nib.load(out).header.get_zooms() == pytest.approx((0.5, 1.0, 2.0))
    with pytest.raises(InvalidInputError, match="only 3D"):
        write_image(str(tmp_path / "x.nii"), np.ones((4, 5)), {"name": "flat"})


def test_bad_label_file_is_refused(tmp_path):
    bad = np.zeros((6, 6, 4), np.uint8)
    bad[0, 0, 0] = 9
    with pytest.raises(InvalidInputError, match=r"unknown label values \[9\]"):
        read_nifti_layers(str(save_array(tmp_path / "bad.nii.gz", bad)))


def test_manifest_contributions(manifest):
    contributions = manifest.contributions
    assert {reader.command for reader in contributions.readers} == {"napari-advseg.get_reader"}
    assert {w.layer_types[0] for w in contributions.writers} == {"image", "labels"}
    samples = {sample.key: sample for sample in contributions.sample_data}
    assert set(samples) == {"phantom", "real_ct"}
    for sample in samples.values():
        (image, image_meta, kind), (labels, labels_meta, labels_kind) = sample.open()
        assert (kind, labels_kind) == ("image", "labels")
        assert image.shape == labels.shape and image_meta["scale"] == labels_meta["scale"]
        assert GRID_KEY in image_meta["metadata"]
        assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
