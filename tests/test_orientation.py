"""Slice layouts: each model orientation, tested with files stored in none of these orders."""

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel import orientations

from napari_advseg.data.nifti import load_volume
from napari_advseg.data.orientation import SliceLayout, slice_layout
from napari_advseg.errors import InvalidInputError
from napari_advseg.inference import labels_to_model_grid, to_model_grid
from napari_advseg.model_spec import ModelSpec

# (x, y, z) extents of a test volume in RAS world order; all different, so any axis mix-up shows
WORLD_SHAPE = (9, 7, 5)


def world_volume() -> np.ndarray:
    """A volume indexed in RAS+ order (i toward R, j toward A, k toward S), unique values."""
    return np.arange(np.prod(WORLD_SHAPE), dtype=np.int16).reshape(WORLD_SHAPE)


def save_in_order(tmp_path, codes: str, spacing=(1.0, 1.0, 1.0)) -> tuple:
    """Store the RAS volume in the voxel order ``codes`` (e.g. 'PIL'); return the path."""
    data = world_volume()
    target = orientations.axcodes2ornt(tuple(codes))
    transform = orientations.ornt_transform(orientations.axcodes2ornt(("R", "A", "S")), target)
    stored = orientations.apply_orientation(data, transform)
    # the affine that says where each stored voxel lies: undo the reordering
    ras_affine = np.diag([*spacing, 1.0])
    affine = ras_affine @ orientations.inv_ornt_aff(transform, data.shape)
    path = tmp_path / f"{codes}.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), path)
    return path, stored


def test_ras_is_what_nibabel_gives(tmp_path):
    """The ras model slice k equals as_closest_canonical(img).get_fdata()[:, :, k]."""
    path, _ = save_in_order(tmp_path, "PIL")
    image = nib.load(path)
    ras = np.asarray(nib.as_closest_canonical(image).dataobj)
    np.testing.assert_array_equal(ras, world_volume())
    volume = load_volume(path)
    layout = slice_layout("ras", volume.grid.affine)
    for k in range(volume.num_slices):  # canonical z runs inferior to superior, like RAS k
        model_slice = layout.apply(torch.from_numpy(volume.image[k])).numpy()
        np.testing.assert_array_equal(model_slice, ras[:, :, k])


@pytest.mark.parametrize("codes", ["LPS", "RAS", "LAS"])
def test_file_is_the_stored_order_as_simpleitk_reads_it(tmp_path, codes):
    """The file model slice k is stored[:, :, k].T (SimpleITK's array[k]: rows j, columns i)."""
    path, stored = save_in_order(tmp_path, codes)
    volume = load_volume(path)
    layout = slice_layout("file", volume.grid.affine)
    superior_first = codes[2] == "I"
    for k in range(volume.num_slices):
        file_k = volume.num_slices - 1 - k if superior_first else k
        model_slice = layout.apply(torch.from_numpy(volume.image[k])).numpy()
        np.testing.assert_array_equal(model_slice, stored[:, :, file_k].T)


def test_file_order_needs_axial_slices(tmp_path):
    path, _ = save_in_order(tmp_path, "PIL")
    volume = load_volume(path)
    with pytest.raises(InvalidInputError, match="not in axial slices"):
        slice_layout("file", volume.grid.affine)


def test_radiological_is_the_canonical_slice(tmp_path):
    path, _ = save_in_order(tmp_path, "ASR")
    volume = load_volume(path)
    # canonical rows run anterior to posterior and columns right to left
    ras = world_volume()
    np.testing.assert_array_equal(volume.image[2], ras[::-1, ::-1, 2].T)
    assert slice_layout("radiological", volume.grid.affine).is_identity


@pytest.mark.parametrize(
    "layout",
    [SliceLayout(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)],
)
def test_every_layout_inverts_and_moves_vectors_with_the_pixels(layout):
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(layout.invert(layout.apply(maps)), maps)
    # a field that moves every pixel one column right in the model's layout...
    field = torch.zeros(1, 2, *layout.shape((4, 5)))
    field[:, 0] = 1.0
    canonical = layout.invert_displacement(field)
    # ...moves it along the canonical axis the model's columns run along, in their direction
    probe = layout.invert(torch.arange(20.0).reshape(1, 1, *layout.shape((4, 5)))[..., :1, :2])
    step = (probe.flatten()[1] - probe.flatten()[0]).item()
    assert abs(step) == 1.0
    cols = canonical[0, 0].unique().tolist()
    rows = canonical[0, 1].unique().tolist()
    if layout.transpose:
        assert cols == [0.0] and rows == [-1.0 if layout.flip_cols else 1.0]
    else:
        assert rows == [0.0] and cols == [-1.0 if layout.flip_cols else 1.0]


@pytest.mark.parametrize("orientation", ["radiological", "ras", "file"])
def test_model_grid_slices_round_trip(tmp_path, orientation):
    path, _ = save_in_order(tmp_path, "PIL", spacing=(1.0, 2.0, 3.0))
    volume = load_volume(path)
    volume.labels = (volume.image > volume.image.mean()).astype(np.uint8)
    spec = ModelSpec(pixel_spacing=(1.0, 1.0), min_size=4, orientation=orientation)
    if orientation == "file":
        with pytest.raises(InvalidInputError, match=volume.name):
            to_model_grid(volume, spec)
        return
    grid = to_model_grid(volume, spec, pad=False)
    # canonical slices are 7 rows at 2 mm by 9 columns at 1 mm: 14 x 9 at 1 mm, transposed for ras
    assert grid.model_shape == ((14, 9) if orientation == "radiological" else (9, 14))
    back = grid.to_source(grid.images)
    assert back.shape[-2:] == volume.image.shape[1:]
    labels = labels_to_model_grid(volume, spec)
    assert tuple(labels.shape[-2:]) == grid.model_shape
