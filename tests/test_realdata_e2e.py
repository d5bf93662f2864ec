"""Whole jobs on every real-anatomy task (tests/realdata.py), held to invariants.

Each task is converted with the default pipeline (``pipelines/default.toml``, small shards so
a split spans several files) and the report. Nothing here compares volprep with itself:

- the job converts every case the dataset lists (counted from its files, not by volprep),
  and ``volprep verify`` passes;
- plain TensorFlow, given only the manifest's ``features``, parses every record; the
  manifest's record counts (per split, per shard) are what the shards hold, and the train
  class counts ``counts_after`` are a count of the train records by class, a record's
  class being ``plan.json``'s ``case_class`` of its case, named through the manifest's
  classes ``ids``/``names`` by id (ids may be sparse: the atlas has ~650 up to 1605);
- the report wrote its plots and page;
- anatomy: on T1, white matter (label 2) is brighter than grey matter (label 1), which is
  brighter than the rest (label 0). That holds in every record, original or augmented
  copy, and in every online-augmented batch, only if image and mask stay aligned;
- ``crop_foreground`` plans the target from the cropped shapes (smaller than the
  uncropped median) and its records are not mostly padding.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import oracle
import pytest
from test_oracle_e2e import read_records  # the plain-TensorFlow record reader

from volprep.cli import main

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("tissue", "atlas", "aal", "mixed", "grid", "labels255")
SHARD_MB = 0.3  # downsampled records are 0.1-0.4 MB: every train split spans several shards
REPORT_FILES = ("class_counts.png", "montage.png", "histograms.png", "index.html")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ONLINE = {"flip_axes": [0], "rotate_deg": 10, "scale": [0.9, 1.1], "shift_vox": 3}


def default_pipeline(path: Path, extra: str = "") -> Path:
    """``pipelines/default.toml`` with small shards, plus ``extra`` lines under [preprocess]."""
    text = (ROOT / "pipelines" / "default.toml").read_text()
    assert "shard_size_mb = 64" in text and "[preprocess]\n" in text
    text = text.replace("shard_size_mb = 64", f"shard_size_mb = {SHARD_MB}")
    text = text.replace("[preprocess]\n", f"[preprocess]\n{extra}")
    path.write_text(text)
    return path


def data_path(root: Path, task: str) -> Path:
    return root / "mixed" / "mixed.csv" if task == "mixed" else root / task


def listed_cases(root: Path, task: str) -> set[str]:
    """The case ids a task's files list (MSD dataset.json, the CSV, or imagesTr itself)."""
    folder = root / task
    if task == "mixed":
        with open(folder / "mixed.csv", newline="", encoding="utf-8") as f:
            return {row["case_id"] for row in csv.DictReader(f)}
    if (folder / "dataset.json").exists():
        return set(oracle.msd_cases(folder))
    return {p.name.removesuffix(".nii.gz") for p in (folder / "imagesTr").glob("*.nii.gz")}


@dataclasses.dataclass
class Job:
    data: Path
    out: Path
    code: int
    manifest: dict[str, Any]
    plan: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]  # split -> rows, parsed by plain TF


