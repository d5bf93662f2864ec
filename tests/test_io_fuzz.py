"""Property test: a valid small NIfTI with mutated header fields reads or gives an InputError.

Never another exception, and never more memory than ``max_bytes`` allows (traced with
tracemalloc, which sees numpy's and Python's allocations).
"""

from __future__ import annotations

import gzip
import math
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_corpus import header_class, phantom, write_nifti

from volprep.config import ReadConfig
from volprep.errors import InputError
from volprep.io import read_header, read_volume

MAX_BYTES = 256 * 1024
CFG = ReadConfig(max_bytes=MAX_BYTES)
# Bytes a read may use beyond the volume: the 64 KiB sniff, 1 MiB of compressed input.
SLACK = 2 * 1024**2
FIELDS = ("dim", "datatype", "bitpix", "vox_offset", "pixdim", "scl_slope", "scl_inter",
          "sform_code", "qform_code", "magic", "srow_x", "quatern_b", "intent_code",
          "sizeof_hdr")
SPECIAL_INTS = (-1, 0, 1, 2, 3, 4, 5, 7, 8, 16, 32, 64, 128, 256, 348, 352, 512, 540, 1024,
                2304, 3001, 32767)
SPECIAL_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 352.0, 1e30, -1e30, float("nan"), float("inf"),
                  float("-inf"), 1e-30)
VARIANTS = [(1, "v.nii"), (1, "v.nii.gz"), (2, "v.nii.gz"), (1, "v.hdr")]


@st.composite
def mutations(draw: st.DrawFn, version: int) -> list[tuple[str, int | None, Any]]:
    template = header_class(version).template_dtype
    out = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(FIELDS))
        ftype = template.fields[name][0]
        base, shape = ftype.base, ftype.shape
        index = draw(st.integers(0, math.prod(shape) - 1)) if shape else None
        if base.kind in "iu":
            info = np.iinfo(base)
            value: Any = draw(st.one_of(st.sampled_from(SPECIAL_INTS),
                                        st.integers(int(info.min), int(info.max))))
        elif base.kind == "f":
            value = draw(st.one_of(st.sampled_from(SPECIAL_FLOATS),
                                   st.floats(width=32 if base.itemsize == 4 else 64)))
        else:
            value = draw(st.binary(max_size=base.itemsize))
        out.append((name, index, value))
    return out


def _apply(block: bytes, version: int, changes: list[tuple[str, int | None, Any]]) -> bytes:
    size = len(block)
    endian = "<" if int.from_bytes(block[:4], "little") == size else ">"
    hdr = header_class(version)(binaryblock=block, endianness=endian, check=False)
    for name, index, value in changes:
        with np.errstate(all="ignore"):
            if index is None:
                hdr[name] = value
            else:
                hdr[name][index] = value
    return hdr.binaryblock


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], bytes]:
    """Uncompressed header+data bytes of each variant (the pair's .img kept aside)."""
    root = tmp_path_factory.mktemp("fuzz")
    out = {}
    for version, name in VARIANTS:
        plain = name.removesuffix(".gz")
        path = write_nifti(root / f"{version}{plain}", phantom((16, 16, 16), "int16"),
                           version=version, gz=False)
        out[(version, name)] = path.read_bytes()
        if plain.endswith(".hdr"):
            out[(version, name + ".img")] = path.with_suffix(".img").read_bytes()
    return out


@pytest.mark.parametrize(("version", "name"), VARIANTS)
def test_mutated_headers_read_or_refuse(originals: dict, version: int, name: str) -> None:
    size = 348 if version == 1 else 540
    blob = originals[(version, name)]

    @settings(max_examples=int(__import__("os").environ.get("FUZZ_N", 120)), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(changes=mutations(version))
    def check(changes: list[tuple[str, int | None, Any]]) -> None:
        mutated = _apply(blob[:size], version, changes) + blob[size:]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(gzip.compress(mutated, mtime=0) if name.endswith(".gz") else mutated)
            if name.endswith(".hdr"):
                path.with_suffix(".img").write_bytes(originals[(version, name + ".img")])
            tracemalloc.start()
            try:
                for read in (read_header, read_volume):
                    try:
                        read(path, CFG)
                    except InputError as err:
                        assert str(path) in str(err) and "\n" not in str(err)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak <= 2 * MAX_BYTES + SLACK, f"peak {peak} bytes for {changes}"

    check()
