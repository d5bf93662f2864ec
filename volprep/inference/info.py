"""What ``prepare`` records about a scan so that ``invert`` can map predictions back.

:class:`ScanInfo` is small and JSON-able (``to_dict`` / ``from_dict``, ``write_info`` /
``read_info``). Its JSON form, format ``volprep-scan-info/1``::

    {"format": "volprep-scan-info/1",
     "like":   "shards/brain",                     # the shard folder whose job was applied
     "scan":   {"paths": ["/data/new/case.nii.gz"],
                "shape": [i, j, k],                 # the scan's voxel grid as read
                "affine": [[4 x 4]],                # its voxel -> world matrix (RAS+ mm)
                "orientation": "LPS"},              # the file's axis codes
     "record": {"shape": [D, H, W],                 # the model input's grid (the window)
                "affine": [[4 x 4]],                # its voxel -> world matrix (the record's "affine")
                "orientation": "RAS",               # the job's [preprocess] orientation
                "spacing": [sx, sy, sz],            # mm
                "channels": C},
     "reduction": {"reduce": "downsample", "factor": [2, 2, 2]}}   # the job's reduction and its settings

Both grids are in the same world (RAS+ mm), so one affine maps every scan voxel to the
record grid: ``inv(record.affine) @ scan.affine``. Nothing else is needed to undo the
preprocessing: reorientation, reduction and window are all in the record's affine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from volprep.errors import UsageError
from volprep.geometry import Grid

INFO_FORMAT = "volprep-scan-info/1"


@dataclasses.dataclass(frozen=True, eq=False)
class ScanInfo:
    """How a scan became a model input, and how to map a prediction back to the scan.

    Attributes:
        like: the shard folder whose job's preprocessing was applied.
        scan_paths: the scan's image file(s), one a channel (or one 4D file).
        scan: the scan's grid as read (shape and affine of the file).
        scan_orientation: the file's axis codes, e.g. ``"LPS"``.
        record: the model input's grid (the job's window; its affine is what a record's
            ``affine`` feature would hold).
        orientation: the job's ``[preprocess] orientation`` (the record's axis codes).
        channels: the model input's channel count.
        reduction: the job's reduction, ``{"reduce": name, ...its settings}``.
    """

    like: str
    scan_paths: tuple[str, ...]
    scan: Grid
    scan_orientation: str
    record: Grid
    orientation: str
    channels: int
    reduction: Mapping[str, Any]

    def scan_to_record(self) -> np.ndarray:
        """The 4x4 matrix taking scan voxel indices to (continuous) record voxel indices."""
        return np.linalg.solve(self.record.affine, self.scan.affine)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (see the module docstring); floats survive JSON exactly."""
        return {
            "format": INFO_FORMAT,
            "like": self.like,
            "scan": {"paths": list(self.scan_paths), "shape": list(self.scan.shape),
                     "affine": self.scan.affine.tolist(), "orientation": self.scan_orientation},
            "record": {"shape": list(self.record.shape), "affine": self.record.affine.tolist(),
                       "orientation": self.orientation, "spacing": list(self.record.spacing()),
                       "channels": self.channels},
            "reduction": dict(self.reduction),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "info") -> ScanInfo:
        """Inverse of :meth:`to_dict`.

        Raises:
            UsageError: not a scan info of this format, or a key missing or malformed (one
                line naming ``source`` and the key).
        """
        def need(table: Any, key: str, where: str) -> Any:
            if not isinstance(table, Mapping) or key not in table:
                raise UsageError(f"{source}: not a volprep scan info: key {where}{key!r} missing")
            return table[key]

        if not isinstance(data, Mapping) or data.get("format") != INFO_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise UsageError(f"{source}: not a volprep scan info (format {found!r}, expected {INFO_FORMAT!r})")
        scan, record = need(data, "scan", ""), need(data, "record", "")
        try:
            scan_grid = Grid(tuple(need(scan, "shape", "scan.")), np.asarray(need(scan, "affine", "scan."), float))  # type: ignore[arg-type]
            record_grid = Grid(tuple(need(record, "shape", "record.")),  # type: ignore[arg-type]
                               np.asarray(need(record, "affine", "record."), float))
            channels = int(need(record, "channels", "record."))
        except (TypeError, ValueError) as err:
            raise UsageError(f"{source}: not a volprep scan info: bad grid ({err})") from None
        for name, grid in (("scan", scan_grid), ("record", record_grid)):
            if not np.isfinite(grid.affine).all() or abs(np.linalg.det(grid.affine[:3, :3])) < 1e-12:
                raise UsageError(f"{source}: {name}.affine is not a finite invertible matrix")
        return cls(like=str(data.get("like", "")), scan_paths=tuple(str(p) for p in need(scan, "paths", "scan.")),
                   scan=scan_grid, scan_orientation=str(scan.get("orientation", "")), record=record_grid,
                   orientation=str(record.get("orientation", "")), channels=channels,
                   reduction=dict(need(data, "reduction", "")))


def write_info(info: ScanInfo, path: str | Path) -> Path:
    """Writes ``info`` as JSON (sorted keys, so equal infos give equal bytes)."""
    path = Path(path)
    path.write_text(json.dumps(info.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_info(path: str | Path) -> ScanInfo:
    """Reads a scan info written by :func:`write_info` (``volprep prepare --save``).

    Raises:
        UsageError: no such file, not JSON, or not a scan info (one line).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such scan info file (write one with `volprep prepare --save`)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read a scan info ({err})") from None
    return ScanInfo.from_dict(data, str(path))


def as_info(info: ScanInfo | Mapping[str, Any] | str | Path) -> ScanInfo:
    """A :class:`ScanInfo` from itself, its dict form, or the path of its JSON file."""
    if isinstance(info, ScanInfo):
        return info
    if isinstance(info, Mapping):
        return ScanInfo.from_dict(info)
    return read_info(info)
