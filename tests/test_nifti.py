import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.data.nifti import load_volume, read_nifti, write_nifti
from napari_advseg.data.volume import SourceGrid, Volume
from napari_advseg.errors import InvalidInputError

from .conftest import blob_volume, save_array, save_pair


def test_ras_file_is_reoriented_to_radiological_view(tmp_path):
    # RAS array (x, y, z): x grows towards the patient's left? No: RAS+ x grows to the Right.
    data = np.zeros((6, 5, 4), np.int16)
    data[5, 0, 3] = 1  # right-most, posterior-most, superior-most voxel
    path = save_array(tmp_path / "ras.nii.gz", data)
    canonical, grid = read_nifti(path)
    assert canonical.shape == (4, 5, 6)  # (z, y, x)
    # canonical: z inferior->superior, y anterior->posterior, x patient's right->left
    assert canonical[3, 4, 0] == 1
    assert grid.canonical_spacing() == (3.0, 3.0, 3.0)


def test_write_lands_on_the_source_grid(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, (7, 6, 5)).astype(np.int16)
    affine = np.array([[0, -2.0, 0, 10], [0, 0, 3.0, -5], [1.5, 0, 0, 7], [0, 0, 0, 1]])
    src = save_array(tmp_path / "odd.nii.gz", data, affine)
    volume = load_volume(src)
    assert volume.spacing == (2.0, 3.0, 1.5) or sorted(volume.spacing) == [1.5, 2.0, 3.0]
    out = write_nifti(tmp_path / "back.nii.gz", volume.image, volume.grid, "int16")
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), data)
    np.testing.assert_allclose(written.affine, affine)


@pytest.mark.parametrize(
    "affine",
    [
        np.array([[0, -2.0, 0, 10], [0, 0, 3.0, -5], [1.5, 0, 0, 7], [0, 0, 0, 1]]),  # odd axes
        np.diag([2.0, 2.0, -3.0, 1.0]),  # RAS columns, z flipped
    ],
)
def test_one_slice_lands_in_its_place(tmp_path, affine):
    data = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)  # every voxel unique
    full = nib.load(save_array(tmp_path / "full.nii.gz", data, affine))
    volume = load_volume(tmp_path / "full.nii.gz")
    index = 1
    out = write_nifti(
        tmp_path / "slice.nii.gz", volume.image[index : index + 1], volume.grid.axial_slab(index)
    )
    slab = nib.load(out)
    assert 1 in slab.shape and np.prod(slab.shape) == volume.image[index].size
    slab_data = np.asarray(slab.dataobj)
    full_data = np.asarray(full.dataobj)
    for ijk in np.ndindex(slab.shape):
        value = slab_data[ijk]
        where = np.argwhere(full_data == value)[0]  # the same voxel in the full file
        world = slab.affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(world, full.affine @ np.array([*where, 1.0]))
    with pytest.raises(InvalidInputError, match="outside"):
        volume.grid.axial_slab(volume.num_slices)


def test_spacing_follows_axes(tmp_path):
    data = np.zeros((10, 8, 6), np.int16)
    data[0, 0, 0] = 1
    path = save_array(tmp_path / "aniso.nii", data, np.diag([0.8, 0.7, 5.0, 1.0]))
    volume = load_volume(path)
    assert volume.image.shape == (6, 8, 10)
    assert volume.spacing == pytest.approx((5.0, 0.7, 0.8))


def test_pair_round_trip(tmp_path):
    volume = blob_volume()
    image_path, labels_path = save_pair(tmp_path, volume)
    loaded = load_volume(image_path, labels_path)
    np.testing.assert_array_equal(loaded.labels, volume.labels)
    np.testing.assert_allclose(loaded.image, np.round(volume.image), atol=0.5)
    assert loaded.spacing == volume.spacing


