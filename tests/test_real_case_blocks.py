"""The real case's held-out block of slices and the slices models may train on."""

import numpy as np
import pytest

from napari_advseg._cli_common import eval_volumes
from napari_advseg.cli import build_parser
from napari_advseg.data.samples import REAL_GUARD, REAL_TEST_BLOCK, load_real_case, real_case_part
from napari_advseg.errors import InvalidInputError


def test_the_held_out_block_shows_every_organ_and_no_training_slice_touches_it():
    whole = load_real_case()
    (test,) = real_case_part("test")
    train = real_case_part("train")
    start, stop = REAL_TEST_BLOCK
    np.testing.assert_array_equal(test.image, whole.image[start:stop])
    for index in range(test.num_slices):
        assert set(np.unique(test.labels[index])) >= {1, 2, 3, 4}
    used = [*range(0, start - REAL_GUARD), *range(stop + REAL_GUARD, whole.num_slices)]
    np.testing.assert_array_equal(np.concatenate([b.image for b in train]), whole.image[used])
    gap = set(range(whole.num_slices)) - set(used) - set(range(start, stop))
    assert gap == {start - 2, start - 1, stop, stop + 1}
    with pytest.raises(InvalidInputError):
        real_case_part("val")


def test_a_block_keeps_its_place_in_space():
    whole = load_real_case()
    (test,) = real_case_part("test")
    start = REAL_TEST_BLOCK[0]
    # the block's file grid maps its canonical slice k where the case maps slice start + k
    for k in (0, test.num_slices - 1):
        np.testing.assert_allclose(
            test.grid.axial_slab(k).affine, whole.grid.axial_slab(start + k).affine
        )
    assert test.grid.canonical_shape() == test.image.shape


def test_the_command_line_takes_the_parts():
    args = build_parser().parse_args(["eval-seg", "--sample", "real-test"])
    volumes = eval_volumes(args)
    assert volumes.names == [f"abdomen_ct_ts[{REAL_TEST_BLOCK[0]}:{REAL_TEST_BLOCK[1]}]"]
    args = build_parser().parse_args(["eval-seg", "--sample", "real-train"])
    assert len(eval_volumes(args)) == 2
