"""volprep's read stage: volume files in, checked arrays plus geometry out.

Formats: the units listed in :data:`volprep.io.formats.FORMATS` (NIfTI-1/2 and Analyze in
either byte order, MetaImage, NRRD, DICOM series, raw volumes with a JSON sidecar), one
module each behind the :class:`~volprep.io.protocol.Format` protocol, which also tells
discovery which file names are volumes (and, for a format that reads folders, such as a
DICOM series, which folders are cases). The format is sniffed from the content (by name only for files without a
signature); gzip is inflated with ``isal``, bounded by what the header claims. Headers are checked before any voxel is read (``HeaderError``), voxels after
(``DataError``), labels against their image (``LabelError``; read them with
``read_label_volume``, which refuses NaN/Inf whatever ``read.non_finite`` says). A file
name found inside an input stays beside it (``paths.companion_path``), and only regular files
are opened (a FIFO or device is refused before it is opened). Arrays keep the file's voxel
order ``(i, j, k[, c])`` and memory order (Fortran for NIfTI/MetaImage); affines are
voxel -> RAS+ mm.
"""

from volprep.io.base import Header, Volume
from volprep.io.checks import check_label
from volprep.io.read import (
    WORKING_FLOAT32_COPIES,
    estimate_working_bytes,
    input_files,
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
    "input_files",
    "read_case_images",
    "read_header",
    "read_label_volume",
    "read_volume",
]