def test_in_memory_volume_has_an_lps_grid():
    volume = Volume(np.zeros((3, 20, 30)), (4.0, 1.0, 2.0))
    assert volume.grid.shape == (30, 20, 3)
    assert volume.grid.canonical_spacing() == (4.0, 1.0, 2.0)
    assert isinstance(volume.grid, SourceGrid)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (b"hello, not an image", "notes.nii.gz", "cannot be read as NIfTI"),
        (b"hello", "notes.txt", "not a NIfTI file name"),
    ],
)
def test_not_nifti(tmp_path, content, name, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=match) as info:
        read_nifti(path)
    assert name in str(info.value)


def test_truncated_file(tmp_path):
    path = save_array(tmp_path / "ok.nii.gz", np.zeros((20, 20, 20), np.int16))
    raw = gzip.decompress(path.read_bytes())
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InvalidInputError, match=r"broken\.nii\.gz"):
        load_volume(broken)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        load_volume(tmp_path / "nothing.nii.gz")


def test_2d_and_4d_are_refused(tmp_path):
    flat = save_array(tmp_path / "flat.nii.gz", np.zeros((20, 20), np.int16))
    with pytest.raises(InvalidInputError, match="expected a 3D volume, got 2D"):
        load_volume(flat)
    series = save_array(tmp_path / "series.nii.gz", np.zeros((8, 8, 8, 3), np.int16))
    with pytest.raises(InvalidInputError, match="got 4D"):
        load_volume(series)
    single = save_array(tmp_path / "single.nii.gz", np.zeros((8, 8, 8, 1), np.int16))
    assert load_volume(single).image.shape == (8, 8, 8)


def test_shape_and_affine_mismatch(tmp_path):
    image = save_array(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.int16))
    other_shape = save_array(tmp_path / "l1.nii.gz", np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(InvalidInputError, match="shape"):
        load_volume(image, other_shape)
    other_affine = save_array(
        tmp_path / "l2.nii.gz", np.zeros((8, 8, 4), np.uint8), np.diag([2.0, 3, 3, 1])
    )
    with pytest.raises(InvalidInputError, match="affine"):
        load_volume(image, other_affine)


def test_nan_voxels(tmp_path):
    data = np.zeros((8, 8, 4), np.float32)
    data[1, 2, 3] = np.nan
    data[2, 2, 3] = np.inf
    with pytest.raises(InvalidInputError, match="2 voxels are NaN or infinite"):
        load_volume(save_array(tmp_path / "nan.nii.gz", data))


def test_label_values(tmp_path):
    image = save_array(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.int16))
    fractional = np.zeros((8, 8, 4), np.float32)
    fractional[0, 0, 0] = 0.5
    with pytest.raises(InvalidInputError, match="must be integers"):
        load_volume(image, save_array(tmp_path / "frac.nii.gz", fractional))
    unknown = np.zeros((8, 8, 4), np.uint8)
    unknown[0, 0, 0] = 7
    with pytest.raises(InvalidInputError, match=r"unknown label values \[7\]"):
        load_volume(image, save_array(tmp_path / "seven.nii.gz", unknown))
    whole = np.zeros((8, 8, 4), np.float32)
    whole[0, 0, 0] = 3.0
    assert load_volume(image, save_array(tmp_path / "float.nii.gz", whole)).labels.max() == 3


def test_volume_without_labelled_voxel(tmp_path):
    image = save_array(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.int16))
    empty = save_array(tmp_path / "empty.nii.gz", np.zeros((8, 8, 4), np.uint8))
    volume = load_volume(image, empty)
    with pytest.raises(InvalidInputError, match="no labelled voxel"):
        volume.require_labels()
    with pytest.raises(InvalidInputError, match="no label volume"):
        load_volume(image).require_labels()


def test_write_refuses_wrong_shape(tmp_path):
    volume = blob_volume()
    with pytest.raises(InvalidInputError, match="does not fit"):
        write_nifti(tmp_path / "x.nii.gz", volume.image[:2], volume.grid)
