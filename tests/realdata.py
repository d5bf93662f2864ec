"""A real-anatomy test corpus, built from brain templates that PyPI and Debian packages ship.

The end-to-end tests need real anatomy next to the synthetic phantoms. This module owns
that corpus: where its sources come from, how they are fetched and verified, how the
datasets are cut from them, and where the result is cached.

Public API::

    corpus() -> Path      builds the corpus if needed (cached) and returns its root
    task(name) -> Path    one dataset: a folder to point ``volprep shards`` at, or for
                          "mixed" the CSV manifest
    build(dest) -> Path   builds every task into ``dest`` (what corpus() caches)
    TASKS, SOURCES        the task names; {source: {package, file, licence, sha256}}

    python tests/realdata.py    builds it and prints one summary line a task

Tasks (every file NIfTI-1 .nii.gz; image and mask of a case share one affine):

- ``tissue`` (MSD + labels.csv of subjects): 8 cases of the MNI152 2009a T1 at 2 mm,
  labels 0 background, 1 grey matter, 2 white matter from the GM/WM probability maps.
- ``atlas`` (MSD): 6 cases of the INIA19 macaque T1 at 1 mm with the NeuroMaps atlas
  (int16, ~650 sparse values up to 1605); dataset.json names every atlas value.
- ``aal`` (MSD): 10 cases of Colin27 (ch2bet) at 2 mm with the 116 AAL labels, named.
- ``mixed`` (``mixed/mixed.csv``: case_id, image, label, subject): 12 classification cases,
  classes "human" (1 mm partial fields of view of MNI152 and Colin27), "macaque" (INIA19 at
  0.5 and 1 mm) and the rarer "human-2mm" (whole brains at 2 mm).
- ``grid`` (MSD): the MNI152 T1 at 1 mm cropped to an odd 61x73x59 box around the brain
  centre, with its tissue mask, stored RAS and LPS: for geometry tests.
- ``labels255`` (imagesTr/labelsTr, no dataset.json): 4 tissue cases at 2 mm, one of
  whose masks also holds the value 255 in a small blob.

Cases differ the way scans do, drawn from ``np.random.default_rng([SEED, task, case])``:
field of view (crop, or zero padding past the template), voxel orientation (RAS, LAS,
LPS, coronal LSA, permuted PIR...), intensity scale and offset, Rician noise, and the
stored type (uint8, int16, int16 with scl_slope/scl_inter, float32). Labels are never
interpolated (stride, block majority, or the argmax of block-averaged probabilities), and
a label is kept only where the source image is non-zero, so every labelled voxel lies on
imaged tissue. No case is bigger than 100x120x100 voxels.

Cache: ``<base>/VERSION/`` with ``base`` = ``$VOLPREP_TESTDATA`` or ``<repo>/.testdata``;
sources are downloaded once into ``<base>/src/`` and checked against pinned sha256.
The corpus is built in a temporary folder and renamed into place with a ``COMPLETE``
marker inside, under an fcntl lock on ``<base>/.lock``, so concurrent pytest processes
build it once and never see half of it. Building is deterministic: the same sources give
byte-identical files (gzip headers carry no time stamp). Change what is built -> bump
VERSION (test_realdata's rebuild test fails until you do).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

VERSION = "v1"
SEED = 20250
TASKS = ("tissue", "atlas", "aal", "mixed", "grid", "labels255")
ROOT = Path(__file__).resolve().parents[1]
ENV = "VOLPREP_TESTDATA"
MAX_SHAPE = (100, 120, 100)

NILEARN = "nilearn==0.14.1"
NILEARN_WHEEL = "nilearn-0.14.1-py3-none-any.whl"
MRICRON_PACKAGE = "mricron-data"
SYSTEM_TEMPLATES = Path("/usr/share/mricron/templates")
_TEMPLATES_IN_DEB = "usr/share/mricron/templates"

_MNI_LICENCE = (
    "MNI ICBM152 2009a licence: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, "
    "modify, and distribute this software and its documentation for any purpose and without "
    "fee is hereby granted, provided that the above copyright notice appear in all copies. "
    "(nilearn, which ships the file under BSD-3-Clause, lists its licence as 'unknown'.)"
)
_MRICRON_LICENCE = (
    "BSD-3-Clause per Debian mricron-data's copyright file (Files: *, Copyright 2006-2010 "
    "Chris Rorden); upstream: {upstream}"
)


def _nilearn(kind: str, sha256: str) -> dict[str, str]:
    return {"package": f"{NILEARN} (PyPI wheel)",
            "file": f"nilearn/datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz",
            "licence": _MNI_LICENCE, "sha256": sha256}


def _mricron(name: str, upstream: str, sha256: str) -> dict[str, str]:
    return {"package": f"{MRICRON_PACKAGE} 1.2.20211006+dfsg-4 (Debian)",
            "file": f"{_TEMPLATES_IN_DEB}/{name}",
            "licence": _MRICRON_LICENCE.format(upstream=upstream), "sha256": sha256}


_COLIN = "Colin27 average brain (Holmes et al. 1998), McConnell Brain Imaging Centre"
_AAL = "AAL atlas on Colin27 (Tzourio-Mazoyer et al. 2002)"
_INIA = "INIA19 rhesus macaque template and NeuroMaps atlas (Rohlfing et al. 2012)"
SOURCES: dict[str, dict[str, str]] = {
    "mni_t1": _nilearn("t1", "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6"),
    "mni_gm": _nilearn("gm", "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed"),
    "mni_wm": _nilearn("wm", "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db"),
    "inia19_t1": _mricron("inia19-t1-brain.nii.gz", _INIA,
                          "3f0707f4999a0c6b56d6c9a0145310cba17753e2b4612f577d8dbfe65a89e231"),
    "inia19_atlas": _mricron("inia19-NeuroMaps.nii.gz", _INIA,
                             "5e3019d073aedc6cabfeed107b049959fe8398a8ab6b0218d8ac050c311aaf79"),
    "ch2": _mricron("ch2.nii.gz", _COLIN,
                    "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309"),
    "ch2bet": _mricron("ch2bet.nii.gz", _COLIN + ", brain extracted",
                       "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1"),
    "aal": _mricron("aal.nii.gz", _AAL,
                    "b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454"),
    "aal_names": _mricron("aal.nii.txt", _AAL,
                          "1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e"),
}


# ---------------------------------------------------------------- public API


def base_dir() -> Path:
    """The cache folder: ``$VOLPREP_TESTDATA`` or ``<repo>/.testdata``."""
    return Path(os.environ.get(ENV) or ROOT / ".testdata").resolve()


def corpus() -> Path:
    """Builds the corpus once (under a file lock) and returns its root, ``<base>/VERSION``.

    Raises:
        RuntimeError: a source cannot be obtained or does not match its pinned sha256
            (the message names the source and the command that failed).
    """
    base = base_dir()
    target = base / VERSION
    if (target / "COMPLETE").is_file():  # renamed into place whole: present means complete
        return target
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if (target / "COMPLETE").is_file():  # another process built it while we waited
            return target
        for stale in base.glob(f".{VERSION}.tmp-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{VERSION}.tmp-", dir=base))
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the corpus from other users of a CI cache
        try:
            _build_unlocked(tmp, _read_sources(base / "src"))
            if target.exists():  # no COMPLETE inside: never ours, but in the way
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def task(name: str) -> Path:
    """One task's dataset path (building the corpus if needed); "mixed" is its CSV."""
    if name not in TASKS:
        raise ValueError(f"unknown realdata task {name!r}; tasks: {', '.join(TASKS)}")
    root = corpus() / name
    return root / "mixed.csv" if name == "mixed" else root


