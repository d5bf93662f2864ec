"""DICOM-SEG label volumes, read through highdicom (the ``volprep[dicom]`` extra).

A DICOM Segmentation object (SOP class 1.2.840.10008.5.1.4.1.1.66.4) is one multi-frame
file of binary (or fractional) segment frames, each frame placed in space. This module
turns it into a label volume: :func:`layout` reads the geometry (highdicom's
``get_volume_geometry``, frames not loaded: ``lazy_frame_retrieval``) and the segment
count before any frame, so the memory check of the read stage happens first; the voxels
are ``get_volume(combine_segments=True)``: each voxel holds its segment number (0 where no
segment is set; overlapping segments are refused by highdicom). The volume spans the
frames the SEG holds, which is often fewer slices than its image (empty frames are left
out), so the Layout is marked ``subgrid``: :func:`volprep.io.check_label` places it on its
image's grid when it lies on that grid at a whole-voxel offset. Axes are ``(column, row,
slice)`` and the affine RAS+, like :mod:`volprep.io.dicom`. Without highdicom the label is
refused with the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from volprep.errors import DataError, HeaderError
from volprep.io.base import Layout
from volprep.io.dicom_series import quiet

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
EXTRA = "pip install 'volprep[dicom]'"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def layout(path: Path) -> Layout:
    """The Layout of a DICOM-SEG file (its frames unread).

    Raises:
        HeaderError: highdicom missing, or a SEG whose frames do not form one volume.
    """
    try:
        import highdicom
    except ImportError:
        raise HeaderError(path, f"DICOM-SEG label: reading it needs highdicom, which is not "
                                f"installed: {EXTRA}") from None
    try:
        with quiet():
            seg = highdicom.seg.segread(path, lazy_frame_retrieval=True)
            geometry = seg.get_volume_geometry(allow_missing_positions=True)
    except Exception as err:  # noqa: BLE001 - highdicom raises anything; messages may quote data
        raise HeaderError(path, f"DICOM-SEG label is unreadable ({type(err).__name__})") from None
    if geometry is None:
        raise HeaderError(path, "DICOM-SEG label: its frames do not form one regularly spaced "
                                "volume")
    segments = len(seg.SegmentSequence)
    dtype = np.dtype(np.uint8 if segments < 256 else np.uint16)
    slices, rows, columns = (int(n) for n in geometry.spatial_shape)
    lps = np.asarray(geometry.affine, dtype=np.float64)[:, [2, 1, 0, 3]]  # (k, r, c) -> (c, r, k)

    def read() -> np.ndarray:
        try:
            with quiet():
                volume = seg.get_volume(combine_segments=True, allow_missing_positions=True,
                                        dtype=dtype)
        except Exception as err:  # noqa: BLE001 - as above
            raise DataError(path, f"DICOM-SEG label: its segments could not be combined into "
                                  f"one label volume ({type(err).__name__})") from None
        array: Any = np.asarray(volume.array)
        return np.ascontiguousarray(array).reshape(-1)  # (k, r, c) C order = (c, r, k) F order

    return Layout(
        path=path, data_path=path, offset=0, dims=(columns, rows, slices), channels=0,
        stored=dtype, order="F", compression=None, slope=None, inter=0.0,
        affines=(("DICOM-SEG plane positions (LPS -> RAS)", _LPS_TO_RAS @ lps),),
        notes=(f"DICOM-SEG label of {segments} segment(s)",), reader=read, subgrid=True,
    )
