"""Input formats are units of one table: a conformance test of every format, and a toy format added.

Adding a format takes one new module under ``volprep/io/`` and one line in
``volprep/io/formats.py`` (its name in ``FORMAT_MODULES``). Nothing in discovery
(``names.py``, ``layouts.py``, ``cases.py``), in the read stage's dispatch (``read.py``) or
anywhere else: **2 files** (1 new, 1 edited; 1 line).
:func:`test_adding_a_format_is_one_module_and_one_registry_entry` makes exactly those edits
on a copy of the package, counts them, and then, in a fresh interpreter, discovers a folder
of ``.toy`` files (a companion ``.toyside`` is never a case, one without its ``.toy`` is
reported, one that is a FIFO is refused) and reads them back with ``read_header`` and
``read_volume``, compared with what numpy wrote. The in-process tests build the same toy
module from the same source and pass the extended table to the name rules directly.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import package_with_unit
from io_corpus import AFFINE, phantom, write_metaimage, write_nifti, write_raw

import volprep
from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import gzipfast, read_volume
from volprep.io.formats import FORMATS, check_table, companions, volume_suffixes
from volprep.io.protocol import Companion
from volprep.names import companion_problem, sort_folder, strip_extension, volume_ext

CFG = ReadConfig()
SHAPE = (6, 5, 4)

# The toy format, exactly as its module volprep/io/toy.py would read.
TOY_SOURCE = '''"""A toy format: a line ``TOY <d> <h> <w>`` then little-endian float32 voxels, C order.

``name.toyside`` beside ``name.toy``, when there, holds the voxel spacing ``sd sh sw``; a
``.toyside`` without its ``.toy`` is reported at discovery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io.base import Layout
from volprep.io.paths import find_companion
from volprep.io.protocol import Companion

NAME = "toy"
TITLE = "TOY"
EXPECTED = "TOY header"
SUFFIXES = (".toy",)
COMPANIONS = (Companion(".toy", ".toyside", orphan="toy side file without its .toy"),)
HEAD_BYTES = 64
GZIP = False


def claims(path: Path, head: bytes) -> bool:
    return False


def sniff(head: bytes) -> bool:
    return head.startswith(b"TOY ")


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    line, newline, _ = head.partition(b"\\n")
    words = line.split()
    if not newline or len(words) != 4 or not all(w.isdigit() for w in words[1:]):
        raise HeaderError(path, f"toy header line {line[:40]!r} is not 'TOY <d> <h> <w>'")
    spacing = [1.0, 1.0, 1.0]
    side = find_companion(path, (path.name[: -len(".toy")] + ".toyside",))
    if side is not None:
        spacing = [float(v) for v in side.read_text().split()]
    return Layout(
        path=path, data_path=path, offset=len(line) + 1, dims=tuple(int(w) for w in words[1:]),
        channels=0, stored=np.dtype("<f4"), order="C", compression=None, slope=None,
        inter=0.0, affines=(("toy spacing", np.diag([*spacing, 1.0])),),
    )