def build(dest: Path) -> Path:
    """Builds every task into ``dest`` (created; must be empty) from the cached sources."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest}: not empty")
    base = base_dir()
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):  # fetching sources must not race another process
        sources = _read_sources(base / "src")
    _build_unlocked(dest, sources)
    return dest


def summary(root: Path) -> dict[str, str]:
    """The one-line summaries a build recorded in ``root/COMPLETE``."""
    return dict(json.loads((root / "COMPLETE").read_text(encoding="utf-8"))["tasks"])


# ---------------------------------------------------------------- sources


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return subprocess.CompletedProcess(cmd, 127, "", str(err))


def _fail(what: str, proc: subprocess.CompletedProcess[str], hint: str) -> RuntimeError:
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    return RuntimeError(f"realdata: cannot obtain {what}: `{' '.join(proc.args)}` exited "
                        f"{proc.returncode}: {' | '.join(tail)}. {hint}")


def _nilearn_wheel(src: Path) -> Path:
    wheel = src / NILEARN_WHEEL
    if wheel.is_file():
        return wheel
    with tempfile.TemporaryDirectory(dir=src) as tmp:  # a killed download leaves no wheel
        proc = _run([sys.executable, "-m", "pip", "download", "--no-deps",
                     "--only-binary=:all:", NILEARN, "-d", tmp], src)
        got = Path(tmp) / NILEARN_WHEEL
        if proc.returncode != 0 or not got.is_file():
            raise _fail(f"the {NILEARN} wheel (MNI152 templates)", proc,
                        f"Put {NILEARN_WHEEL} from PyPI into {src} by hand to build offline.")
        got.rename(wheel)
    return wheel


def _mricron_templates(src: Path) -> Path:
    """The templates folder of mricron-data, downloaded and unpacked (not installed)."""
    unpacked = src / "mricron"
    if (unpacked / _TEMPLATES_IN_DEB).is_dir():
        return unpacked / _TEMPLATES_IN_DEB
    debs = sorted(src.glob(f"{MRICRON_PACKAGE}_*.deb"))
    if not debs:
        with tempfile.TemporaryDirectory(dir=src) as tmp:
            proc = _run(["apt-get", "download", MRICRON_PACKAGE], Path(tmp))
            if proc.returncode != 0:  # a fresh container has no package lists yet
                _run(["apt-get", "update", "-q"], Path(tmp))
                proc = _run(["apt-get", "download", MRICRON_PACKAGE], Path(tmp))
            got = sorted(Path(tmp).glob(f"{MRICRON_PACKAGE}_*.deb"))
            if proc.returncode != 0 or not got:
                raise _fail(f"the Debian package {MRICRON_PACKAGE}", proc,
                            f"Install it (apt-get install {MRICRON_PACKAGE}) or put its .deb "
                            f"into {src}.")
            debs = [src / got[-1].name]
            got[-1].rename(debs[0])
    tmp_dir = src / "mricron.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    proc = _run(["dpkg", "-x", str(debs[-1]), str(tmp_dir)], src)
    if proc.returncode != 0:
        raise _fail(f"the files of {debs[-1].name}", proc, "dpkg -x unpacks a .deb; is dpkg installed?")
    tmp_dir.rename(unpacked)
    return unpacked / _TEMPLATES_IN_DEB


def _read_sources(src: Path) -> dict[str, bytes]:
    """Every source file's bytes, each checked against its pinned sha256.

    An installed mricron-data is used when it holds the pinned files; otherwise the package
    is downloaded and unpacked under ``src`` (another version fails the check, by name).
    """
    src.mkdir(parents=True, exist_ok=True)
    data: dict[str, bytes] = {}
    with zipfile.ZipFile(_nilearn_wheel(src)) as wheel:
        for key in ("mni_t1", "mni_gm", "mni_wm"):
            data[key] = wheel.read(SOURCES[key]["file"])
    mricron = [k for k in SOURCES if k not in data]

    def read(folder: Path) -> dict[str, bytes] | None:
        found = {}
        for key in mricron:
            path = folder / Path(SOURCES[key]["file"]).name
            if not path.is_file():
                return None
            found[key] = path.read_bytes()
        return found

    system = read(SYSTEM_TEMPLATES)
    if system is None or any(_sha256(v) != SOURCES[k]["sha256"] for k, v in system.items()):
        system = None
    found = system or read(_mricron_templates(src))
    if found is None:
        raise RuntimeError(f"realdata: {MRICRON_PACKAGE} under {src / 'mricron'} lacks "
                           f"{', '.join(SOURCES[k]['file'] for k in mricron)}")
    data.update(found)
    for key, blob in data.items():
        if _sha256(blob) != SOURCES[key]["sha256"]:
            raise RuntimeError(f"realdata: source {key} ({SOURCES[key]['file']} from "
                               f"{SOURCES[key]['package']}) has sha256 {_sha256(blob)}, expected "
                               f"{SOURCES[key]['sha256']}: another package version? (delete "
                               f"{src} to fetch the sources again)")
    return data


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------- volume helpers


@dataclass(frozen=True)
class _Vol:
    """A RAS-ordered array and its voxel-to-world affine."""

    data: np.ndarray
    affine: np.ndarray

    @functools.cached_property
    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper (exclusive) corner of the non-zero voxels."""
        nz = np.nonzero(self.data)
        return np.array([i.min() for i in nz]), np.array([i.max() + 1 for i in nz])


