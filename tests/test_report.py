"""Tests for volprep.report: the PNG/HTML report of a shard folder.

The shard folder is built here by hand (records encoded with ``volprep.records``, a
complete manifest and a plan dict shaped like the runner's), so these tests do not run the
pipeline. The manifest is read back typed (``read_manifest``); a test that changes it
edits its JSON and reads it back (:func:`rewrite`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pywt
from test_summary import typed

from volprep.manifest import FORMAT_VERSION, Manifest, read_manifest
from volprep.records import encode_example, frame_record
from volprep.report import FIGURES, read_samples, write_report
from volprep.report_montage import plot_montage
from volprep.report_select import MontageRow, choose_montage, take_slices
from volprep.schema import Feature
from volprep.summary import human_size, inspect_text

SHAPE = (16, 20, 24)
CLASSES = ["healthy", "small", "large"]
# case -> (split, class id); train: healthy 3, small 2, large 1; val: one of each
CASES = {
    "c00": ("train", 0), "c01": ("train", 0), "c02": ("train", 0),
    "c03": ("train", 1), "c04": ("train", 1), "c05": ("train", 2),
    "c06": ("val", 0), "c07": ("val", 1), "c08": ("val", 2),
}
COPIES = {"c03": [1], "c04": [1], "c05": [1, 2]}  # train balanced to 3 a class


def phantom(case: str, copy: int, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ellipsoid (label 1) with a core (label 2) whose size follows the class."""
    seed = int(case[1:])
    rng = np.random.default_rng([seed, copy])
    cls = CASES[case][1]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij"), -1)
    centre = np.array(SHAPE, np.float32) / 2 + rng.uniform(-2, 2, 3)
    r = np.sqrt((((grid - centre) / (np.array(SHAPE) / 3.2)) ** 2).sum(-1))
    mask = np.zeros(SHAPE, np.uint8)
    mask[r < 1.0] = 1
    if cls:
        mask[r < 0.25 + 0.2 * cls] = 2
    image = np.stack([
        np.where(mask > 0, 1.0 + 0.8 * mask, -1.0) + rng.normal(0, 0.25, SHAPE) + 0.3 * c
        for c in range(channels)
    ], -1).astype(np.float32)
    if copy:
        image, mask = image[::-1], mask[::-1]
        image = image * 1.2 + 0.1
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def augment_json(copy: int) -> str:
    if not copy:
        return ""
    return json.dumps({"shape": list(SHAPE), "flips": [0], "intensity_scale": 1.2, "intensity_shift": 0.1,
                       "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "translation": [0, 0, 0]})


def record(case: str, copy: int, channels: int, **values: Any) -> bytes:
    """One framed record of the phantom, every feature as the converter writes it; ``values``
    replace features (``None`` leaves one out)."""
    image, mask = phantom(case, copy, channels)
    fields = {"image": image.astype("<f2").tobytes(), "mask": mask.tobytes(), "label": CASES[case][1],
              "case_id": case, "copy": copy, "augment": augment_json(copy),
              "affine": np.eye(4).astype("<f8").tobytes()}
    fields.update(values)
    return frame_record(encode_example({k: v for k, v in fields.items() if v is not None}))


def rewrite(root: Path, data: dict[str, Any]) -> Manifest:
    """Writes a changed manifest's JSON and reads it back, as the report does."""
    (root / "manifest.json").write_text(json.dumps(data))
    return read_manifest(root)


def make_folder(root: Path, *, channels: int = 2, with_plan: bool = True,
                failures: int = 2) -> Manifest:
    """Writes shards, manifest.json, plan.json, failures.csv; returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for case, (split, _) in sorted(CASES.items()):
        records[split].append((case, 0))
        records[split].extend((case, k) for k in COPIES.get(case, []))
    records["train"].sort(key=lambda r: hashlib.sha256(f"{r}".encode()).hexdigest())  # a shuffle
    cuts = {"train": [records["train"][:6], records["train"][6:]], "val": [records["val"]]}
    splits: dict[str, Any] = {}
    for split, parts in cuts.items():
        shards = []
        for i, part in enumerate(parts):
            name = f"{split}-{i:05d}-of-{len(parts):05d}.tfrecord"
            blob = b"".join(record(case, copy, channels) for case, copy in part)
            (root / name).write_bytes(blob)
            shards.append({"file": name, "num_records": len(part), "num_bytes": len(blob),
                           "sha256": hashlib.sha256(blob).hexdigest()})
        splits[split] = {"num_records": sum(len(p) for p in parts),
                         "num_originals": sum(1 for p in parts for _, k in p if k == 0), "shards": shards}
    fail = [{"case": f"bad{i}", "path": f"/data/imagesTr/bad{i}.nii.gz",
             "error": "header claims 9.1 GiB, more than read.max_bytes 4.0 GiB"} for i in range(failures)]
    manifest = {
        "format_version": FORMAT_VERSION, "volprep_version": "0.1.0",
        "dataset": {"name": "Task99_Phantom", "layout": "msd", "num_cases": 9 + failures,
                    "label_names": {"0": "background", "1": "organ", "2": "lesion"}},
        "features": {
            "image": {"dtype": "float16", "shape": [*SHAPE, channels], "encoding": "raw"},
            "mask": {"dtype": "uint8", "shape": list(SHAPE), "encoding": "raw"},
            "label": {"dtype": "int64", "shape": [], "encoding": "int64"},
            "case_id": {"dtype": "string", "shape": [], "encoding": "bytes"},
            "copy": {"dtype": "int64", "shape": [], "encoding": "int64"},
            "augment": {"dtype": "string", "shape": [], "encoding": "bytes"},
            "affine": {"dtype": "float64", "shape": [4, 4], "encoding": "raw"},
        },
        "splits": splits,
        "classes": {"names": CLASSES, "ids": [0, 1, 2], "class_by": "label", "counts_before": {"healthy": 3, "small": 2, "large": 1},
                    "counts_after": {"healthy": 3, "small": 4, "large": 3},
                    "per_split": {"train": {"healthy": 3, "small": 2, "large": 1},
                                  "val": {"healthy": 1, "small": 1, "large": 1}}},
        "normalization": {"method": "zscore", "dataset_stats": None},
        "fidelity": {"num_cases": 9, "psnr": {"min": 38.5, "median": 41.25}, "ssim": {"min": 0.97, "median": 0.985}},
        "target_shape": list(SHAPE),
        "notes": ["target_shape planned from the dataset (median after reduction): [16, 20, 24]"],
        "case_notes": {},
        "failures": fail,
        "config": {"job": {"seed": 0, "splits": {"train": 0.7, "val": 0.3}, "shard_size_mb": 64},
                   "preprocess": {"reduce": "downsample", "normalize": "zscore", "dtype": "float16"}},
        "seed": 0,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    (root / "failures.csv").write_text("case,path,error\n" + "".join(
        f"{f['case']},{f['path']},{f['error']}\n" for f in fail))
    if with_plan:
        plan = {
            "explanation": ["Target: 3 train records per class, the count of the majority class 'healthy'."],
            "version": 1, "seed": 0, "classes": CLASSES, "class_ids": [0, 1, 2],
            "splits": {s: sorted(c for c, (sp, _) in CASES.items() if sp == s) for s in ("train", "val")},
            "case_class": {c: k for c, (_, k) in CASES.items()}, "class_by": "label", "target": 3,
            "counts_before": manifest["classes"]["counts_before"], "counts_after": manifest["classes"]["counts_after"],
            "per_split_counts": manifest["classes"]["per_split"],
            "copies": {c: [{"copy": k, "seed": [0, c, k], "params": json.loads(augment_json(k))} for k in ks]
                       for c, ks in COPIES.items()},
            "notes": [],
        }
        (root / "plan.json").write_text(json.dumps(plan, indent=1))
    typed(manifest)  # complete: nothing left to a default
    return read_manifest(root)


def fake_result(root: Path, manifest: Manifest) -> SimpleNamespace:
    failures = [SimpleNamespace(case=f.case, path=f.path, error=f.error,
                                line=lambda f=f: f"case {f.case}: {f.path}: {f.error}") for f in manifest.failures]
    return SimpleNamespace(out_dir=root, exit_code=3 if failures else 0, manifest=manifest, failures=failures,
                           cases_found=11, cases_converted=9, cases_reused=4,
                           timings={"discover": 0.01, "convert": 2.5, "write": 1.25}, notes=[])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("shards")
    return root, make_folder(root)


def test_choose_montage_prefers_cases_with_copies(folder: tuple[Path, Manifest]) -> None:
    root, manifest = folder
    plan = json.loads((root / "plan.json").read_text())
    rows = choose_montage(manifest, plan, per_class=2, copies=2)
    assert [r.case_id for r in rows] == ["c00", "c01", "c03", "c04", "c05", "c08"]
    assert {r.case_id: r.copies for r in rows}["c05"] == (1, 2)
    assert {r.case_id: r.copies for r in rows}["c03"] == (1,)
    assert {r.case_id: r.class_name for r in rows}["c08"] == "large"
    assert choose_montage(manifest, plan, per_class=1, copies=1, max_classes=2) == [
        MontageRow("c00", "train", "healthy", ()), MontageRow("c03", "train", "small", (1,))]
    # the manifest lists its classes in another order: names follow the ids, not the positions
    classes = dataclasses.replace(manifest.classes, names=("large", "healthy", "small"), ids=(2, 0, 1))
    rows = choose_montage(dataclasses.replace(manifest, classes=classes), plan, per_class=1, copies=1)
    assert rows == [MontageRow("c05", "train", "large", (1,)), MontageRow("c00", "train", "healthy", ()),
                    MontageRow("c03", "train", "small", (1,))]


def test_read_samples_reads_what_is_needed_and_stops(folder: tuple[Path, Manifest]) -> None:
    root, manifest = folder
    rows = [MontageRow("c05", "train", "large", (2,))]
    back = read_samples(root, manifest, rows, hist_records=1)
    assert set(back.samples) == {("c05", 0), ("c05", 2)}
    assert back.records_read < manifest.splits["train"].num_records + manifest.splits["val"].num_records
    copy = back.samples[("c05", 2)]
    assert copy.slices is not None and copy.slices.masks is not None
    assert json.loads(copy.augment)["flips"] == [0]
    assert {k for k, _ in back.voxels} == {"train", "val"}
    assert back.voxels[("train", True)][0].shape[0] == 2  # two channels sampled


def test_the_montage_slices_are_the_records_decoded_by_the_schema(folder: tuple[Path, Manifest]) -> None:
    root, manifest = folder
    back = read_samples(root, manifest, [MontageRow("c05", "train", "large", (1,))], hist_records=0)
    for copy in (0, 1):
        image, mask = phantom("c05", copy)
        image = image.astype(np.float16).astype(np.float32)[..., 0]  # what the record holds, channel 0
        slices = back.samples[("c05", copy)].slices
        assert slices is not None and slices.masks is not None
        k, j, i = slices.index["axial"], slices.index["coronal"], slices.index["sagittal"]
        for view, plane, label in (("axial", image[:, :, k], mask[:, :, k]), ("coronal", image[:, j, :], mask[:, j, :]),
                                   ("sagittal", image[i], mask[i])):
            np.testing.assert_array_equal(slices.views[view], plane)
            np.testing.assert_array_equal(slices.masks[view], label)
        assert back.samples[("c05", copy)].spacing == (1.0, 1.0, 1.0)


def test_take_slices_go_through_the_smallest_label() -> None:
    image = np.zeros((16, 20, 24, 1), np.float32)
    mask = np.zeros((16, 20, 24), np.uint8)
    mask[1:15, 1:19, 1:23] = 1  # an organ around
    mask[3:6, 14:17, 2:5] = 2  # a small lesion off its centre
    mask[4, 14, 2] = 3  # a single voxel: the smallest structure
    s = take_slices(image, mask)
    assert s.index == {"axial": 2, "coronal": 14, "sagittal": 4}
    mask[4, 14, 2] = 2
    s = take_slices(image, mask)
    assert s.index == {"axial": 3, "coronal": 15, "sagittal": 4}  # middle of the lesion's planes
    assert s.views["axial"].shape == (16, 20) and s.views["sagittal"].shape == (20, 24)
    assert s.masks is not None and (s.masks["axial"] == 2).sum() == 9
    assert take_slices(image, None).index == {"axial": 12, "coronal": 10, "sagittal": 8}


def test_write_report_makes_pngs_summary_and_index(folder: tuple[Path, Manifest]) -> None:
    import matplotlib.image

    root, manifest = folder
    index = write_report(root, fake_result(root, manifest))
    assert index == root / "report" / "index.html"
    for name in FIGURES:
        width, height = png_size(root / "report" / name)
        assert 400 <= width <= 4000 and 200 <= height <= 4000, (name, width, height)
        pixels = matplotlib.image.imread(root / "report" / name)
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
    page = index.read_text()
    for name in FIGURES:
        assert f'src="{name}"' in page
    summary = (root / "report" / "summary.txt").read_text()
    assert "9 converted (4 reused from cache), 2 failed" in summary
    assert "case bad0: /data/imagesTr/bad0.nii.gz" in page and "case bad0" in summary
    for link in ("../manifest.json", "../plan.json", "../failures.csv"):
        assert f'href="{link}"' in page
    assert ("<tr><td>bad1</td><td>/data/imagesTr/bad1.nii.gz</td>"
            "<td>header claims 9.1 GiB, more than read.max_bytes 4.0 GiB</td></tr>") in page  # the failures table
    val = manifest.splits["val"].shards[0]
    assert (f"<tr><td>val</td><td>{val.file}</td><td>3</td><td>{human_size(val.num_bytes)}</td>"
            f"<td><code>{val.sha256[:16]}</code></td></tr>") in page  # the shards table
    assert f"format {FORMAT_VERSION} &middot; volprep 0.1.0 &middot; seed 0 &middot;" in page
    assert "<h1>volprep report: Task99_Phantom</h1>" in page
    assert "Target: 3 train records" in page  # the plan's explanation
    assert not list((root / "report").glob(".*.tmp"))


def test_montage_shows_copies_beside_originals(folder: tuple[Path, Manifest], tmp_path: Path) -> None:
    import matplotlib.image

    root, manifest = folder
    rows = [MontageRow("c05", "train", "large", (1, 2))]
    back = read_samples(root, manifest, rows, hist_records=0)
    plot_montage(rows, back.samples, {"1": "organ"}, tmp_path / "with.png")
    plot_montage([MontageRow("c05", "train", "large", ())], back.samples, {}, tmp_path / "without.png")
    with_copies, without = png_size(tmp_path / "with.png"), png_size(tmp_path / "without.png")
    assert with_copies[0] > 2 * without[0]  # 9 panels a row instead of 3
    assert with_copies[1] == without[1]
    pixels = matplotlib.image.imread(tmp_path / "with.png")
    orange = (pixels[..., 0] > 0.9) & (pixels[..., 1] > 0.6) & (pixels[..., 2] < 0.8) & (pixels[..., 1] < 0.85)
    assert orange.sum() > 500  # the lesion (label 2) overlay is drawn


def test_report_without_result_or_plan_uses_inspect_text(tmp_path: Path) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, with_plan=False, failures=0)
    index = write_report(root, per_class=1)
    summary = (root / "report" / "summary.txt").read_text()
    assert summary == inspect_text(manifest, str(root)) + "\n"
    for split in manifest.splits.values():
        for shard in split.shards:
            assert shard.file in summary
    page = index.read_text()
    assert "Every case converted" in page
    assert "(not present)" in page  # plan.json is missing and says so
    for name in FIGURES:
        png_size(root / "report" / name)


def test_report_reads_a_raw_label_volume_and_survives_bad_records(tmp_path: Path) -> None:
    root = tmp_path / "seg"
    data = make_folder(root, channels=1, failures=0).to_dict()
    # a segmentation-only dataset: the mask is the "label" feature; one record is truncated
    data["features"]["label"] = data["features"].pop("mask")
    manifest = rewrite(root, data)
    assert manifest.features.label_volume == "label"
    shard = root / manifest.splits["val"].shards[0].file
    shard.write_bytes(record("c06", 0, 1, image=b"\0" * 8, label=phantom("c06", 0, 1)[1].tobytes(), mask=None)
                      + b"".join(record(c, 0, 1, label=phantom(c, 0, 1)[1].tobytes(), mask=None)
                                 for c in ("c07", "c08")))
    rows = [MontageRow("c06", "val", "healthy", ()), MontageRow("c07", "val", "small", ())]
    back = read_samples(root, manifest, rows)
    assert back.samples[("c06", 0)].slices is None and "bytes" in back.samples[("c06", 0)].problem
    slices = back.samples[("c07", 0)].slices
    assert slices is not None and slices.masks is not None
    np.testing.assert_array_equal(slices.masks["axial"], phantom("c07", 0, 1)[1][:, :, slices.index["axial"]])
    write_report(root, per_class=1, hist_records=2)
    png_size(root / "report" / "montage.png")


def _k_term(channel: np.ndarray, keep: float) -> tuple[np.ndarray, float]:
    """The original reconstructed from its approximation band and its ``K = ceil(keep *
    n_detail)`` largest-magnitude detail coefficients (db2, level 2, periodization), with
    pywt alone: what a "compress" record holds, derived from the volume, not from the
    record. Also returns the int16 quantisation bound on the decoded volume's error.
    """
    coeffs = pywt.wavedecn(channel.astype(np.float64), "db2", mode="periodization", level=2)
    flat, slices = pywt.coeffs_to_array(coeffs)
    approx = np.zeros(flat.shape, bool)
    approx[slices[0]] = True
    details = np.abs(flat[~approx])
    k = math.ceil(keep * details.size)
    kept = approx | (np.abs(flat) >= np.sort(details)[-k])
    assert int(kept.sum()) == approx.sum() + k  # no ties at the threshold
    back = pywt.waverecn(pywt.array_to_coeffs(np.where(kept, flat, 0.0), slices, output_format="wavedecn"),
                         "db2", mode="periodization")
    # Each kept detail is rounded to 1/32767 of its band's peak (at most the largest
    # detail): an error <= step/2 per coefficient, and the transform is orthonormal, so the
    # largest voxel error is at most the L2 norm sqrt(k) * step / 2.
    bound = math.sqrt(k) * float(details.max()) / 32767 / 2
    return back, bound


@pytest.mark.parametrize("keep", [0.25, 1.0])
def test_the_schema_decodes_wavelet_records(keep: float) -> None:
    from volprep.preprocess import wavelet

    original = np.ascontiguousarray(phantom("c05", 0, 2)[0][:16, :16, :16])  # 2 channels
    layout = wavelet.layout(original.shape, "db2", 2, keep)
    feature = Feature("image", "float16", original.shape, "wavelet-compress", layout)
    out = feature.decode([wavelet.encode(original, "db2", 2, keep)])
    assert out.shape == original.shape and out.dtype == np.float32
    for c in range(original.shape[3]):
        expected, bound = _k_term(original[..., c], keep)
        np.testing.assert_allclose(out[..., c], expected, rtol=0, atol=bound)
    span = float(np.ptp(original))
    psnr = 10 * np.log10(span**2 / float(np.mean((out.astype(np.float64) - original) ** 2)))
    if keep == 1.0:
        # every coefficient kept: the original, up to the int16 rounding of the details
        np.testing.assert_allclose(out, original, rtol=0, atol=1e-3 * span)
        assert psnr > 80
    else:
        # A quarter of the details of a noisy phantom: 29.9 dB measured; the approximation
        # band alone gives 17.7 dB. 25 dB leaves room for coding changes, not for losing details.
        assert psnr > 25
    with pytest.raises(ValueError, match="layout"):
        dataclasses.replace(feature, layout=None).decode([b""])


def test_the_report_draws_wavelet_records(tmp_path: Path) -> None:
    from volprep.preprocess import wavelet

    root = tmp_path / "out"
    data = make_folder(root, channels=2, failures=0).to_dict()
    original = phantom("c07", 0, 2)[0]
    data["features"]["image"].update(encoding="wavelet-compress", layout=wavelet.layout(original.shape, "db2", 2, 0.25))
    manifest = rewrite(root, data)
    (root / manifest.splits["val"].shards[0].file).write_bytes(
        record("c07", 0, 2, image=wavelet.encode(original, "db2", 2, 0.25)))
    back = read_samples(root, manifest, [MontageRow("c07", "val", "small", ())], hist_records=0)
    slices = back.samples[("c07", 0)].slices
    assert slices is not None and not [line for line in back.problems if "c07" in line]
    expected, bound = _k_term(original[..., 0], 0.25)  # channel 0, reconstructed with pywt alone
    k = slices.index["axial"]
    np.testing.assert_allclose(slices.views["axial"], expected[:, :, k], rtol=0, atol=bound)


def test_montage_aspect_follows_voxel_spacing() -> None:
    from volprep.report_montage import _aspect

    spacing = (1.0, 2.0, 4.0)  # i, j, k in mm
    assert _aspect(spacing, "axial") == 2.0  # x = i, y = j
    assert _aspect(spacing, "coronal") == 4.0  # x = i, y = k
    assert _aspect(spacing, "sagittal") == 2.0  # x = j, y = k
    assert _aspect(None, "axial") == 1.0


def test_without_a_plan_class_names_follow_the_ids_not_the_positions(tmp_path: Path) -> None:
    root = tmp_path / "out"
    data = make_folder(root, channels=1, with_plan=False, failures=0).to_dict()
    # the same classes listed in another order: names and ids are parallel lists
    data["classes"]["names"], data["classes"]["ids"] = ["large", "healthy", "small"], [2, 0, 1]
    manifest = rewrite(root, data)
    back = read_samples(root, manifest, [], hist_records=0, fallback_per_class=1)
    shown = {case: s.class_name for (case, _), s in back.samples.items()}
    assert shown == {case: CLASSES[CASES[case][1]] for case in shown}
    assert set(shown.values()) == {"healthy", "small", "large"}
    # classes by the rarest mask value: a record's class label is none of them, so the
    # fallback names no class (and lists no problem), and takes the first originals
    data["classes"]["class_by"] = "rarest"
    manifest = rewrite(root, data)
    back = read_samples(root, manifest, [], hist_records=0, fallback_per_class=2)
    assert [s.class_name for s in back.samples.values()] == [None, None] and not back.problems
    assert back.records_read < manifest.splits["train"].num_records  # stops once it has them


def test_montage_spacing_comes_from_each_record_affine(tmp_path: Path) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, failures=0)
    # a rotated grid with voxels of 1 x 2 x 4 mm: the spacing is the affine's column norms
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 2.0, 4.0])
    shard = root / manifest.splits["val"].shards[0].file
    shard.write_bytes(record("c07", 0, 1, affine=affine.astype("<f8").tobytes()))
    back = read_samples(root, manifest, [MontageRow("c07", "val", "small", ())], hist_records=0)
    assert back.samples[("c07", 0)].spacing == pytest.approx((1.0, 2.0, 4.0))
