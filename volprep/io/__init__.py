"""volprep's read stage: volume files in, checked arrays plus geometry out.

Formats: NIfTI-1/2 and Analyze (``.nii``, ``.nii.gz``, ``.hdr``/``.img``; either byte
order), MetaImage (``.mha``, ``.mhd``), raw volumes with a JSON sidecar. The format is
sniffed from the content; gzip is inflated with ``isal``, bounded by what the header
claims. Headers are checked before any voxel is read (``HeaderError``), voxels after
(``DataError``), labels against their image (``LabelError``). Arrays keep the file's voxel
order ``(i, j, k[, c])`` and memory order (Fortran for NIfTI/MetaImage); affines are
voxel -> RAS+ mm.
"""

from volprep.io.base import Header, Volume
from volprep.io.checks import check_label
from volprep.io.read import (
    WORKING_FLOAT32_COPIES,
    estimate_working_bytes,
    read_case_images,
    read_header,
    read_volume,
)

__all__ = [
    "WORKING_FLOAT32_COPIES",
    "Header",
    "Volume",
    "check_label",
    "estimate_working_bytes",
    "read_case_images",
    "read_header",
    "read_volume",
]
