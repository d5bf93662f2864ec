"""Which files the readers open: paths written inside inputs, special files, label NaNs.

Three rules of the read stage, each a defect once:

- a file name found inside an input (MetaImage ``ElementDataFile``; the name-derived
  companions of Analyze/NIfTI pairs and raw sidecars) stays beside that input: an
  absolute path or a ``..`` escape is refused (``paths.companion_path``);
- a FIFO, socket or device is refused before it is opened (opening a FIFO blocks), as
  the named volume or as a companion;
- a label volume with NaN/Inf is refused whatever ``read.non_finite`` says
  (``read_label_volume``): "zero" would turn NaN labels into background.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from io_corpus import phantom, write_metaimage, write_nifti, write_raw

from volprep.config import ReadConfig
from volprep.errors import HeaderError, InputError, LabelError
from volprep.io import (
    check_label,
    read_case_images,
    read_header,
    read_label_volume,
    read_volume,
)
from volprep.io.paths import companion_path

CFG = ReadConfig()
SHAPE = (6, 5, 4)


def exact(error: type[InputError], path: Path, problem: str, call: Callable[[], object]) -> None:
    """``call()`` raises exactly ``error`` with the message ``<path>: <problem>``."""
    with pytest.raises(InputError) as info:
        call()
    assert type(info.value) is error, repr(info.value)
    assert str(info.value) == f"{path}: {problem}"


def point_data_file(mhd: Path, name: str) -> None:
    """Rewrites a ``.mhd`` header's ``ElementDataFile`` line (always its last line)."""
    lines = mhd.read_text().splitlines()
    assert lines[-1].startswith("ElementDataFile = ")
    mhd.write_text("\n".join([*lines[:-1], f"ElementDataFile = {name}"]) + "\n")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """``tmp/ds/`` (the dataset folder) with ``tmp/secret.raw`` beside it, outside it.

    ``secret.raw`` holds exactly the bytes a ``SHAPE`` int16 MetaImage claims, so a reader
    that follows a path out of the folder reads it without complaint.
    """
    folder = tmp_path / "ds"
    folder.mkdir()
    secret = phantom(SHAPE, seed=7)
    (tmp_path / "secret.raw").write_bytes(secret.astype("<i2").tobytes(order="F"))
    return folder


# -- 1. paths written inside an input stay beside it ---------------------------------


@pytest.mark.parametrize("reader", [read_header, read_volume])
def test_metaimage_absolute_data_file_refused(dataset: Path, reader: Callable) -> None:
    mhd = write_metaimage(dataset / "x.mhd", phantom(SHAPE))
    secret = dataset.parent / "secret.raw"
    point_data_file(mhd, str(secret))
    exact(HeaderError, mhd, f"absolute data file path '{secret}' refused: a data file must "
          "sit beside its header", lambda: reader(mhd, CFG))


@pytest.mark.parametrize("written", ["../secret.raw", "sub/../../secret.raw",
                                     "./../ds/../secret.raw"])
@pytest.mark.parametrize("reader", [read_header, read_volume])
def test_metaimage_dotdot_data_file_refused(dataset: Path, written: str,
                                            reader: Callable) -> None:
    (dataset / "sub").mkdir()
    mhd = write_metaimage(dataset / "x.mhd", phantom(SHAPE))
    point_data_file(mhd, written)
    exact(HeaderError, mhd, f"data file '{written}' climbs out of the header's folder "
          "through '..': refused", lambda: reader(mhd, CFG))


def test_metaimage_climbing_two_levels_refused(tmp_path: Path) -> None:
    """``../../`` from a subfolder of the dataset: still out of the header's folder."""
    folder = tmp_path / "ds" / "images"
    folder.mkdir(parents=True)
    mhd = write_metaimage(folder / "x.mhd", phantom(SHAPE))
    point_data_file(mhd, "../../secret.raw")
    exact(HeaderError, mhd, "data file '../../secret.raw' climbs out of the header's folder "
          "through '..': refused", lambda: read_volume(mhd, CFG))


@pytest.mark.parametrize("written", ["data/x.raw", "./data/x.raw", "data/../data/x.raw",
                                     "data//x.raw"])
def test_metaimage_data_file_in_a_subfolder_reads(dataset: Path, written: str) -> None:
    data = phantom(SHAPE)
    mhd = write_metaimage(dataset / "x.mhd", data)
    (dataset / "data").mkdir()
    mhd.with_suffix(".raw").rename(dataset / "data" / "x.raw")
    point_data_file(mhd, written)
    np.testing.assert_array_equal(read_volume(mhd, CFG).data, data)


