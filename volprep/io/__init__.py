"""volprep's read stage: volume files in, checked arrays plus geometry out.

Formats: NIfTI-1/2 and Analyze (``.nii``, ``.nii.gz``, ``.hdr``/``.img``; either byte
order), MetaImage (``.mha``, ``.mhd``), raw volumes with a JSON sidecar. The format is
sniffed from the content; gzip is inflated with ``isal``, bounded by what the header
claims. Headers are checked before any voxel is read (``HeaderError``), voxels after
(``DataError``), labels against their image (``LabelError``; read them with
``read_label_volume``, which refuses NaN/Inf whatever ``read.non_finite`` says). A file
name found inside an input stays beside it (``base.companion_path``), and only regular files
are opened (a FIFO or device is refused before it is opened). Arrays keep the file's voxel
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
    read_label_volume,
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
    "read_label_volume",
    "read_volume",
]