def _decode(blob: bytes) -> _Vol:
    img = nib.as_closest_canonical(nib.Nifti1Image.from_bytes(gzip.decompress(blob)))
    return _Vol(np.asarray(img.dataobj), img.affine)


def _blocks(data: np.ndarray) -> np.ndarray:
    """``data`` as (i, 2, j, 2, k, 2) blocks; an odd last voxel along an axis is dropped."""
    n = [s // 2 for s in data.shape]
    return data[: 2 * n[0], : 2 * n[1], : 2 * n[2]].reshape(n[0], 2, n[1], 2, n[2], 2)


def _block_affine(affine: np.ndarray) -> np.ndarray:
    """The grid of 2x2x2 blocks: each new voxel sits at its block's centre (+0.5 voxel)."""
    step = np.diag([2.0, 2.0, 2.0, 1.0])
    step[:3, 3] = 0.5
    return affine @ step


def _block_mean(vol: _Vol) -> _Vol:
    """2x2x2 block means, as float32."""
    mean = _blocks(vol.data.astype(np.float32)).mean(axis=(1, 3, 5), dtype=np.float32)
    return _Vol(mean, _block_affine(vol.affine))


def _block_mode(vol: _Vol) -> _Vol:
    """2x2x2 block majority of a label volume (ties: the smaller value); grid as _block_mean."""
    a = _blocks(vol.data)
    shape = (a.shape[0], a.shape[2], a.shape[4])
    blocks = a.transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8)
    mode = blocks[:, 0].copy()
    # Most blocks hold one value (background, region interiors): vote only on the others.
    mixed = np.flatnonzero((blocks != blocks[:, :1]).any(axis=1))
    votes = np.sort(blocks[mixed], axis=1)
    counts = (votes[:, :, None] == votes[:, None, :]).sum(axis=2)
    mode[mixed] = votes[np.arange(len(mixed)), counts.argmax(axis=1)]  # first max: smallest value
    return _Vol(mode.reshape(shape), _block_affine(vol.affine))