def test_metaimage_data_file_naming_the_folder_refused(dataset: Path) -> None:
    mhd = write_metaimage(dataset / "x.mhd", phantom(SHAPE))
    point_data_file(mhd, "sub/..")
    exact(HeaderError, mhd, "data file 'sub/..' names no file", lambda: read_volume(mhd, CFG))


@pytest.mark.parametrize(("written", "problem"), [
    ("/etc/x.raw", "absolute data file path '/etc/x.raw' refused: a data file must sit "
                   "beside its header"),
    ("//x.raw", "absolute data file path '//x.raw' refused: a data file must sit beside "
                "its header"),
    ("..", "data file '..' climbs out of the header's folder through '..': refused"),
    ("a/../..", "data file 'a/../..' climbs out of the header's folder through '..': refused"),
    ("", "data file '' names no file"),
    (".", "data file '.' names no file"),
])
def test_companion_path_refusals(tmp_path: Path, written: str, problem: str) -> None:
    referrer = tmp_path / "h.mhd"
    exact(HeaderError, referrer, problem, lambda: companion_path(referrer, written))


@pytest.mark.parametrize(("written", "expected"), [
    ("x.raw", "x.raw"), ("sub/x.raw", "sub/x.raw"), ("sub/../x.raw", "x.raw"),
    ("./x.raw", "x.raw"), ("..x.raw", "..x.raw"), ("x..raw", "x..raw"), ("...", "..."),
    ("sub/..x/y.raw", "sub/..x/y.raw"),
])
def test_companion_path_accepts_names_below_the_folder(tmp_path: Path, written: str,
                                                       expected: str) -> None:
    """Names that merely contain dots are not escapes; the path returned is normalised."""
    assert companion_path(tmp_path / "h.mhd", written) == tmp_path / expected


def test_raw_sidecar_cannot_name_a_data_file(dataset: Path) -> None:
    """The sidecar has no data-file key: one that tries is an unknown key, refused."""
    path = write_raw(dataset / "r.raw", phantom(SHAPE), extra={"data_file": "../secret.raw"})
    exact(HeaderError, path, "sidecar key 'data_file' is unknown; allowed: shape, dtype, "
          "byte_order, order, spacing, affine, offset", lambda: read_volume(path, CFG))


def test_symlinked_pair_header_uses_the_image_beside_the_link(tmp_path: Path) -> None:
    """The .img is derived from the name as given, never from the link's target folder."""
    elsewhere = tmp_path / "elsewhere"
    folder = tmp_path / "ds"
    elsewhere.mkdir()
    folder.mkdir()
    write_nifti(elsewhere / "x.hdr", phantom(SHAPE, seed=1))
    (folder / "x.hdr").symlink_to(elsewhere / "x.hdr")
    exact(HeaderError, folder / "x.hdr",
          "the image file (.img) of this NIfTI-1 header pair is missing",
          lambda: read_volume(folder / "x.hdr", CFG))
    mine = phantom(SHAPE, seed=2)
    write_nifti(tmp_path / "mine.hdr", mine)
    (tmp_path / "mine.img").rename(folder / "x.img")
    np.testing.assert_array_equal(read_volume(folder / "x.hdr", CFG).data, mine)


@pytest.mark.parametrize("stem", ["..", ".", "a..b", "a b", "-x", "..img"])
@pytest.mark.parametrize("ext", [".hdr", ".HDR"])
def test_oddly_named_pairs_find_their_image_beside_them(tmp_path: Path, stem: str,
                                                        ext: str) -> None:
    """Dots, spaces and case in a pair's name never move its .img out of the folder."""
    data = phantom(SHAPE, seed=3)
    built = write_nifti(tmp_path / "p.hdr", data)
    folder = tmp_path / "ds"
    folder.mkdir()
    header = folder / (stem + ext)
    built.rename(header)
    built.with_suffix(".img").rename(folder / (stem + (".IMG" if ext.isupper() else ".img")))
    np.testing.assert_array_equal(read_volume(header, CFG).data, data)


def test_symlinked_companion_is_followed_like_any_dataset_file(tmp_path: Path) -> None:
    """The rule is lexical, as for dataset paths: a link placed in the folder is the
    dataset author's choice (datasets are often link farms), so it is followed."""
    store = tmp_path / "store"
    folder = tmp_path / "ds"
    store.mkdir()
    folder.mkdir()
    data = phantom(SHAPE, seed=4)
    write_nifti(store / "s.hdr", data)
    (folder / "x.hdr").symlink_to(store / "s.hdr")
    (folder / "x.img").symlink_to(store / "s.img")
    np.testing.assert_array_equal(read_volume(folder / "x.hdr", CFG).data, data)


