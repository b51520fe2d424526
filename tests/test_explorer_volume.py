"""The explorer's attacked volume: slices written in, and exports that check before writing."""

import numpy as np
import pytest

from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.explorer import SliceAttack, SliceMetrics
from napari_advseg.explorer_volume import (
    EXPORTS,
    AttackedVolume,
    plan_export,
    slice_planes,
    write_export,
)


def small_volume() -> Volume:
    image = np.linspace(-500, 500, 4 * 16 * 20, dtype=np.float32).reshape(4, 16, 20)
    return Volume(image, (3.0, 2.0, 2.0), name="tiny")


def attack(index: int) -> SliceAttack:
    shape = (16, 20)
    s_dv = np.zeros(shape, np.uint8)
    s_dv[4:8, 4:8] = 3
    metrics = SliceMetrics("S0", {}, {}, {}, 0.1, 5.0)
    displacement = np.stack([np.full(shape, 3.0), np.full(shape, 4.0)]).astype(np.float32)
    return SliceAttack(
        index,
        np.full(shape, 7.0, np.float32),
        displacement,
        np.full(shape, 2.0, np.float32),
        np.zeros(shape, np.uint8),
        s_dv,
        metrics,
    )


def test_slices_are_written_in_place_and_the_rest_keeps_i0():
    volume = small_volume()
    attacked = AttackedVolume(volume)
    planes = slice_planes(attack(2), volume.spacing)
    assert planes.vectors.shape[1:] == (2, 3) and set(planes.vectors[:, 0, 0]) == {2.0}
    attacked.write(planes)
    np.testing.assert_array_equal(attacked.arrays["|D|"][2], 5.0)
    np.testing.assert_array_equal(attacked.arrays["changed"][2], planes.planes["S_DV"] > 0)
    np.testing.assert_array_equal(attacked.arrays["I_DV"][1], volume.image[1])
    assert attacked.displacement_mm[1, 2, 0, 0] == 4.0
    assert attacked.arrays["V"][1].max() == 0.0


def test_an_export_never_overwrites_and_checks_its_folder(tmp_path):
    attacked = AttackedVolume(small_volume())
    attacked.write(slice_planes(attack(1), (3.0, 2.0, 2.0)))
    plan = plan_export(attacked, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # planning writes nothing
    paths = list(write_export(attacked, plan))
    assert [p.name for p in paths] == [f"tiny_{key}.nii.gz" for key in EXPORTS]
    with pytest.raises(InvalidInputError, match=r"already holds tiny_IDV\.nii\.gz, tiny_V_HU"):
        plan_export(attacked, tmp_path / "out")
    slab = plan_export(attacked, tmp_path / "out", index=1)
    assert slab.paths[0].name == "tiny_slice1_IDV.nii.gz" and slab.chosen == slice(1, 2)
    with pytest.raises(InvalidInputError, match="outside"):
        plan_export(attacked, tmp_path / "out", index=4)
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="is a file"):
        plan_export(attacked, tmp_path / "file")
    with pytest.raises(InvalidInputError, match="under it"):
        plan_export(attacked, tmp_path / "file" / "below")


@pytest.mark.parametrize("whole", [True, False])
def test_an_unattacked_export_is_the_scan_voxel_for_voxel(tmp_path, whole):
    """Slices not attacked hold I0: written back exactly, as int16 or (fractional HU) float32."""
    from napari_advseg.data.nifti import load_volume

    volume = small_volume()
    if whole:
        volume.image = np.round(volume.image * 5.0)  # up to +-2500 HU: outside any window
    attacked = AttackedVolume(volume)
    assert attacked.hu_dtype == ("int16" if whole else "float32")
    plan = plan_export(attacked, tmp_path)
    idv = next(path for path in write_export(attacked, plan) if path.name.endswith("_IDV.nii.gz"))
    np.testing.assert_array_equal(load_volume(idv).image, volume.image)