def _stride(vol: _Vol) -> _Vol:
    """Every second voxel (no filtering: also right for labels)."""
    return _Vol(vol.data[::2, ::2, ::2], vol.affine @ np.diag([2.0, 2.0, 2.0, 1.0]))


def _tissue(gm: _Vol, wm: _Vol, image: _Vol) -> _Vol:
    """0 background, 1 grey, 2 white matter: the likelier one where it exceeds 0.5."""
    g, w = gm.data.astype(np.float32) / 255, wm.data.astype(np.float32) / 255
    labels = np.where(np.maximum(g, w) > 0.5, np.where(w > g, 2, 1), 0).astype(np.uint8)
    return _on_tissue(_Vol(labels, image.affine), image)


def _on_tissue(labels: _Vol, image: _Vol) -> _Vol:
    """Labels kept only where the image is non-zero (a mask never leaves the imaged brain)."""
    return _Vol(np.where(image.data > 0, labels.data, 0).astype(labels.data.dtype), labels.affine)


def _crop(vol: _Vol, start: np.ndarray, shape: tuple[int, ...]) -> _Vol:
    """The box ``[start, start + shape)``; voxels outside the volume are 0 (a wider FOV)."""
    out = np.zeros(shape, dtype=vol.data.dtype)
    src = tuple(slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, shape, vol.data.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    out[dst] = vol.data[src]
    shift = np.eye(4)
    shift[:3, 3] = start
    return _Vol(out, vol.affine @ shift)


def _fov(rng: np.random.Generator, brain: tuple[np.ndarray, np.ndarray], frac: tuple[float, float],
         limit: tuple[int, ...] = MAX_SHAPE) -> tuple[np.ndarray, tuple[int, ...]]:
    """A field of view: ``frac`` of the brain's extent per axis, its centre jittered."""
    lo, hi = brain
    extent = hi - lo
    shape = np.minimum(np.round(extent * rng.uniform(*frac, 3)).astype(int), limit)
    centre = (lo + hi) / 2 + rng.uniform(-0.08, 0.08, 3) * extent
    return np.round(centre - shape / 2).astype(int), tuple(int(s) for s in shape)


def _orient(vol: _Vol, axcodes: str) -> _Vol:
    """The same voxels stored in another voxel order, world positions unchanged."""
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(axcodes)))
    data = np.ascontiguousarray(nio.apply_orientation(vol.data, transform))
    affine = vol.affine @ nio.inv_ornt_aff(transform, vol.data.shape)
    if nib.aff2axcodes(affine) != tuple(axcodes):
        raise RuntimeError(f"reorientation to {axcodes} gave {nib.aff2axcodes(affine)}")
    return _Vol(data, affine)