def run_job(data: Path, out: Path, config: Path, report: bool = True) -> Job:
    args = ["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1", "--quiet"]
    code = main(args if report else [*args, "--no-report"])
    manifest = json.loads((out / "manifest.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    records = {split: read_records(out, manifest, split) for split in manifest["splits"]}
    return Job(data, out, code, manifest, plan, records)


@pytest.fixture(scope="module")
def jobs(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Job]:
    """Each task converted once per module with the default pipeline and the report."""
    base = tmp_path_factory.mktemp("realjobs")
    config = default_pipeline(base / "default.toml")
    memo: dict[str, Job] = {}

    def get(task: str) -> Job:
        if task not in memo:
            memo[task] = run_job(data_path(realdata, task), base / task, config)
        return memo[task]

    return get


@pytest.fixture(scope="module")
def tissue_with_classes(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Job:
    """The tissue task with a rare class (labels.csv), so balancing renders augmented copies."""
    base = tmp_path_factory.mktemp("tissue_classes")
    src, data = realdata / "tissue", base / "data"
    data.mkdir()
    for name in ("imagesTr", "labelsTr"):
        (data / name).symlink_to(src / name, target_is_directory=True)
    shutil.copy(src / "dataset.json", data / "dataset.json")
    with open(src / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rare = {"tissue_05", "tissue_06"}  # two single-case subjects: no grouping conflict
    with open(data / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["case_id", "subject", "label"])
        for row in rows:
            writer.writerow([row["case_id"], row["subject"], "rare" if row["case_id"] in rare else "common"])
    return run_job(data, base / "out", default_pipeline(base / "default.toml"))


# ---------------------------------------------------------------- every task


@pytest.mark.parametrize("task", TASKS)
def test_job_converts_every_case_and_verifies(task: str, jobs: Callable[[str], Job],
                                              realdata: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = jobs(task)
    assert job.code == 0
    assert job.manifest["failures"] == []
    converted = {case for cases in job.plan["splits"].values() for case in cases}
    assert converted == listed_cases(realdata, task)
    originals = sum(info.get("num_originals", 0) for info in job.manifest["splits"].values())
    assert originals == len(converted)
    capsys.readouterr()
    assert main(["verify", str(job.out)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("task", TASKS)
def test_manifest_counts_are_what_the_shards_hold(task: str, jobs: Callable[[str], Job]) -> None:
    job = jobs(task)
    m = job.manifest
    image = m["features"]["image"]
    if task != "grid":  # grid has two cases: one record a split
        assert len(m["splits"]["train"]["shards"]) > 1, "small shards: the train split spans several files"
    for split, info in m["splits"].items():
        rows = job.records[split]
        assert len(rows) == info["num_records"] == sum(s["num_records"] for s in info["shards"])
        for shard in info["shards"]:
            one = {"splits": {split: {"shards": [shard]}}, "features": m["features"]}
            assert len(read_records(job.out, one, split)) == shard["num_records"], shard["file"]
        assert {r["case_id"].decode() for r in rows if r["copy"] == 0} == set(job.plan["splits"][split])
        for row in rows:
            assert row["image"].shape == tuple(image["shape"])
            assert np.isfinite(row["image"].astype(np.float32)).all()
            assert (row["copy"] == 0) == (row["augment"] == b"")
            if split != "train":
                assert row["copy"] == 0


@pytest.mark.parametrize("task", TASKS)
def test_counts_after_are_the_train_records_by_class_id(task: str, jobs: Callable[[str], Job]) -> None:
    job = jobs(task)
    classes = job.manifest["classes"]
    name_of = dict(zip(classes["ids"], classes["names"], strict=True))  # by id, never by position
    held: dict[str, int] = {}
    for row in job.records["train"]:
        class_id = job.plan["case_class"][row["case_id"].decode()]
        held[name_of[class_id]] = held.get(name_of[class_id], 0) + 1
        if job.manifest["features"].get("label", {}).get("encoding") == "int64" and classes["class_by"] == "label":
            assert int(row["label"]) == class_id
    assert held == {name: n for name, n in classes["counts_after"].items() if n}


@pytest.mark.parametrize("task", TASKS)
def test_report_is_written(task: str, jobs: Callable[[str], Job]) -> None:
    report = jobs(task).out / "report"
    for name in REPORT_FILES:
        path = report / name
        assert path.is_file() and path.stat().st_size > 0, f"{task}: no report/{name}"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_MAGIC, path
    html = (report / "index.html").read_text(encoding="utf-8")
    assert all(name in html for name in REPORT_FILES if name.endswith(".png"))


def test_sparse_atlas_labels_survive(jobs: Callable[[str], Job]) -> None:
    """Atlas: hundreds of sparse ids up to 1605, stored int16, every case converted."""
    job = jobs("atlas")
    mask = job.manifest["features"]["label"]
    assert mask["dtype"] == "int16" and mask["encoding"] == "deflate"  # label volumes: deflated by default
    values = set()
    for rows in job.records.values():
        for row in rows:
            values |= {int(v) for v in np.unique(row["label"])}
    assert max(values) > 255 and len(values) > 100
    assert max(job.manifest["classes"]["ids"]) > 1000


def test_a_mask_holding_255_converts(jobs: Callable[[str], Job]) -> None:
    job = jobs("labels255")
    assert job.manifest["failures"] == []
    assert 255 in job.manifest["classes"]["ids"]
    values = set()
    for rows in job.records.values():
        for row in rows:
            values |= {int(v) for v in np.unique(row["label"])}
    assert 255 in values


# ---------------------------------------------------------------- anatomy stays on its labels


# (mean over white matter - mean over grey matter) / std over both, in a record. Measured:
# originals 1.60-1.62; augmented copies and online batches 1.39-1.42 (interpolation blurs
# the boundary a little); a mask left behind by the transform 0.27-0.92 (the order of the
# means alone survives that: white matter is a big blob that mostly overlaps itself).
MIN_WM_GM_CONTRAST = 1.0


def _assert_tissue_order(image: np.ndarray, mask: np.ndarray, what: str) -> None:
    """Mean intensity over white matter > grey matter > everything else, and white matter
    stands clear of grey matter (image and mask aligned to well under a voxel)."""
    values = image[..., 0]
    means = [float(values[mask == k].mean()) for k in (0, 1, 2)]
    assert means[2] > means[1] > means[0], f"{what}: mean over labels 0, 1, 2 = {np.round(means, 3).tolist()}"
    contrast = (means[2] - means[1]) / float(values[mask > 0].std())
    assert contrast >= MIN_WM_GM_CONTRAST, f"{what}: white/grey matter contrast {contrast:.3f} (misaligned mask?)"


def test_tissue_records_keep_anatomy_on_its_labels(jobs: Callable[[str], Job]) -> None:
    job = jobs("tissue")
    for split, rows in job.records.items():
        for row in rows:
            _assert_tissue_order(row["image"].astype(np.float32), row["label"], f"{split} {row['case_id']!r}")


def test_augmented_copies_keep_anatomy_on_its_labels(tissue_with_classes: Job) -> None:
    job = tissue_with_classes
    assert job.code == 0
    rows = job.records["train"]
    copies = [row for row in rows if row["copy"] > 0]
    assert copies, "the rare class got no augmented copies"
    for row in rows:
        _assert_tissue_order(row["image"].astype(np.float32), row["mask"],
                             f"{row['case_id']!r} copy {int(row['copy'])} {row['augment'][:80]!r}")
    # The copies differ from their originals (the invariant is not checked on originals twice).
    originals = {row["case_id"]: row for row in rows if row["copy"] == 0}
    for row in copies:
        if row["case_id"] in originals:
            assert not np.array_equal(row["mask"], originals[row["case_id"]]["mask"])


def test_online_augmented_batches_keep_anatomy_on_its_labels(jobs: Callable[[str], Job]) -> None:
    import volprep

    job = jobs("tissue")
    kwargs = {"split": "train", "batch_size": 2, "shuffle": False, "deterministic": True, "target": "mask"}
    plain = [(x.numpy(), y.numpy()) for x, y in volprep.load(job.out, **kwargs)]
    augmented = [(x.numpy(), y.numpy()) for x, y in volprep.load(
        job.out, augment=volprep.Augment(**ONLINE), seed=0, **kwargs)]
    assert len(augmented) == len(plain) > 0
    changed = 0
    for step, ((images, masks), (before, _)) in enumerate(zip(augmented, plain, strict=True)):
        for i in range(images.shape[0]):
            _assert_tissue_order(images[i], masks[i], f"online batch {step} item {i}")
        changed += int(not np.allclose(images, before))
    assert changed, "online augmentation changed no batch"


# ---------------------------------------------------------------- crop_foreground


def _uncropped_median(folder: Path, factor: int = 2) -> np.ndarray:
    """Median RAS shape after a 2x downsample, from the NIfTI headers (nibabel alone)."""
    shapes = []
    for path in sorted((folder / "imagesTr").glob("*.nii.gz")):
        shape = nib.as_closest_canonical(nib.load(path)).shape[:3]
        shapes.append([n // factor if n >= factor else n for n in shape])
    return np.median(np.array(shapes, dtype=np.float64), axis=0)


def test_crop_foreground_plans_the_target_from_cropped_shapes(realdata: Path, tmp_path: Path) -> None:
    config = default_pipeline(tmp_path / "crop.toml", "crop_foreground = true\n")
    job = run_job(realdata / "tissue", tmp_path / "out", config)
    assert job.code == 0
    target = np.array(job.manifest["target_shape"])
    median = _uncropped_median(realdata / "tissue")
    assert (target <= np.round(median)).all() and target.prod() < 0.9 * median.prod(), (
        f"target {target.tolist()} vs uncropped median {median.tolist()}")
    for rows in job.records.values():
        for row in rows:
            image = row["image"].astype(np.float32)
            padding = float((image == image.min()).mean())
            assert padding < 0.3, f"{row['case_id']!r}: {padding:.0%} of the record is at its minimum"
