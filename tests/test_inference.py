"""``volprep.prepare`` / ``volprep.invert`` on real anatomy, held to the job's own records.

Real jobs run on the tissue task (tests/realdata.py: the MNI152 T1 at 2 mm with its grey
and white matter masks, stored RAS, LAS, LPS, LSA, PIR, RPI). Expected values never come
from volprep's inference code:

- the model input: the records themselves, parsed by plain TensorFlow from the manifest's
  features (``test_oracle_e2e.read_records``; a coded array, such as a wavelet-compressed
  image, decoded by its feature's own decoder): ``prepare`` of a training case's image must
  give its record image byte for byte, for every reduction, with per-case and dataset
  statistics, float16 and float32 records, and wavelet-compressed ones;
- the way back: the original mask files read by nibabel. A dummy identity "model" (the
  prediction is the record's own mask) inverted must give the original mask exactly with
  ``reduce = "none"`` (everywhere when the window covers the scan; inside the window and
  0 outside when it crops). With a reduction, the result must be the nearest record voxel
  of every scan voxel computed independently (nibabel's ``apply_affine`` and rounding),
  and its Dice per tissue class against the original mask the reduction's own loss
  (the oracle's block majority, repeated back, for downsampling).

Measured on this corpus (Dice, grey / white matter, labels; probabilities one-hot, linear,
argmax): downsample x2 (4 mm) 0.878-0.883 / 0.862-0.869, probabilities 0.891-0.896 /
0.875-0.880, equal to the oracle's block-majority loss; resample 3 mm 0.875-0.882 /
0.869-0.873, probabilities 0.894-0.909 / 0.887-0.901. The 0.95 the issue hoped for is
beyond any inverse of these records: grey matter is 1-2 voxels thick at 2 mm, and a 4 mm
(3 mm) record cannot hold it (``DICE_FLOOR`` is set under the measured loss, and the
reference checks hold the loss to the reduction's own).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import oracle
import pytest
from nibabel.affines import apply_affine
from test_oracle_e2e import read_records  # the plain-TensorFlow record reader

import volprep
from volprep.cli import main
from volprep.inference import read_info
from volprep.manifest import read_manifest

# name: (reduce settings, target shape). The tissue cases reorient to at most 87x109x91:
# "none" covers every scan; "none+ds" crops every scan; the others cover or crop.
JOBS: dict[str, tuple[str, list[int]]] = {
    "none": ('reduce = "none"', [88, 110, 92]),
    "none+ds": ('reduce = "none"\ndataset_stats = true\nnormalize = "percentile"', [64, 72, 64]),
    "downsample": ('reduce = "downsample"\nfactor = 2', [44, 56, 46]),
    "downsample+ds": ('reduce = "downsample"\nfactor = 2\ndataset_stats = true', [36, 40, 36]),
    "resample": ('reduce = "resample"\nspacing = [3, 3, 3]', [62, 76, 64]),
    "resample+ds": ('reduce = "resample"\nspacing = [3, 3, 3]\ndataset_stats = true\ndtype = "float32"', [48, 56, 48]),
    "compress": ('reduce = "wavelet"\nmode = "compress"\nlevel = 2\nkeep = 0.3', [88, 112, 92]),
    # the foreground box from the image alone (prepare has no mask) is the job's box here
    "downsample+crop": ('reduce = "downsample"\ncrop_foreground = true', [40, 48, 40]),
}
TISSUE = (1, 2)  # grey matter, white matter
# Under the Dice the reductions themselves allow on these masks (measured 0.862 at worst;
# see the module docstring): a gross error (a flip, a shift) falls far below it.
DICE_FLOOR = 0.85


@dataclasses.dataclass
class Job:
    out: Path
    data: Path
    target: list[int]
    records: list[dict[str, Any]]  # every split's records, parsed by plain TensorFlow


def run_job(data: Path, base: Path, name: str) -> Job:
    settings, target = JOBS[name]
    config = base / f"{name}.toml"
    config.write_text(f"[job]\nseed = 3\n[balance]\nenabled = false\n[preprocess]\n{settings}\n"
                      f"target_shape = {target}\n")
    out = base / name
    code = main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1",
                 "--quiet", "--no-report"])
    assert code == 0
    typed = read_manifest(out)
    manifest = typed.to_dict()
    records = [row for split in manifest["splits"] for row in read_records(out, manifest, split)]
    for name, feature in typed.features.items():  # coded arrays (wavelet): their own decoder
        if feature.encoding not in ("raw", "deflate", "deflate-shuffle", "int64", "float", "bytes"):
            for row in records:
                row[name] = feature.decode([row[name]])
    assert len(records) == 8  # every case, no augmented copies
    return Job(out, data, target, records)


@pytest.fixture(scope="module")
def jobs(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Job]:
    base = tmp_path_factory.mktemp("inference")
    memo: dict[str, Job] = {}

    def get(name: str) -> Job:
        if name not in memo:
            memo[name] = run_job(realdata / "tissue", base, name)
        return memo[name]

    return get


def scan_files(job: Job, record: dict[str, Any]) -> tuple[Path, Path]:
    case = record["case_id"].decode()
    return job.data / "imagesTr" / f"{case}.nii.gz", job.data / "labelsTr" / f"{case}.nii.gz"


def mask_of(label_path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(label_path).dataobj)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


def nearest_reference(record: dict[str, Any], scan_path: Path, target: list[int],
                      ties: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 0.0),),
                      ) -> tuple[list[np.ndarray], np.ndarray]:
    """The record mask at every scan voxel's nearest record voxel, 0 where there is none
    (nibabel + numpy): one array per ``ties`` entry, and where the first found a voxel.

    A tie nudges positions before rounding (per axis): -1e-6 / 1e-6 send a position halfway
    between two record voxels to the lower / upper one (float noise decides it otherwise).
    """
    scan = nib.load(scan_path)
    ijk = np.indices(scan.shape[:3]).reshape(3, -1).T
    position = apply_affine(np.linalg.inv(record["affine"]) @ scan.affine, ijk)
    out, first = [], None
    for tie in ties:
        index = np.floor(position + 0.5 + np.asarray(tie)).astype(int)
        inside = ((index >= 0) & (index < np.asarray(target))).all(axis=1)
        expected = np.zeros(index.shape[0], dtype=record["label"].dtype)
        hit = index[inside]
        expected[inside] = record["label"][hit[:, 0], hit[:, 1], hit[:, 2]]
        out.append(expected.reshape(scan.shape[:3]))
        first = inside.reshape(scan.shape[:3]) if first is None else first
    assert first is not None
    return out, first


# ---------------------------------------------------------------- the model input


@pytest.mark.parametrize("name", list(JOBS))
def test_prepare_gives_the_record_image_bit_for_bit(name: str, jobs: Callable[[str], Job]) -> None:
    job = jobs(name)
    for record in job.records:
        image, _ = scan_files(job, record)
        x, info = volprep.prepare(image, job.out, dtype=None)
        stored = record["image"]  # wavelet-coded: the model sees the decoded record
        assert x.dtype == stored.dtype and x.shape == stored.shape == (*job.target, 1)
        assert x.tobytes() == stored.tobytes(), record["case_id"]
        as_float = volprep.prepare(image, job.out)[0]  # the default: float32 for the model
        assert as_float.dtype == np.float32 and as_float.tobytes() == stored.astype(np.float32).tobytes()
        assert np.array_equal(info.record.affine, record["affine"]) and list(info.record.shape) == job.target
        assert np.array_equal(info.scan.affine, nib.load(image).affine)
        assert info.scan_orientation == "".join(nib.aff2axcodes(nib.load(image).affine))


# ---------------------------------------------------------------- the way back


def test_identity_model_gives_the_original_mask_everywhere_when_the_window_covers_the_scan(
        jobs: Callable[[str], Job]) -> None:
    job = jobs("none")
    orientations = set()
    for record in job.records:
        image, label = scan_files(job, record)
        _, info = volprep.prepare(image, job.out)
        orientations.add(info.scan_orientation)
        back = volprep.invert(record["label"], info)
        original = mask_of(label)
        assert back.shape == original.shape and np.array_equal(back, original), record["case_id"]
        onehot = np.eye(3, dtype=np.float32)[record["label"]]
        assert np.array_equal(volprep.invert(onehot, info).argmax(axis=-1), original)
    assert {"RAS", "LAS", "LPS", "LSA", "PIR", "RPI"} <= orientations


def test_identity_model_gives_the_original_mask_inside_a_cropping_window(jobs: Callable[[str], Job]) -> None:
    job = jobs("none+ds")
    for record in job.records:
        image, label = scan_files(job, record)
        _, info = volprep.prepare(image, job.out)
        original = mask_of(label)
        inside = nearest_reference(record, image, job.target)[1]
        assert 0.3 < inside.mean() < 1.0  # the window really crops
        for back in (volprep.invert(record["label"], info),
                     volprep.invert(np.eye(3, dtype=np.float32)[record["label"]], info).argmax(axis=-1)):
            assert np.array_equal(back[inside], original[inside]), record["case_id"]
            assert not back[~inside].any()  # background outside the window


@pytest.mark.parametrize("name", ["downsample", "resample", "downsample+ds", "resample+ds"])
def test_reduced_masks_come_back_within_the_reductions_loss(name: str, jobs: Callable[[str], Job]) -> None:
    job = jobs(name)
    figures = []
    for record in job.records:
        image, label = scan_files(job, record)
        _, info = volprep.prepare(image, job.out)
        back = volprep.invert(record["label"], info)
        if name.startswith("downsample"):  # scan voxels sit a quarter voxel off record voxels
            assert np.array_equal(back, nearest_reference(record, image, job.target)[0][0]), record["case_id"]
        else:  # 2 mm -> 3 mm: a third of the positions lie halfway between two record voxels
            ties = tuple(itertools.product((-1e-6, 1e-6), repeat=3))  # either way, on each axis
            choices = nearest_reference(record, image, job.target, ties)[0]  # type: ignore[arg-type]
            assert np.logical_or.reduce([back == c for c in choices]).all(), record["case_id"]
        original = mask_of(label)
        probabilities = volprep.invert(np.eye(3, dtype=np.float32)[record["label"]], info)
        assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=-1), 1, atol=1e-5)
        inside = nearest_reference(record, image, job.target)[1]  # what the window kept
        assert not back[~inside].any() and (probabilities[~inside] == (1, 0, 0)).all()
        argmax = probabilities.argmax(-1)
        row = [dice(back[inside], original[inside], c) for c in TISSUE] + [
            dice(argmax[inside], original[inside], c) for c in TISSUE]
        figures.append(row)
        assert min(row) >= DICE_FLOOR, (record["case_id"], row)
        if name == "downsample" and job.target == JOBS["downsample"][1]:  # the window covers the scan
            canonical = nib.as_closest_canonical(nib.load(label))
            truth = np.asanyarray(canonical.dataobj)
            repeated = oracle.block_majority(truth, 2).repeat(2, 0).repeat(2, 1).repeat(2, 2)
            reference = np.zeros_like(truth)
            n = [min(a, b) for a, b in zip(truth.shape, repeated.shape, strict=True)]
            reference[:n[0], :n[1], :n[2]] = repeated[:n[0], :n[1], :n[2]]
            for c in TISSUE:  # the loss is the reduction's own, nothing added on the way back
                assert abs(dice(back, original, c) - dice(reference, truth, c)) < 1e-9
                assert abs(dice(back, original, c) - row[c - 1]) < 1e-9  # the window covers the scan
    low = np.min(figures, axis=0)
    print(f"\n{name}: min Dice grey/white labels {low[0]:.4f}/{low[1]:.4f}, probabilities {low[2]:.4f}/{low[3]:.4f}")


# ---------------------------------------------------------------- the command line


def test_cli_prepare_then_invert_writes_the_scans_grid(jobs: Callable[[str], Job], tmp_path: Path) -> None:
    job = jobs("downsample")
    chosen = [r for r in job.records if r["case_id"].decode() in ("tissue_03", "tissue_06")]
    images = [scan_files(job, r)[0] for r in chosen]
    assert main(["prepare", *map(str, images), "--like", str(job.out), "--save", str(tmp_path / "in")]) == 0
    for record, image in zip(chosen, images, strict=True):
        stem = record["case_id"].decode()
        x = np.load(tmp_path / "in" / f"{stem}.npy")
        info = read_info(tmp_path / "in" / f"{stem}.json")
        assert x.tobytes() == record["image"].astype(np.float32).tobytes()
        np.save(tmp_path / f"{stem}-labels.npy", record["label"])
        np.save(tmp_path / f"{stem}-probs.npy", np.eye(3, dtype=np.float32)[record["label"]])
        scan = nib.load(image)
        for kind in ("labels", "probs"):
            saved = tmp_path / f"{stem}-{kind}.nii.gz"
            assert main(["invert", str(tmp_path / f"{stem}-{kind}.npy"), "--info",
                         str(tmp_path / "in" / f"{stem}.json"), "--save", str(saved)]) == 0
            written = nib.load(saved)
            assert np.array_equal(written.affine, scan.affine)
            in_memory = volprep.invert(np.load(tmp_path / f"{stem}-{kind}.npy"), info)
            assert np.array_equal(np.asanyarray(written.dataobj), in_memory)
            assert written.shape == in_memory.shape and written.shape[:3] == scan.shape


def test_invert_save_true_writes_beside_the_scan(jobs: Callable[[str], Job], tmp_path: Path) -> None:
    job = jobs("none")
    record = job.records[0]
    image, label = scan_files(job, record)
    local = tmp_path / image.name
    local.symlink_to(image)
    _, info = volprep.prepare(local, job.out)
    back = volprep.invert(record["label"], info, save=True)
    written = nib.load(tmp_path / f"{record['case_id'].decode()}_pred.nii.gz")
    assert np.array_equal(written.affine, nib.load(image).affine)
    assert np.array_equal(np.asanyarray(written.dataobj), back) and np.array_equal(back, mask_of(label))


def test_the_readme_example_runs(jobs: Callable[[str], Job], tmp_path: Path) -> None:
    """README "Segmentation: predict a new scan", with an identity model on a "none" job."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Segmentation: predict a new scan"):]
    snippet = section[section.index("```python\n") + 10:section.index("```\n", section.index("```python"))]
    job = jobs("none")
    record = job.records[0]
    image, label = scan_files(job, record)

    class Model:  # the record's own mask, one-hot: what a perfect model would say
        def predict(self, batch: np.ndarray) -> np.ndarray:
            assert batch.shape == (1, *job.target, 1) and batch.dtype == np.float32
            return np.eye(3, dtype=np.float32)[record["label"]][None]

    snippet = snippet.replace('"new/scan.nii.gz"', repr(str(image))).replace('"shards/brain"', repr(str(job.out)))
    snippet = snippet.replace('"new/scan_seg.nii.gz"', repr(str(tmp_path / "seg.nii.gz")))
    scope: dict[str, Any] = {"model": Model()}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert np.array_equal(scope["seg"], mask_of(label))
    written = nib.load(tmp_path / "seg.nii.gz")
    assert np.array_equal(written.affine, nib.load(image).affine)
    assert np.array_equal(np.asanyarray(written.dataobj), mask_of(label))