@dataclass(frozen=True)
class _Stored:
    """What a scanner writes: the stored array and its on-disk scaling (None: unscaled)."""

    data: np.ndarray
    slope: float | None = None
    inter: float | None = None


def _acquire(image: np.ndarray, rng: np.random.Generator, dtype: str) -> _Stored:
    """A scan of ``image``: Rician noise, intensity scale and offset, a stored type.

    ``dtype`` is uint8, int16, float32, or int16s (int16 with scl_slope/scl_inter).
    """
    x = image.astype(np.float32)
    ref = float(np.percentile(x[x > 0], 99))
    sigma = np.float32(rng.uniform(0.01, 0.03) * ref)
    noise = rng.standard_normal((2, *x.shape), dtype=np.float32) * sigma
    x = np.hypot(x + noise[0], noise[1]) / np.float32(ref)  # magnitude image, brain ~ 0..1
    if dtype == "uint8":
        y = x * rng.uniform(150, 230)
        return _Stored(np.clip(np.round(y), 0, 255).astype(np.uint8))
    if dtype == "int16":
        y = x * rng.uniform(400, 3000)
        return _Stored(np.clip(np.round(y), -32768, 32767).astype(np.int16))
    if dtype == "float32":
        return _Stored((x * rng.uniform(0.5, 2.0) + rng.uniform(-0.1, 0.1)).astype(np.float32))
    if dtype == "int16s":
        y = x * rng.uniform(100, 1000) + rng.uniform(-50, 50)
        inter = float(np.float32(np.round(rng.uniform(-60, 60), 2)))
        slope = float(np.float32(np.abs(y - inter).max() / 30000))
        raw = np.clip(np.round((y - inter) / slope), -32768, 32767).astype(np.int16)
        return _Stored(raw, slope, inter)
    raise ValueError(f"unknown stored type {dtype!r}")


def _write(path: Path, data: np.ndarray, affine: np.ndarray, *, slope: float | None = None,
           inter: float | None = None, qform_code: int = 1) -> None:
    """A NIfTI-1 .nii.gz whose bytes depend only on the arguments (gzip mtime 0)."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=qform_code)
    img.header.set_xyzt_units("mm", "sec")
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


# ---------------------------------------------------------------- tasks


@dataclass
class _Sources:
    """Decoded sources and the derived grids several tasks share."""

    mni1: _Vol  # MNI152 T1, 1 mm
    gm1: _Vol  # its grey and white matter probability maps (uint8, 255 = 1)
    wm1: _Vol
    mni2: _Vol  # 2 mm block means
    tissue2: _Vol
    inia05: _Vol  # INIA19 T1, 0.5 mm
    inia1: _Vol  # stride 2: 1 mm
    neuromaps1: _Vol
    neuromaps_values: list[int]  # every value of the full-resolution atlas
    ch2_1: _Vol  # Colin27 with skull, 1 mm
    ch2bet1: _Vol
    ch2_2: _Vol
    ch2bet2: _Vol
    aal2: _Vol
    aal_names: dict[int, str]

    @classmethod
    def decode(cls, raw: dict[str, bytes]) -> _Sources:
        mni1, gm, wm = (_decode(raw[k]) for k in ("mni_t1", "mni_gm", "mni_wm"))
        mni2 = _block_mean(mni1)
        inia05, atlas = _decode(raw["inia19_t1"]), _decode(raw["inia19_atlas"])
        inia1 = _stride(inia05)
        ch2_1, ch2bet1, aal = (_decode(raw[k]) for k in ("ch2", "ch2bet", "aal"))
        ch2bet2 = _block_mean(ch2bet1)
        names = {}
        for line in raw["aal_names"].decode("ascii").splitlines():  # "1 Precentral_L 2001"
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                names[int(fields[0])] = fields[1]
        return cls(
            mni1=mni1, gm1=gm, wm1=wm, mni2=mni2,
            tissue2=_tissue(_block_mean(gm), _block_mean(wm), mni2),
            inia05=inia05, inia1=inia1,
            neuromaps1=_on_tissue(_stride(atlas), inia1),
            neuromaps_values=[int(v) for v in np.unique(atlas.data)],
            ch2_1=ch2_1, ch2bet1=ch2bet1, ch2_2=_block_mean(ch2_1), ch2bet2=ch2bet2,
            aal2=_on_tissue(_block_mode(aal), ch2bet2), aal_names=names,
        )


@dataclass(frozen=True)
class _Case:
    """One case to write: its RAS arrays and how the "scanner" stores them."""

    case_id: str
    image: _Vol  # RAS, before the scan
    labels: _Vol | None  # RAS, same grid
    orientation: str
    dtype: str
    qform_code: int = 1


def _scan(task_index: int, case_index: int, image: _Vol, labels: _Vol | None,
          frac: tuple[float, float], brain: _Vol | None = None
          ) -> tuple[np.random.Generator, _Vol, _Vol | None]:
    """The case's random stream and its field of view of ``image`` (and ``labels``)."""
    rng = np.random.default_rng([SEED, task_index, case_index])
    start, shape = _fov(rng, (brain or image).bbox, frac)
    return rng, _crop(image, start, shape), _crop(labels, start, shape) if labels else None