# -- 2. FIFOs, sockets and devices are refused before they are opened ----------------


ENTRY_POINTS: dict[str, Callable[[Path], object]] = {
    "read_header": lambda p: read_header(p, CFG),
    "read_volume": lambda p: read_volume(p, CFG),
    "read_label_volume": lambda p: read_label_volume(p, CFG),
    "read_case_images": lambda p: read_case_images([p], CFG),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.mha", "v.img", "v.raw", "v.json"])
def test_fifo_volume_refused_without_blocking(tmp_path: Path, entry: str, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    exact(HeaderError, fifo, "not a regular file (a FIFO)", lambda: ENTRY_POINTS[entry](fifo))


@pytest.mark.timeout(10)
def test_fifo_among_several_channels_refused(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "a.nii", phantom(SHAPE))
    fifo = tmp_path / "b.nii"
    os.mkfifo(fifo)
    exact(HeaderError, fifo, "not a regular file (a FIFO)",
          lambda: read_case_images([good, fifo], CFG))


def _mhd_with_fifo(folder: Path) -> tuple[Path, Path]:
    mhd = write_metaimage(folder / "m.mhd", phantom(SHAPE))
    mhd.with_suffix(".raw").unlink()
    os.mkfifo(mhd.with_suffix(".raw"))
    return mhd, mhd.with_suffix(".raw")


def _hdr_with_fifo_img(folder: Path) -> tuple[Path, Path]:
    hdr = write_nifti(folder / "p.hdr", phantom(SHAPE))
    hdr.with_suffix(".img").unlink()
    os.mkfifo(hdr.with_suffix(".img"))
    return hdr, hdr.with_suffix(".img")


def _img_with_fifo_hdr(folder: Path) -> tuple[Path, Path]:
    hdr = write_nifti(folder / "p.hdr", phantom(SHAPE))
    hdr.unlink()
    os.mkfifo(hdr)
    return hdr.with_suffix(".img"), hdr


def _raw_with_fifo_sidecar(folder: Path) -> tuple[Path, Path]:
    path = write_raw(folder / "r.raw", phantom(SHAPE))
    path.with_suffix(".json").unlink()
    os.mkfifo(path.with_suffix(".json"))
    return path, path.with_suffix(".json")


def _sidecar_with_fifo_raw(folder: Path) -> tuple[Path, Path]:
    path = write_raw(folder / "r.raw", phantom(SHAPE))
    path.unlink()
    os.mkfifo(path)
    return path.with_suffix(".json"), path


def _mhd_with_link_to_fifo(folder: Path) -> tuple[Path, Path]:
    mhd = write_metaimage(folder / "m.mhd", phantom(SHAPE))
    os.mkfifo(folder / "pipe")
    mhd.with_suffix(".raw").unlink()
    mhd.with_suffix(".raw").symlink_to(folder / "pipe")
    return mhd, mhd.with_suffix(".raw")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("build", [_mhd_with_fifo, _hdr_with_fifo_img, _img_with_fifo_hdr,
                                   _raw_with_fifo_sidecar, _sidecar_with_fifo_raw,
                                   _mhd_with_link_to_fifo],
                         ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("reader", [read_header, read_volume])
def test_fifo_companion_refused_without_blocking(tmp_path: Path, build: Callable,
                                                 reader: Callable) -> None:
    named, fifo = build(tmp_path)
    exact(HeaderError, fifo, "not a regular file (a FIFO)", lambda: reader(named, CFG))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path is limited to ~107 bytes."""
    with tempfile.TemporaryDirectory(prefix="vp") as folder:
        yield Path(folder)


@pytest.mark.timeout(10)
def test_socket_refused(short_dir: Path) -> None:
    path = short_dir / "s.nii"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        exact(HeaderError, path, "not a regular file (a socket)", lambda: read_volume(path, CFG))


@pytest.mark.timeout(10)
def test_character_device_refused_as_volume_and_as_companion(tmp_path: Path) -> None:
    exact(HeaderError, Path("/dev/zero"), "not a regular file (a character device)",
          lambda: read_volume(Path("/dev/zero"), CFG))
    hdr = write_nifti(tmp_path / "p.hdr", phantom(SHAPE))
    img = hdr.with_suffix(".img")
    img.unlink()
    img.symlink_to("/dev/zero")
    exact(HeaderError, img, "not a regular file (a character device)",
          lambda: read_volume(hdr, CFG))


def _block_device() -> Path | None:
    for entry in sorted(Path("/dev").iterdir()):
        try:
            if stat.S_ISBLK(entry.stat().st_mode):
                return entry
        except OSError:
            continue
    return None


@pytest.mark.timeout(10)
def test_block_device_refused(tmp_path: Path) -> None:
    device = _block_device()
    if device is None:
        pytest.skip("no block device under /dev on this machine")
    mhd = write_metaimage(tmp_path / "m.mhd", phantom(SHAPE))
    point_data_file(mhd, "disk")
    (tmp_path / "disk").symlink_to(device)
    exact(HeaderError, tmp_path / "disk", "not a regular file (a block device)",
          lambda: read_volume(mhd, CFG))


# -- 3. NaN/Inf labels are refused under either non_finite policy --------------------


def _nan_labels() -> np.ndarray:
    mask = np.asfortranarray(np.random.default_rng(0).integers(0, 3, SHAPE).astype("float32"))
    mask[1, 1, 1] = np.nan
    mask[2, 2, 2] = np.inf
    mask[0, 0, 0] = -np.inf
    return mask


WRITERS: dict[str, Callable[[Path, np.ndarray], Path]] = {
    "l.nii.gz": write_nifti,
    "l.hdr": write_nifti,
    "l.raw": write_raw,
    "l.mha": write_metaimage,
}


@pytest.mark.parametrize("non_finite", ["fail", "zero"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_nan_labels_refused_under_both_policies(tmp_path: Path, name: str,
                                                non_finite: str) -> None:
    path = WRITERS[name](tmp_path / name, _nan_labels())
    cfg = ReadConfig(non_finite=non_finite)
    exact(LabelError, path, "label volume holds 3 NaN/Inf values: labels must be whole numbers",
          lambda: read_label_volume(path, cfg))


def test_zero_policy_would_have_hidden_nan_labels(tmp_path: Path) -> None:
    """Why labels need their own read: read_volume's "zero" turns NaN into background."""
    path = write_nifti(tmp_path / "l.nii.gz", _nan_labels())
    image = read_header(write_nifti(tmp_path / "i.nii.gz", phantom(SHAPE)), CFG)
    zero = ReadConfig(non_finite="zero")
    hidden = check_label(read_volume(path, zero), image, zero, None)
    assert hidden[1, 1, 1] == 0  # NaN became class 0, and check_label could not tell
    exact(LabelError, path, "label volume holds 3 NaN/Inf values: labels must be whole numbers",
          lambda: check_label(read_label_volume(path, zero), image, zero, None))


def test_check_label_refuses_nan_with_the_same_message(tmp_path: Path) -> None:
    """A label Volume built some other way meets the same rule, word for word."""
    path = write_nifti(tmp_path / "l.nii.gz", _nan_labels())
    volume = read_label_volume(write_nifti(tmp_path / "ok.nii.gz", phantom(SHAPE)), CFG)
    volume.data = _nan_labels()
    volume.header = read_header(path, CFG)
    exact(LabelError, path, "label volume holds 3 NaN/Inf values: labels must be whole numbers",
          lambda: check_label(volume, volume.header, CFG, None))


def test_scaled_labels_overflowing_to_inf_refused(tmp_path: Path) -> None:
    labels = np.asfortranarray(np.random.default_rng(1).integers(0, 3, SHAPE).astype("int16"))
    labels[0, 0, 0] = 100
    path = write_nifti(tmp_path / "s.nii", labels, fields={"scl_slope": 1e37})
    exact(LabelError, path, "label volume holds 1 NaN/Inf values: labels must be whole numbers",
          lambda: read_label_volume(path, ReadConfig(non_finite="zero")))


@pytest.mark.parametrize("non_finite", ["fail", "zero"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_clean_labels_read_as_read_volume_reads_them(tmp_path: Path, dtype: str,
                                                     non_finite: str) -> None:
    labels = np.asfortranarray(np.random.default_rng(2).integers(0, 4, SHAPE).astype(dtype))
    path = write_nifti(tmp_path / "l.nii.gz", labels)
    cfg = ReadConfig(non_finite=non_finite)
    got = read_label_volume(path, cfg)
    np.testing.assert_array_equal(got.data, read_volume(path, cfg).data)
    np.testing.assert_array_equal(got.data, labels)
    assert got.header.notes == read_header(path, cfg).notes
