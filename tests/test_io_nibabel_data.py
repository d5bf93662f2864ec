"""Every file nibabel ships for its own tests: read equal to nibabel, or refused as the table says.

``EXPECTED`` decides, file by file, what volprep must do with it: read it (then its voxels,
shape and affine must equal nibabel's), or refuse it with an InputError whose message
names the file and holds the listed fragment. A file nibabel loads as a 3D/4D volume may
be refused only with a reason written in the table, and a file the table does not list
fails the sweep: a new nibabel release is classified by a person, not waved through. Run
under both non-finite policies, so the file holding NaN is compared too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest

from volprep.config import ReadConfig
from volprep.errors import InputError
from volprep.io import read_volume

DATA = Path(nib.__file__).parent / "tests" / "data"
NOT_DATA = {".py", ".m", ".rst", ".pyc"}
FILES = sorted(p for p in DATA.iterdir() if p.is_file() and p.suffix not in NOT_DATA and p.name != ".gitignore")


class Expect(NamedTuple):
    """``refuse`` is None for a file volprep must read, else a fragment of the message."""

    refuse: str | None
    reason: str = ""
    nan: bool = False  # holds NaN: refused under non_finite = "fail", read under "zero"


READ = Expect(None)
PAIR = "image file (.img) of this"
NOT_OURS = "not a volume volprep reads"
NO_NIFTI_IN_GZ = "gzip file holds no NIfTI header"
# Formats nibabel reads that volprep does not (DESIGN.md: NIfTI-1/2, Analyze, raw + JSON
# sidecar, MetaImage). Refusing them is the contract, not a bug.
AFNI = "AFNI BRIK/HEAD is not a format volprep reads"
MINC = "MINC is not a format volprep reads"
PARREC = "Philips PAR/REC is not a format volprep reads"
MGH = "FreeSurfer MGH is not a format volprep reads"
BROKEN = "nibabel refuses it too"  # truncated, inconsistent or header-only test files
STREAMLINES = "streamlines (TrackVis/MRtrix), not a volume; nibabel's image loader refuses it too"

EXPECTED: dict[str, Expect] = {
    # NIfTI / Analyze: the formats volprep reads
    "anatomical.nii": READ,
    "example4d.nii.gz": READ,
    "example_nifti2.nii.gz": READ,
    "functional.nii": READ,
    "reoriented_anat_moved.nii": READ,
    "standard.nii.gz": READ,
    "resampled_anat_moved.nii": Expect("NaN or Inf", "153 NaN voxels", nan=True),
    "row_major.dconn.nii": Expect("CIFTI", "a CIFTI-2 matrix (10 x 10), not a volume"),
    "analyze.hdr": Expect(PAIR, "header only: nibabel ships no .img beside it"),
    "nifti1.hdr": Expect(PAIR, "header only: nibabel ships no .img beside it"),
    "nifti2.hdr": Expect(PAIR, "header only: nibabel ships no .img beside it"),
    # Formats volprep does not read, that nibabel loads as volumes
    "example4d+orig.BRIK.gz": Expect(NO_NIFTI_IN_GZ, AFNI),
    "example4d+orig.HEAD": Expect(NOT_OURS, AFNI),
    "scaled+tlrc.BRIK": Expect(NOT_OURS, AFNI),
    "scaled+tlrc.HEAD": Expect(NOT_OURS, AFNI),
    "bad_attribute+orig.HEAD": Expect(NOT_OURS, AFNI + "; " + BROKEN),
    "bad_datatype+orig.HEAD": Expect(NOT_OURS, AFNI + "; " + BROKEN),
    "minc1-no-att.mnc": Expect(NOT_OURS, MINC),
    "minc1_1_scale.mnc": Expect(NOT_OURS, MINC),
    "minc1_4d.mnc": Expect(NOT_OURS, MINC),
    "minc2-4d-d.mnc": Expect(NOT_OURS, MINC),
    "minc2-no-att.mnc": Expect(NOT_OURS, MINC),
    "minc2_1_scale.mnc": Expect(NOT_OURS, MINC),
    "minc2_4d.mnc": Expect(NOT_OURS, MINC),
    "minc2_baddim.mnc": Expect(NOT_OURS, MINC),
    "small.mnc": Expect(NOT_OURS, MINC),
    "tiny.mnc": Expect(NOT_OURS, MINC),
    "test.mgz": Expect(NO_NIFTI_IN_GZ, MGH),
    "phantom_EPI_asc_CLEAR_2_1.PAR": Expect(NOT_OURS, PARREC),
    "phantom_EPI_asc_CLEAR_2_1.REC": Expect(NOT_OURS, PARREC),
    "phantom_varscale.PAR": Expect(NOT_OURS, PARREC),
    "phantom_varscale.REC": Expect(NOT_OURS, PARREC),
    "phantom_truncated.PAR": Expect(NOT_OURS, PARREC + "; " + BROKEN),
    "phantom_truncated.REC": Expect(NOT_OURS, PARREC + "; " + BROKEN),
    # DICOM (nibabel's loader does not take it either) and ECAT
    "0.dcm": Expect("magic", "DICOM: not a format volprep reads; nibabel.load refuses it too"),
    "1.dcm": Expect("magic", "DICOM: not a format volprep reads; nibabel.load refuses it too"),
    "tinypet.v": Expect(NOT_OURS, "ECAT: not a format volprep reads; nibabel.load refuses it too"),
}
# PAR headers whose .REC nibabel does not ship (or that it finds inconsistent): header only.
for _name in ("ADC_Map", "ASL_3D_Multiecho", "DTI", "DTIv40", "NA", "R11_T2W_TSE", "T1",
              "T1_3echo_mag_real_imag_phase", "T1_dual_echo", "T2-interleaved", "T2", "T2_-interleaved",
              "T2_", "fieldmap", "phantom_fake_dualTR", "phantom_fake_v4", "phantom_fake_v4_1",
              "umass_anonymized", "variant_v4_2_header",
              "Phantom_EPI_3mm_cor_20APtrans_15RLrot_SENSE_15_1", "Phantom_EPI_3mm_cor_SENSE_8_1",
              "Phantom_EPI_3mm_sag_15AP_SENSE_13_1", "Phantom_EPI_3mm_sag_15FH_SENSE_12_1",
              "Phantom_EPI_3mm_sag_15RL_SENSE_11_1", "Phantom_EPI_3mm_sag_SENSE_7_1",
              "Phantom_EPI_3mm_tra_-30AP_10RL_20FH_SENSE_14_1", "Phantom_EPI_3mm_tra_15FH_SENSE_9_1",
              "Phantom_EPI_3mm_tra_15RL_SENSE_10_1", "Phantom_EPI_3mm_tra_SENSE_6_1"):
    EXPECTED[f"{_name}.PAR"] = Expect(NOT_OURS, PARREC + "; header only, " + BROKEN)
for _name in ("complex.trk", "complex_big_endian.trk", "empty.trk", "simple.trk", "standard.trk",
              "standard.LPS.trk", "empty.tck", "matlab_nan.tck", "multiline_header_field.tck",
              "no_header_end.tck", "no_header_end_eof.tck", "no_magic_number.tck", "simple.tck",
              "simple_big_endian.tck", "standard.tck"):
    EXPECTED[_name] = Expect(NOT_OURS, STREAMLINES)


def _nibabel_volume(path: Path) -> nib.spatialimages.SpatialImage | None:
    """The image when nibabel loads ``path`` as a 3D/4D volume whose voxels it can read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(path)
            np.asanyarray(img.dataobj)
    except Exception:  # noqa: BLE001 - any failure means "not a volume nibabel reads"
        return None
    return img if len(img.shape) in (3, 4) else None