@dataclass
class _Written:
    """What a written case looks like on disk, for the summary line."""

    shape: tuple[int, ...]
    orientation: str
    dtype: str
    values: set[int]
    label_class: str | None = None


def _write_case(case: _Case, rng: np.random.Generator, image_path: Path,
                label_path: Path | None) -> _Written:
    image = _orient(case.image, case.orientation)
    stored = _acquire(image.data, rng, case.dtype)
    _write(image_path, stored.data, image.affine, slope=stored.slope, inter=stored.inter,
           qform_code=case.qform_code)
    info = _Written(image.data.shape, case.orientation, case.dtype, set())
    if case.labels is not None and label_path is not None:
        labels = _orient(case.labels, case.orientation)
        _write(label_path, labels.data, image.affine, qform_code=case.qform_code)
        info.values = {int(v) for v in np.unique(labels.data)}
    return info


def _write_msd(root: Path, cases: list[_Case], rngs: list[np.random.Generator],
               labels: dict[int, str], description: str) -> list[_Written]:
    infos = [_write_case(c, r, root / "imagesTr" / f"{c.case_id}.nii.gz",
                         root / "labelsTr" / f"{c.case_id}.nii.gz") for c, r in zip(cases, rngs, strict=True)]
    meta = {
        "name": f"volprep-realdata-{root.name}", "description": description,
        "reference": "tests/realdata.py", "licence": "see SOURCES.json in the corpus root",
        "release": VERSION, "tensorImageSize": "3D", "modality": {"0": "T1"},
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "numTraining": len(cases), "numTest": 0,
        "training": [{"image": f"./imagesTr/{c.case_id}.nii.gz",
                      "label": f"./labelsTr/{c.case_id}.nii.gz"} for c in cases],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return infos


TISSUE_NAMES = {0: "background", 1: "gray matter", 2: "white matter"}
# (orientation, stored type, subject): pairs of cases share a subject, so grouped splits
# have something to group (the template is one population average, not a person).
_TISSUE_CASES = (("RAS", "int16", "mni-a"), ("LAS", "int16s", "mni-a"), ("LPS", "uint8", "mni-b"),
                 ("LSA", "float32", "mni-b"), ("RAS", "uint8", "mni-c"), ("PIR", "int16s", "mni-d"),
                 ("LAS", "float32", "mni-e"), ("RPI", "int16", "mni-f"))


def _build_tissue(src: _Sources, root: Path) -> list[_Written]:
    cases, rngs = [], []
    for i, (orientation, dtype, _) in enumerate(_TISSUE_CASES):
        rng, image, labels = _scan(0, i, src.mni2, src.tissue2, (0.85, 1.2))
        # Case 4 keeps the source's header habit: sform only (qform_code 0).
        cases.append(_Case(f"tissue_{i + 1:02d}", image, labels, orientation, dtype, 0 if i == 4 else 1))
        rngs.append(rng)
    infos = _write_msd(root, cases, rngs, TISSUE_NAMES,
                       "MNI152 2009a T1 at 2 mm; grey/white matter from its probability maps")
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["case_id", "subject"])
        writer.writerows((c.case_id, s[2]) for c, s in zip(cases, _TISSUE_CASES, strict=True))
    return infos