'''
ORPHAN = "toy side file without its .toy"


def _toy_module() -> types.ModuleType:
    module = types.ModuleType("toy")
    exec(compile(TOY_SOURCE, "toy.py", "exec"), module.__dict__)  # the source written above
    return module


TOY = _toy_module()
TABLE = (*FORMATS, TOY)


def write_toy(path: Path, data: np.ndarray, spacing: tuple[float, float, float] | None = None) -> Path:
    """A .toy file written with numpy alone (and its .toyside when ``spacing`` is given)."""
    d, h, w = data.shape
    path.write_bytes(f"TOY {d} {h} {w}\n".encode() + np.ascontiguousarray(data, dtype="<f4").tobytes())
    if spacing is not None:
        path.with_suffix(".toyside").write_text(" ".join(str(s) for s in spacing))
    return path


# ---------------------------------------------------------------- every registered format


def _samples(folder: Path) -> dict[str, tuple[Path, str]]:
    """One file of each kind the registered formats read, and the format that must take it.

    They share stems (``p.hdr``, ``p.img``, ``p.raw``, ``p.json``, ``p.mha``, ``p.nii``...), as
    in a real folder, so a format that claimed a name too broadly would take another's file.
    """
    data = phantom(SHAPE)
    write_nifti(folder / "p.hdr", data)
    write_nifti(folder / "q.hdr.gz", data)  # and q.img.gz
    nib.AnalyzeImage(data, AFFINE).to_filename(folder / "z.hdr")
    return {
        "nifti1": (write_nifti(folder / "p.nii", data), "nifti"),
        "nifti2 gz": (write_nifti(folder / "p.nii.gz", data, version=2), "nifti"),
        "nifti1 big-endian": (write_nifti(folder / "z.nii", data, endian=">"), "nifti"),
        "analyze hdr": (folder / "z.hdr", "nifti"),
        "analyze img": (folder / "z.img", "nifti"),
        "pair hdr": (folder / "p.hdr", "nifti"),
        "pair img": (folder / "p.img", "nifti"),
        "gz pair hdr": (folder / "q.hdr.gz", "nifti"),
        "gz pair img": (folder / "q.img.gz", "nifti"),
        "mha": (write_metaimage(folder / "p.mha", data), "metaimage"),
        "mhd": (write_metaimage(folder / "m.mhd", data), "metaimage"),
        "raw": (write_raw(folder / "p.raw", data), "raw"),
        "raw sidecar": (folder / "p.json", "raw"),
        "raw gz": (write_raw(folder / "q.raw.gz", data, gz=True), "raw"),
    }


def _takers(path: Path, formats: tuple[types.ModuleType, ...]) -> list[str]:
    """The formats that would take ``path``: by name, or by its (inflated) first bytes."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if gzipfast.is_gzip(head):
        inner = gzipfast.read_prefix(path, 1 << 16)
        return [f.NAME for f in formats if f.claims(path, head) or (f.GZIP and f.sniff(inner))]
    return [f.NAME for f in formats if f.claims(path, head) or f.sniff(head)]


def test_each_sample_is_taken_by_its_format_alone(tmp_path: Path) -> None:
    """Conformance: exactly one format takes each file (so the table's order decides nothing)."""
    for kind, (path, name) in _samples(tmp_path).items():
        assert _takers(path, FORMATS) == [name], kind
        assert read_volume(path, CFG).header.shape == SHAPE, kind


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.NAME)
def test_format_conformance(fmt: types.ModuleType) -> None:
    """Every registered format: well-formed constants; sniff total on any bytes, False on none."""
    assert fmt.NAME and fmt.TITLE and fmt.EXPECTED and fmt.HEAD_BYTES > 0
    assert all(s.startswith(".") and s == s.lower() for s in fmt.SUFFIXES)
    assert all(isinstance(c, Companion) and c.volume in fmt.SUFFIXES for c in fmt.COMPANIONS)
    assert isinstance(fmt.GZIP, bool)
    assert fmt.sniff(b"") is False
    rng = np.random.default_rng(5)
    for n in (1, 3, 4, 100, 600, 5000):
        assert isinstance(fmt.sniff(rng.integers(0, 256, n, dtype=np.uint8).tobytes()), bool)


def test_the_table_is_checked() -> None:
    with pytest.raises(ValueError, match="'nifti' is listed twice"):
        check_table((*FORMATS, FORMATS[0]))
    clash = types.SimpleNamespace(NAME="clash", SUFFIXES=(".toy", ".nii"), COMPANIONS=())
    with pytest.raises(ValueError, match=r"suffix '\.nii' is already 'nifti'"):
        check_table((*FORMATS, clash))
    shouting = types.SimpleNamespace(NAME="shout", SUFFIXES=(".TOY",), COMPANIONS=())
    with pytest.raises(ValueError, match=r"suffix '\.TOY' is not like"):
        check_table((shouting,))
    stray = types.SimpleNamespace(NAME="stray", SUFFIXES=(".toy",), COMPANIONS=(Companion(".nii", ".x"),))
    with pytest.raises(ValueError, match="not one of its own volume suffixes"):
        check_table((stray,))
    with pytest.raises(ValueError, match="lower-case suffix"):
        Companion(".toy", "toyside")
    assert check_table(TABLE) == TABLE


def test_the_catch_all_error_lists_every_format(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(HeaderError) as info:
        read_volume(junk, CFG)
    assert str(info.value) == (f"{junk}: not a volume volprep reads: no NIfTI/Analyze or MetaImage "
                               "or NRRD or DICOM header and no .raw + .json sidecar (file starts with b'hello wo')")


def test_a_pair_image_is_read_through_its_header_whatever_its_content(tmp_path: Path) -> None:
    """An .img holds voxels with no signature: its .hdr decides, even when the .img is gzip or
    its first voxels happen to read as a NIfTI ``sizeof_hdr`` (both refused before formats
    were units: the content was sniffed before the name was asked)."""
    data = phantom(SHAPE)
    data[0, 0, 0], data[1, 0, 0] = 348, 0  # little-endian int32 348: a NIfTI-1 sizeof_hdr
    write_nifti(tmp_path / "s.hdr", data)
    assert struct.unpack("<i", (tmp_path / "s.img").read_bytes()[:4]) == (348,)
    np.testing.assert_array_equal(read_volume(tmp_path / "s.img", CFG).data, data)
    write_nifti(tmp_path / "z.hdr", data)
    (tmp_path / "z.img.gz").write_bytes(gzip.compress((tmp_path / "z.img").read_bytes()))
    (tmp_path / "z.img").unlink()
    np.testing.assert_array_equal(read_volume(tmp_path / "z.img.gz", CFG).data, data)


def test_no_module_outside_the_formats_names_a_format_suffix() -> None:
    """One home: a format's suffixes appear as strings only in its own module (docstrings aside).

    ``.json`` is also the suffix of dataset.json and of every file volprep writes, so it is not
    looked for. Writers name the files they write (a writer's choice, not a reading rule):
    demo.py its NIfTI volumes, inference/outputs.py the NIfTI predictions it saves.
    """
    writers = {"demo.py", "inference/outputs.py"}
    owners = {Path(f.__file__).name for f in FORMATS} | {"formats.py", "protocol.py"}
    wanted = sorted({*volume_suffixes(), *(c.suffix for c in companions())} - {".json"})
    package = Path(volprep.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name in owners and path.parent.name == "io" or path.relative_to(package).as_posix() in writers:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{path.relative_to(package)}:{node.lineno} {s}" for s in wanted if s in node.value.lower()]
    assert found == []


# ---------------------------------------------------------------- the toy format, in process


def test_toy_names_follow_its_companion_rules() -> None:
    names = ["a.toy", "b.TOY", "b.toyside", "c.toyside", "n.nii.gz", "notes.txt"]
    assert sort_folder(names, TABLE) == (["a.toy", "b.TOY", "n.nii.gz"], [("c.toyside", ORPHAN)])
    assert sort_folder(names, FORMATS) == (["n.nii.gz"], [])  # unknown without its table entry
    assert volume_ext("b.TOY", TABLE) == ".toy" and volume_ext("b.toyside", TABLE) is None
    assert strip_extension("b.TOY", TABLE) == "b" and strip_extension("b.toyside", TABLE) == "b"


def test_toy_companion_is_checked_before_anything_opens_it(tmp_path: Path) -> None:
    toy = write_toy(tmp_path / "d.toy", np.zeros(SHAPE, np.float32))
    os.mkfifo(tmp_path / "d.toyside")
    assert companion_problem(toy, TABLE) == (tmp_path / "d.toyside", "not a regular file (a FIFO)")
    assert companion_problem(toy, FORMATS) is None
    mhd = write_metaimage(tmp_path / "m.mhd", phantom(SHAPE))
    mhd.with_suffix(".raw").unlink()
    os.mkfifo(mhd.with_suffix(".raw"))  # named inside the header: the reader's to refuse
    assert companion_problem(mhd, TABLE) is None


# ---------------------------------------------------------------- the toy format, added for real


def test_adding_a_format_is_one_module_and_one_registry_entry(tmp_path: Path) -> None:
    """On a copy of the package: write io/toy.py and add its module to formats.py's
    ``FORMAT_MODULES`` (the only edit: counted below); then, in a fresh interpreter, discovery and the
    readers know .toy files, and the formats already there still work beside them."""
    copy, diff, changed = package_with_unit(tmp_path / "pkg", "io/toy.py", TOY_SOURCE, "io/formats.py",
                                            "volprep.io.raw")
    assert diff == ['+    "volprep.io.toy",']  # one line
    assert changed == ["volprep/io/formats.py", "volprep/io/toy.py"]

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    arrays = {name: rng.normal(size=SHAPE).astype(np.float32) for name in ("a", "b", "d")}
    write_toy(data / "a.toy", arrays["a"])
    write_toy(data / "b.toy", arrays["b"], spacing=(2.0, 3.0, 4.0))
    write_toy(data / "d.toy", arrays["d"])
    os.mkfifo(data / "d.toyside")  # would block the reader: refused at discovery
    (data / "c.toyside").write_text("1 1 1")  # its .toy is missing
    write_nifti(data / "n.nii.gz", phantom(SHAPE))
    (data / "junk.txt").write_bytes(b"hello world")
    out = tmp_path / "out"
    out.mkdir()
    script = f"""
import json
from pathlib import Path
import numpy as np
import volprep
from volprep.cases import discover
from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import read_header, read_volume
assert volprep.__file__.startswith({str(copy)!r}), volprep.__file__
data, out = Path({str(data)!r}), Path({str(out)!r})
ds = discover(data)
found = {{"ids": [c.case_id for c in ds.cases], "images": [c.images[0].name for c in ds.cases],
          "problems": sorted([list(p) for p in ds.problems])}}
for name in ("a", "b"):
    header = read_header(data / f"{{name}}.toy", ReadConfig())
    volume = read_volume(data / f"{{name}}.toy", ReadConfig())
    np.save(out / f"{{name}}.npy", volume.data)
    found[name] = [list(header.shape), list(header.spacing), str(volume.data.dtype)]
try:
    read_volume(data / "junk.txt", ReadConfig())
except HeaderError as err:
    found["junk"] = str(err)
print(json.dumps(found))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(copy.parent), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["ids"] == ["a", "b", "n"]
    assert found["images"] == ["a.toy", "b.toy", "n.nii.gz"]
    assert found["problems"] == [["c", str(data / "c.toyside"), ORPHAN],
                                 ["d", str(data / "d.toyside"), "not a regular file (a FIFO)"]]
    assert found["a"] == [list(SHAPE), [1.0, 1.0, 1.0], "float32"]
    assert found["b"] == [list(SHAPE), [2.0, 3.0, 4.0], "float32"]
    for name in ("a", "b"):
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), arrays[name])
    assert "no NIfTI/Analyze or MetaImage or NRRD or DICOM or TOY header and no .raw + .json sidecar" in found["junk"]
