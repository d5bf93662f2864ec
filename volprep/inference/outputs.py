"""``invert``: a prediction on the record grid mapped back to the scan's own grid.

One affine does it: every scan voxel's index goes to world coordinates (the scan's
affine) and from there to the record grid's continuous voxel index (the inverse of the
record's affine), ``inv(record.affine) @ scan.affine`` (:meth:`ScanInfo.scan_to_record`);
the prediction is sampled there with ``scipy.ndimage.map_coordinates``: order 0 (nearest
record voxel) for labels ``[D, H, W]``, order 1 (linear) for per-class probabilities
``[D, H, W, K]``. Reorientation, reduction and window are all undone by that one map; for
``reduce = "none"`` it sends each scan voxel exactly onto a record voxel, so labels come
back unchanged.

Inside and outside the window. A scan voxel is *inside* when its nearest record voxel
exists, i.e. its record position rounds into ``[0, D) x [0, H) x [0, W)`` (the record
voxels' cells, half a voxel beyond the outer voxel centres). Inside, labels take the
nearest record voxel's label, and probabilities are interpolated linearly, held at the
outer voxel's value in that outer half voxel. Outside (what the window cropped away),
labels are background 0, and probabilities are background: class 0 gets 1, every other
class 0. (``map_coordinates``' own ``mode="constant"`` would instead blank every
position beyond the outer voxel *centres*, including positions a rounding error
outside them and half of each edge voxel's cell, losing the scan's edge voxels; so the
sampling clamps (``mode="nearest"``) and the rule above sets the outside.)

:func:`save_nifti` writes a result as NIfTI with the scan's affine (nibabel).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from volprep.errors import UsageError
from volprep.inference.info import ScanInfo, as_info
from volprep.inference.inputs import output_stem

# Scan voxels mapped per step: bounds the coordinate arrays (3 float64 values a voxel,
# twice) to ~50 MB, whatever the scan's size.
SLAB_VOXELS = 1 << 20


class PredictionError(UsageError, ValueError):
    """A prediction that does not fit its scan info (shape, dtype, class count)."""


def _label_dtype(lo: int, hi: int) -> np.dtype:
    """The smallest NIfTI-friendly integer dtype holding ``lo..hi``."""
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    raise PredictionError(f"label values {lo}..{hi} do not fit int32")


def _checked(prediction: Any, info: ScanInfo) -> tuple[np.ndarray, str]:
    """The prediction as an array, and its kind: ``"labels"`` or ``"probabilities"``."""
    pred = np.asarray(prediction)
    shape = tuple(info.record.shape)
    if pred.ndim not in (3, 4) or tuple(pred.shape[:3]) != shape:
        raise PredictionError(f"prediction of shape {list(pred.shape)}: expected labels {list(shape)} or "
                              f"probabilities {[*shape, 'K']} on the record grid")
    if pred.ndim == 4:
        if pred.dtype.kind != "f":
            raise PredictionError(f"probabilities [D, H, W, K] must be floats, got {pred.dtype}")
        if pred.shape[3] < 2:
            raise PredictionError("probabilities need K >= 2 classes, class 0 the background "
                                  "(for one foreground probability p, give the stack [1 - p, p])")
        return pred, "probabilities"
    if pred.dtype.kind == "b":
        return pred.astype(np.uint8), "labels"
    if pred.dtype.kind == "f":
        if not np.isfinite(pred).all() or (np.rint(pred) != pred).any():
            raise PredictionError("labels [D, H, W] must be whole numbers (probabilities are [D, H, W, K])")
        lo, hi = (int(pred.min()), int(pred.max())) if pred.size else (0, 0)
        return pred.astype(_label_dtype(lo, hi)), "labels"
    if pred.dtype.kind not in "iu":
        raise PredictionError(f"labels [D, H, W] must be integers, got {pred.dtype}")
    return pred, "labels"


def _sample(channels: list[np.ndarray], matrix: np.ndarray, scan_shape: tuple[int, int, int], order: int,
            fill: list[float], dtype: np.dtype) -> np.ndarray:
    """Each record-grid channel sampled at every scan voxel, ``fill`` outside (module docstring)."""
    n0, n1, n2 = scan_shape
    size = np.asarray(channels[0].shape, dtype=np.float64).reshape(3, 1, 1, 1)
    out = np.empty((n0, n1, n2, len(channels)), dtype=dtype)
    j = np.arange(n1, dtype=np.float64).reshape(1, n1, 1)
    k = np.arange(n2, dtype=np.float64).reshape(1, 1, n2)
    step = max(1, SLAB_VOXELS // max(1, n1 * n2))
    for i0 in range(0, n0, step):
        i = np.arange(i0, min(i0 + step, n0), dtype=np.float64).reshape(-1, 1, 1)
        coords = np.stack([matrix[a, 0] * i + matrix[a, 1] * j + matrix[a, 2] * k + matrix[a, 3]
                           for a in range(3)])
        nearest = np.floor(coords + 0.5)
        outside = ((nearest < 0) | (nearest >= size)).any(axis=0)
        for c, values in enumerate(channels):
            slab = ndimage.map_coordinates(values, coords, order=order, mode="nearest", prefilter=False,
                                           output=dtype)
            slab[outside] = fill[c]
            out[i0:i0 + slab.shape[0], ..., c] = slab
    return out


def invert(prediction: Any, info: ScanInfo | Mapping[str, Any] | str | Path, *,
           save: str | Path | bool | None = None) -> np.ndarray:
    """Maps a prediction on the record grid back to the scan's own voxel grid.

    Args:
        prediction: labels ``[D, H, W]`` (integers, booleans, or floats holding whole
            numbers) or per-class probabilities ``[D, H, W, K]`` (floats, K >= 2, class 0
            the background), on the grid of :func:`volprep.prepare`'s input.
        info: :func:`volprep.prepare`'s info (a :class:`ScanInfo`, its dict, or the path
            of its JSON file).
        save: also write the result as NIfTI with the scan's affine: a ``.nii``/``.nii.gz``
            path, or True for ``<scan name>_pred.nii.gz`` beside the scan.

    Returns:
        On the scan's grid (``info.scan``: the file's shape, voxel order and affine):
        labels ``[i, j, k]`` in the prediction's integer dtype (nearest record voxel; 0
        outside the window), or float32 probabilities ``[i, j, k, K]`` (linear; outside
        the window class 0 is 1 and the others 0). See the module docstring for where
        the window ends.

    Raises:
        PredictionError: a prediction not on the record grid, or of a kind not above.
        UsageError: ``info`` is not a scan info; ``save`` not a NIfTI name.
    """
    info = as_info(info)
    pred, kind = _checked(prediction, info)
    matrix = info.scan_to_record()
    if kind == "labels":
        out = _sample([pred], matrix, info.scan.shape, 0, [0], pred.dtype)[..., 0]
    else:
        count = pred.shape[3]
        channels = [np.ascontiguousarray(pred[..., c], dtype=np.float32) for c in range(count)]
        out = _sample(channels, matrix, info.scan.shape, 1, [1.0] + [0.0] * (count - 1), np.dtype(np.float32))
    if save is not None and save is not False:
        save_nifti(out, info, default_save_path(info) if save is True else save)
    return out


def default_save_path(info: ScanInfo) -> Path:
    """``<scan name>_pred.nii.gz`` in the scan's folder."""
    first = Path(info.scan_paths[0])
    return first.parent / f"{output_stem(first)}_pred.nii.gz"