_ATLAS_CASES = (("RAS", "float32"), ("LAS", "int16s"), ("LPS", "float32"), ("ASR", "int16"),
                ("PIR", "int16s"), ("LIP", "float32"))


def _build_atlas(src: _Sources, root: Path) -> list[_Written]:
    cases, rngs = [], []
    for i, (orientation, dtype) in enumerate(_ATLAS_CASES):
        rng, image, labels = _scan(1, i, src.inia1, src.neuromaps1, (0.8, 1.15))
        cases.append(_Case(f"atlas_{i + 1:02d}", image, labels, orientation, dtype))
        rngs.append(rng)
    names = {v: f"NeuroMaps_{v}" for v in src.neuromaps_values}
    names[0] = "background"
    return _write_msd(root, cases, rngs, names,
                      "INIA19 macaque T1 at 1 mm (stride 2) with the NeuroMaps atlas")


_AAL_CASES = (("RAS", "uint8"), ("LAS", "int16"), ("LPS", "float32"), ("LSA", "int16s"),
              ("RAS", "int16"), ("LAS", "uint8"), ("PIR", "float32"), ("RAS", "int16s"),
              ("LPI", "uint8"), ("ASL", "int16"))


def _build_aal(src: _Sources, root: Path) -> list[_Written]:
    cases, rngs = [], []
    for i, (orientation, dtype) in enumerate(_AAL_CASES):
        rng, image, labels = _scan(2, i, src.ch2bet2, src.aal2, (0.85, 1.15))
        cases.append(_Case(f"aal_{i + 1:02d}", image, labels, orientation, dtype))
        rngs.append(rng)
    values = sorted({int(v) for v in np.unique(src.aal2.data)} | set(src.aal_names))
    names = {v: src.aal_names.get(v, f"AAL_{v}") for v in values if v}
    return _write_msd(root, cases, rngs, {0: "background", **names},
                      "Colin27 (ch2bet) at 2 mm with the AAL atlas (block majority)")


# (case id, class, subject, source, field of view as a fraction of the brain, orientation, type)
_MIXED_CASES = (
    ("human_01", "human", "h1", "mni1", (0.45, 0.65), "RAS", "uint8"),
    ("human_02", "human", "h1", "mni1", (0.45, 0.65), "LAS", "int16"),
    ("human_03", "human", "h2", "ch2_1", (0.4, 0.6), "RAS", "uint8"),
    ("human_04", "human", "h3", "ch2bet1", (0.45, 0.65), "LAS", "float32"),
    ("human_05", "human", "h2", "ch2_1", (0.4, 0.6), "LPS", "int16s"),
    ("human_06", "human", "h4", "mni1", (0.45, 0.65), "LSA", "int16"),
    ("macaque_01", "macaque", "m1", "inia05", (0.55, 0.75), "RAS", "float32"),
    ("macaque_02", "macaque", "m1", "inia05", (0.55, 0.75), "LAS", "int16s"),
    ("macaque_03", "macaque", "m2", "inia1", (0.95, 1.15), "RAS", "float32"),
    ("macaque_04", "macaque", "m3", "inia1", (0.95, 1.15), "LPS", "int16"),
    ("human2mm_01", "human-2mm", "h5", "mni2", (0.95, 1.1), "RAS", "int16"),
    ("human2mm_02", "human-2mm", "h6", "ch2_2", (0.95, 1.1), "LAS", "uint8"),
)