def test_the_table_covers_every_file_nibabel_ships() -> None:
    names = {p.name for p in FILES}
    assert len(names) >= 60  # nibabel 5.x ships ~80 such files; an empty folder is no sweep
    assert names - set(EXPECTED) == set(), "classify these new nibabel test files in EXPECTED"
    assert set(EXPECTED) - names == set(), "these listed files are gone from nibabel's tests/data"
    assert all(e.refuse is None or e.reason for e in EXPECTED.values())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_nibabel_volumes_are_refused_only_with_a_reason(path: Path) -> None:
    img = _nibabel_volume(path)
    expect = EXPECTED.get(path.name)
    assert expect is not None, f"{path.name} is not in EXPECTED"
    if img is not None and expect.refuse is not None:
        # a volume nibabel reads: refusing it needs a stated reason naming why
        assert expect.nan or "not a format volprep reads" in expect.reason or "not a volume" in expect.reason
    if expect.refuse is None:
        assert img is not None, f"{path.name}: listed as read, but nibabel does not read it as a volume"


@pytest.mark.parametrize("non_finite", ["fail", "zero"])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_reads_like_nibabel_or_refuses_as_listed(path: Path, non_finite: str) -> None:
    expect = EXPECTED[path.name]
    refuse = expect.refuse if not (expect.nan and non_finite == "zero") else None
    cfg = ReadConfig(non_finite=non_finite)
    if refuse is not None:
        with pytest.raises(InputError) as caught:
            read_volume(path, cfg)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
        assert refuse in message, f"{path.name}: expected {refuse!r} in {message!r}"
        return
    volume = read_volume(path, cfg)
    img = nib.load(path)
    expected = np.asanyarray(img.dataobj).astype(np.float64)
    if expect.nan:
        assert not np.isfinite(expected).all()  # the case the table claims
        expected = np.where(np.isfinite(expected), expected, 0.0)
    assert volume.data.shape == img.shape
    np.testing.assert_allclose(volume.data, expected, rtol=1e-6)
    np.testing.assert_allclose(volume.header.affine, img.affine, rtol=0, atol=1e-5)
