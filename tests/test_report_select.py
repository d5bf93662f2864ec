"""Tests for volprep.report_select: which planes of a record the montage shows.

Small literal volumes; the expected plane indices are worked out by hand from where the
labels were put, not computed by the code under test.
"""

from __future__ import annotations

import numpy as np

from volprep.report_select import MANY_LABELS, take_slices

IMAGE = np.zeros((12, 14, 16, 1), np.float32)


def test_few_labels_show_the_plane_through_the_smallest_structure() -> None:
    mask = np.zeros((12, 14, 16), np.uint8)
    mask[1:11, 1:13, 1:15] = 1  # an organ
    mask[2:5, 9:12, 11:14] = 2  # a lesion in a corner of it: planes i 3, j 10, k 12
    assert take_slices(IMAGE, mask).index == {"sagittal": 3, "coronal": 10, "axial": 12}


def atlas(n_parcels: int) -> np.ndarray:
    """A brain-like block (i 2..9, j 3..10, k 4..13) cut into parcels valued 2..n_parcels+1,
    and a one-voxel label 1 at the grid's corner (0, 0, 0): the smallest structure."""
    mask = np.zeros((12, 14, 16), np.int16)
    mask[2:10, 3:11, 4:14] = np.arange(8 * 8 * 10).reshape(8, 8, 10) % n_parcels + 2
    mask[0, 0, 0] = 1
    return mask


def test_many_labels_show_the_planes_through_the_foreground_centre() -> None:
    mask = atlas(MANY_LABELS)  # MANY_LABELS + 1 values
    # Centre of mass of the 641 foreground voxels: i (640 * 5.5 + 0) / 641 = 5.49,
    # j (640 * 6.5) / 641 = 6.49, k (640 * 8.5) / 641 = 8.49: planes 5, 6, 8, inside the
    # block, not k = 0 at the edge of the volume.
    assert take_slices(IMAGE, mask).index == {"sagittal": 5, "coronal": 6, "axial": 8}


def test_up_to_many_labels_keep_the_smallest_structure_rule() -> None:
    mask = atlas(MANY_LABELS - 1)  # MANY_LABELS values: still "few"
    assert len(np.unique(mask[mask > 0])) == MANY_LABELS
    assert take_slices(IMAGE, mask).index == {"sagittal": 0, "coronal": 0, "axial": 0}


def test_without_a_mask_the_middle_of_the_grid() -> None:
    assert take_slices(IMAGE, None).index == {"axial": 8, "coronal": 7, "sagittal": 6}
