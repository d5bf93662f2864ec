"""Every reduction method works through `volprep shards` and `volprep.load`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pywt
import tensorflow as tf
from scipy import ndimage

from volprep.cli import main
from volprep.manifest import read_manifest

REDUCTIONS = {
    "none": "reduce = 'none'\n",
    "downsample": "reduce = 'downsample'\nfactor = [2, 2, 1]\n",
    "resample": "reduce = 'resample'\nspacing = [3.0, 3.0, 4.0]\ninterpolation = 'cubic'\n",
    "wavelet-approx": "reduce = 'wavelet'\nwavelet = 'haar'\nlevel = 1\nmode = 'approx'\n",
    "wavelet-compress": "reduce = 'wavelet'\nwavelet = 'db2'\nlevel = 2\nmode = 'compress'\nkeep = 0.1\n",
    "wavelet-compress-int8": "reduce = 'wavelet'\nwavelet = 'db2'\nlevel = 2\nmode = 'compress'\nkeep = 0.1\nwavelet_values = 'int8'\n",
}


# The dataset (written here with nibabel): 6 cases of 32 x 32 x 20 voxels of 3.5 x 3.5 x 5
# mm, stored LPS, RAS or LAS (flips only, so RAS shapes are the same for all). By hand, the
# shape every record of each reduction must have:
TARGET_SHAPES = {
    "none": [32, 32, 20],
    "downsample": [16, 16, 20],                      # factor [2, 2, 1]
    "resample": [37, 37, 25],                        # round(112 mm / 3) = 37, round(100 mm / 4) = 25
    "wavelet-approx": [16, 16, 10],                  # haar level 1 halves every axis
    "wavelet-compress": [32, 32, 20],                # full resolution, coded
    "wavelet-compress-int8": [32, 32, 20],
}
SHAPE, SPACING = (32, 32, 20), np.array([3.5, 3.5, 5.0])
FLIPS = [(-1, -1, 1), (1, 1, 1), (-1, 1, 1)]  # LPS, RAS, LAS
CASES = 6


def _phantom(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Case k in RAS voxel order: a smooth head-like blob with a lesion (label 1 + k % 3)."""
    rng = np.random.default_rng([23, k])
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    centre = np.array([16.0, 15.0, 10.0]) + rng.uniform(-2, 2, 3)
    r2 = sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True))
    lesion = sum((a - c) ** 2 for a, c in zip(axes, centre + [3, -2, 1], strict=True)) < 16
    image = 800 * np.exp(-r2 / (2 * 7.0**2)) + 300 * lesion + rng.normal(0, 8, SHAPE)
    return np.rint(image).astype(np.int16), (lesion * (1 + k % 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("red") / "data"
    training = []
    for k in range(CASES):
        image, labels = _phantom(k)
        flips = FLIPS[k % len(FLIPS)]
        affine = np.diag([*(SPACING * flips), 1.0])
        affine[:3, 3] = [-50.0, 40.0, -30.0]
        order = tuple(slice(None, None, f) for f in flips)  # RAS order -> stored order
        for folder, volume in (("imagesTr", image), ("labelsTr", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(volume[order]), affine), root / folder / f"case{k}.nii.gz")
        training.append({"image": f"./imagesTr/case{k}.nii.gz", "label": f"./labelsTr/case{k}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "reductions", "modality": {"0": "MRI"}, "training": training, "numTraining": CASES,
        "labels": {"0": "background", "1": "a", "2": "b", "3": "c"},
    }))
    return root


@pytest.fixture(scope="module")
def originals(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every case as nibabel reads it, brought to RAS by nibabel: (image float64, labels)."""
    cases = {}
    for path in sorted((data / "imagesTr").glob("*.nii.gz")):
        image = nib.as_closest_canonical(nib.load(path))
        labels = nib.as_closest_canonical(nib.load(data / "labelsTr" / path.name))
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S") and image.shape == SHAPE
        cases[path.name.split(".")[0]] = (image.get_fdata(dtype=np.float64),
                                          np.asarray(labels.dataobj).astype(np.int64))
    assert len(cases) == CASES
    return cases


def _block_mean(volume: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    s = volume.shape
    return volume.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def _resampled(volume: np.ndarray, spacing_in: np.ndarray, spacing_out: np.ndarray, shape: list[int]) -> np.ndarray:
    """Cubic B-spline samples on the grid of ``spacing_out`` that shares the input's centre,
    clipped to the input's range (volprep clips what a ringing filter invents)."""
    zoom = spacing_out / spacing_in
    offset = (np.asarray(volume.shape) - 1) / 2 - zoom * (np.asarray(shape) - 1) / 2
    coords = np.meshgrid(*[z * np.arange(n) + o for z, n, o in zip(zoom, shape, offset, strict=True)], indexing="ij")
    return np.clip(ndimage.map_coordinates(volume, coords, order=3, mode="nearest"), volume.min(), volume.max())


def _coded(volume: np.ndarray, keep: float, qmax: int) -> tuple[np.ndarray, float]:
    """What a "compress" record decodes to, derived from the original with pywt and the
    format the wavelet module documents: db2, level 2, periodization; the approximation band
    kept; of all detail coefficients the ceil(keep * n_detail) largest in magnitude kept, the
    rest zeroed; each kept one rounded to a multiple of its band's scale (the band's largest
    kept magnitude / qmax). Also returns the largest band scale (one quantum)."""
    coeffs = pywt.wavedecn(volume, "db2", mode="periodization", level=2)
    magnitudes = np.concatenate([np.abs(band).ravel() for level in coeffs[1:] for band in level.values()])
    k = math.ceil(keep * magnitudes.size)
    threshold = np.sort(magnitudes)[-k]
    assert int((magnitudes >= threshold).sum()) == k  # no ties at the threshold
    coded: list = [coeffs[0]]
    quantum = 0.0
    for level in coeffs[1:]:
        bands = {}
        for key, band in level.items():
            kept = np.where(np.abs(band) >= threshold, band, 0.0)
            top = float(np.abs(kept).max())
            scale = top / qmax if top > 0 else 1.0
            quantum = max(quantum, scale)
            bands[key] = np.clip(np.rint(kept / scale), -qmax, qmax) * scale
        coded.append(bands)
    return pywt.waverecn(coded, "db2", mode="periodization"), quantum


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.ptp(reference) ** 2 / np.mean((reference - test) ** 2)))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_through_shards_and_loader(name: str, data: Path, tmp_path: Path,
                                             originals: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import volprep

    config = tmp_path / "p.toml"
    config.write_text(  # no normalisation: what the loader yields is the reduced original
        "[job]\nsplits = { train = 0.5, val = 0.5 }\n[balance]\nenabled = false\n"
        f"[preprocess]\n{REDUCTIONS[name]}dtype = 'float32'\nnormalize = 'none'\n"
    )
    out = tmp_path / "out"
    assert main(["shards", str(data), "--out", str(out), "--config", str(config),
                 "--workers", "1", "--quiet", "--no-report"]) == 0
    m = read_manifest(out)
    target = TARGET_SHAPES[name]
    assert list(m.target_shape) == target and list(m.features["image"].shape) == [*target, 1]
    # no class table: the label volume is the record's "label", a (deflated) volume on the same grid
    assert list(m.features["label"].shape) == target and m.features["label"].encoding == "deflate"
    assert (m.fidelity is None) == (name == "none")

    # Everything the loader yields, both splits.
    yielded = []
    for split in m.splits:
        for images, masks in volprep.load(out, split=split, batch_size=4, shuffle=False):
            assert images.dtype == tf.float32 and list(images.shape[1:]) == [*target, 1]
            yielded += list(zip(images.numpy()[..., 0].astype(np.float64), masks.numpy(), strict=True))
    assert len(yielded) == CASES

    matched = set()
    for image, mask in yielded:
        # Which case is this? The one whose independent reduction is nearest.
        expected = {}
        for case, (volume, _) in originals.items():
            if name == "none":
                expected[case] = volume
            elif name == "downsample":
                expected[case] = _block_mean(volume, (2, 2, 1))
            elif name == "wavelet-approx":
                expected[case] = _block_mean(volume, (2, 2, 2))  # haar approximation = 2^3 block mean
            elif name == "resample":
                expected[case] = _resampled(volume, SPACING, np.array([3.0, 3.0, 4.0]), target)
            else:
                expected[case] = volume
        case = min(expected, key=lambda c: float(np.mean((expected[c] - image) ** 2)))
        matched.add(case)
        volume, labels = originals[case]
        span = float(np.ptp(volume))
        if name == "none":
            np.testing.assert_array_equal(image, volume)
            np.testing.assert_array_equal(mask, labels)
        elif name in ("downsample", "wavelet-approx", "resample"):
            np.testing.assert_allclose(image, expected[case], rtol=0, atol=1e-4 * span)
        else:
            qmax = 127 if name.endswith("int8") else 32767
            coded, quantum = _coded(volume, 0.1, qmax)
            # The coder works in float32: a coefficient within rounding of a half quantum
            # may round the other way, moving voxels by at most one quantum (an orthonormal
            # basis function never exceeds 1) and the RMS by quantum / sqrt(20480) = q / 143.
            # Allowed: two such overlapping anywhere; ~30 over the volume (RMS 0.04 q) plus
            # float32 noise of ~2 ulps of the range. Measured RMS 0-0.015 q; rounding down
            # instead of to nearest gives 0.13-0.16 q.
            diff = image - coded
            assert np.abs(diff).max() <= 2 * quantum + 1e-4 * span
            assert float(np.sqrt(np.mean(diff**2))) <= 0.04 * quantum + 2e-7 * span
            # 10% of the details of these noisy phantoms: 43.4-43.7 dB measured (int16 and
            # int8 alike); the approximation band alone gives 31-32 dB. 40 dB fails when
            # the details are lost or mis-scaled.
            assert _psnr(volume, image) >= 40
        # Labels are chosen, never blended: each case keeps exactly its label set.
        assert set(np.unique(mask).tolist()) == set(np.unique(labels).tolist())
    assert matched == set(originals)  # every case came back once

    if name.startswith("wavelet-compress"):
        feat = m.features["image"]
        assert feat.encoding == "wavelet-compress" and feat.layout is not None and feat.layout["keep"] == 0.1
        assert feat.layout["value_dtype"] == ("int8" if name.endswith("int8") else "int16")
        # Stored compactly: a record is smaller than half the float32 volume.
        assert feat.layout["nbytes"] < 4 * np.prod(target) / 2


def test_inspect_prints_fidelity(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["shards", str(data), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "psnr" in text.lower() and "ratio" in text.lower()