def save_nifti(array: np.ndarray, info: ScanInfo | Mapping[str, Any] | str | Path, path: str | Path) -> Path:
    """Writes an :func:`invert` result as NIfTI-1 with the scan's affine (sform and qform,
    code 1; NIfTI-1 stores the sform as float32, which holds a NIfTI scan's affine exactly).

    Labels are stored in the smallest of uint8/int16/int32 that holds them, probabilities
    as float32, so nibabel reads back exactly the array given.

    Raises:
        UsageError: ``path`` does not end in ``.nii`` or ``.nii.gz``; an array not on the
            scan's grid.
    """
    info = as_info(info)
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise UsageError(f"{path}: save a prediction as .nii or .nii.gz")
    data = np.asarray(array)
    if tuple(data.shape[:3]) != tuple(info.scan.shape):
        raise UsageError(f"array of shape {list(data.shape)} is not on the scan's grid {list(info.scan.shape)}")
    if data.dtype.kind in "iub":
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        data = data.astype(_label_dtype(lo, hi), copy=False)
    elif data.dtype != np.float32:
        data = data.astype(np.float32)
    image = nib.Nifti1Image(data, info.scan.affine)
    image.header.set_sform(info.scan.affine, code=1)
    image.header.set_qform(info.scan.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def invert_file(prediction: str | Path, info: str | Path, save: str | Path) -> tuple[Path, np.ndarray]:
    """``volprep invert``: a prediction saved with ``numpy.save`` (``.npy``), inverted and
    written as NIfTI (:func:`invert` with ``save``).

    Raises:
        UsageError: a file that cannot be read, or anything :func:`invert` refuses.
    """
    path = Path(prediction)
    try:
        pred = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such prediction file") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: not a .npy array ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not isinstance(pred, np.ndarray):
        raise UsageError(f"{path}: holds several arrays (an .npz); save the one prediction with numpy.save")
    out = invert(pred, as_info(info), save=save)
    return Path(save), out
