"""Inference: a job's preprocessing applied to a new scan, and predictions mapped back.

``prepare(image, like)`` makes the model input for a new scan exactly as the job whose
shard folder is ``like`` made its records (same readers and refusals, orientation,
reduction, window, normalisation and stored dtype), and returns with it a small
JSON-able :class:`ScanInfo` (the scan's grid, the record grid, the reduction).
``invert(prediction, info)`` maps labels or per-class probabilities on the record grid
back to the scan's own grid and affine, and can save them as NIfTI. Modules:
:mod:`~volprep.inference.inputs` (prepare), :mod:`~volprep.inference.outputs` (invert: the sampling rules,
inside and outside the window), :mod:`~volprep.inference.info` (the info's JSON format).
"""

from volprep.inference.info import INFO_FORMAT, ScanInfo, read_info, write_info
from volprep.inference.inputs import output_stem, prepare, prepare_to
from volprep.inference.outputs import (
    PredictionError,
    default_save_path,
    invert,
    invert_file,
    save_nifti,
)

__all__ = [
    "INFO_FORMAT",
    "PredictionError",
    "ScanInfo",
    "default_save_path",
    "invert",
    "invert_file",
    "output_stem",
    "prepare",
    "prepare_to",
    "read_info",
    "save_nifti",
    "write_info",
]