def _build_mixed(src: _Sources, root: Path) -> list[_Written]:
    # Colin27 with skull: its field of view is placed on the brain (ch2bet), not the head.
    brains = {"ch2_1": src.ch2bet1, "ch2_2": src.ch2bet2}
    infos, rows = [], []
    for i, (case_id, label, subject, source, frac, orientation, dtype) in enumerate(_MIXED_CASES):
        rng, image, _ = _scan(3, i, getattr(src, source), None, frac, brains.get(source))
        info = _write_case(_Case(case_id, image, None, orientation, dtype), rng,
                           root / "images" / f"{case_id}.nii.gz", None)
        info.label_class = label
        infos.append(info)
        rows.append((case_id, f"images/{case_id}.nii.gz", label, subject))
    with open(root / "mixed.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["case_id", "image", "label", "subject"])
        writer.writerows(rows)
    return infos


GRID_SHAPE = (61, 73, 59)


def _build_grid(src: _Sources, root: Path) -> list[_Written]:
    lo, hi = src.mni1.bbox  # the template is brain-extracted: its bounding box is the brain's
    start = (lo + hi) // 2 - np.array(GRID_SHAPE) // 2
    image = _crop(src.mni1, start, GRID_SHAPE)
    labels = _tissue(_crop(src.gm1, start, GRID_SHAPE), _crop(src.wm1, start, GRID_SHAPE), image)
    cases = [_Case(f"grid_{o.lower()}", image, labels, o, "uint8") for o in ("RAS", "LPS")]
    # Both cases get the same draws: the same scan stored in two voxel orders.
    rngs = [np.random.default_rng([SEED, 4, 0]) for _ in cases]
    return _write_msd(root, cases, rngs, TISSUE_NAMES,
                      "MNI152 2009a T1 at 1 mm, an odd-sized central box, stored RAS and LPS")


_L255_CASES = (("RAS", "int16"), ("LAS", "uint8"), ("RAS", "float32"), ("LPS", "int16"))


def _build_labels255(src: _Sources, root: Path) -> list[_Written]:
    infos = []
    for i, (orientation, dtype) in enumerate(_L255_CASES):
        rng, image, labels = _scan(5, i, src.mni2, src.tissue2, (0.9, 1.1))
        if i == 2 and labels is not None:  # a stray value, as hand-edited masks have
            centre = np.array(labels.data.shape) // 2 + (8, 5, 6)  # right of the midline, deep
            offsets = np.indices(labels.data.shape) - centre.reshape(3, 1, 1, 1)
            blob = (offsets**2).sum(axis=0) <= 4  # radius 2 voxels: 33 voxels
            labels = _Vol(np.where(blob, 255, labels.data).astype(np.uint8), labels.affine)
        case = _Case(f"mni_{'abcd'[i]}", image, labels, orientation, dtype)
        infos.append(_write_case(case, rng, root / "imagesTr" / f"{case.case_id}.nii.gz",
                                 root / "labelsTr" / f"{case.case_id}.nii.gz"))
    return infos


_BUILDERS: dict[str, Callable[[_Sources, Path], list[_Written]]] = {
    "tissue": _build_tissue, "atlas": _build_atlas, "aal": _build_aal,
    "mixed": _build_mixed, "grid": _build_grid, "labels255": _build_labels255,
}


def _summarise(name: str, infos: list[_Written]) -> str:
    """One line: case count, smallest and largest shape, orientations, types, labels."""
    shapes = sorted((int(np.prod(i.shape)), i.shape) for i in infos)
    dims = ["x".join(map(str, s)) for _, s in (shapes[0], shapes[-1])]
    values: set[int] = set().union(*(i.values for i in infos))
    text = (f"{name}: {len(infos)} cases, shapes {dims[0]}..{dims[1]}, orientations "
            f"{','.join(sorted({i.orientation for i in infos}))}, types "
            f"{','.join(sorted({i.dtype for i in infos}))}")
    if values:
        text += f", {len(values)} label values ({min(values)}..{max(values)})"
    classes = [i.label_class for i in infos if i.label_class is not None]
    if classes:
        text += ", classes " + " ".join(f"{c}={classes.count(c)}" for c in sorted(set(classes)))
    return text


def _build_unlocked(dest: Path, raw: dict[str, bytes]) -> None:
    src = _Sources.decode(raw)
    lines = {name: _summarise(name, builder(src, dest / name)) for name, builder in _BUILDERS.items()}
    sources = {k: dict(v) for k, v in SOURCES.items()}
    (dest / "SOURCES.json").write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    # Written last: its presence is what corpus() takes for "complete".
    marker = {"version": VERSION, "seed": SEED, "tasks": lines}
    (dest / "COMPLETE").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    """Builds the corpus (if needed) and prints a summary line per task."""
    root = corpus()
    print(f"realdata corpus {VERSION}: {root}")
    for line in summary(root).values():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
