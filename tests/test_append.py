"""Append, not rewrite: a grown dataset adds a generation of shards, the published ones stay.

Real jobs through the command line's ``main`` on the demo data (24 cases, then 30):
the first generation's files keep their bytes and modification times, the manifest lists
both generations and counts every case, old cases keep their splits, and what is read
back comes from an independent route (TensorFlow's own TFRecord parser and the TF-free
reader), checked against the plan. Removed or changed cases refuse in one line each with
exit status 2; ``--rebuild`` rewrites.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import pipeline_toml

import volprep
from volprep.balance import append_copies, copy_budget
from volprep.cli import main
from volprep.config import BalanceConfig
from volprep.manifest import Manifest
from volprep.readers import Reader
from volprep.verify import verify

SHAPE = (32, 32, 20)


def _run(data: Path, out: Path, config: Path, *extra: str) -> int:
    return main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report", *extra])


def _msd_subset(src: Path, dst: Path, keep: set[str]) -> None:
    """Copies an MSD demo dataset (keeping mtimes) with only the cases in ``keep``."""
    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(exist_ok=True)
        for path in (src / sub).glob("*.nii.gz"):
            if path.name.removesuffix(".nii.gz") in keep and not (dst / sub / path.name).exists():
                shutil.copy2(path, dst / sub / path.name)
    index = json.loads((src / "dataset.json").read_text())
    index["training"] = [t for t in index["training"] if Path(t["image"]).name.removesuffix(".nii.gz") in keep]
    index["numTraining"] = len(index["training"])
    (dst / "dataset.json").write_text(json.dumps(index))
    lines = (src / "labels.csv").read_text().splitlines(keepends=True)
    (dst / "labels.csv").write_text("".join([lines[0], *(x for x in lines[1:] if x.split(",")[0] in keep)]))


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _files(out: Path) -> dict[str, tuple[str, int]]:
    """Every ``*.tfrecord`` in OUT: ``{name: (sha256, mtime_ns)}`` (hashed here, not taken from the manifest)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(out.glob("*.tfrecord"))}


def _records_tf(out: Path, files: list[str]) -> list[tuple[str, int]]:
    """``(case_id, copy)`` of every record of the files, parsed by TensorFlow itself."""
    import tensorflow as tf

    spec = {"case_id": tf.io.FixedLenFeature([], tf.string), "copy": tf.io.FixedLenFeature([], tf.int64)}
    rows = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset([str(out / f) for f in files])]
    return [(r["case_id"].numpy().decode(), int(r["copy"])) for r in rows]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _expected(plan: dict, split: str) -> Counter[tuple[str, int]]:
    """The records a split must hold by the plan: every original, and train copies."""
    want: Counter[tuple[str, int]] = Counter((c, 0) for c in plan["splits"][split])
    if split == "train":
        want.update((c, int(k["copy"])) for c, copies in plan["copies"].items() for k in copies)
    return want


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """24 demo cases converted, then 6 more: the outputs of both jobs and what they left."""
    from volprep.demo import write_demo

    root = tmp_path_factory.mktemp("append")
    big = write_demo(root / "big", n_cases=30, shape=SHAPE, seed=3)
    ids = sorted(p.name.removesuffix(".nii.gz") for p in (big / "imagesTr").glob("*.nii.gz"))
    data, out = root / "data", root / "out"
    config = pipeline_toml(root / "pipeline.toml")
    _msd_subset(big, data, set(ids[:24]))
    assert _run(data, out, config) == 0
    first = {"manifest": _manifest(out), "plan": json.loads((out / "plan.json").read_text()), "files": _files(out)}
    _msd_subset(big, data, set(ids))
    code = _run(data, out, config)
    return {"data": data, "out": out, "config": config, "ids": ids, "first": first, "code": code,
            "manifest": _manifest(out), "plan": json.loads((out / "plan.json").read_text())}


def test_the_first_generation_is_kept_byte_for_byte(grown: dict) -> None:
    assert grown["code"] == 0
    out, first = grown["out"], grown["first"]
    old_names = {s["file"] for info in first["manifest"]["splits"].values() for s in info["shards"]}
    assert old_names == set(first["files"])
    now = _files(out)
    assert {n: now[n] for n in old_names} == {n: first["files"][n] for n in old_names}  # sha256 and mtime_ns
    listed = {s["file"]: s for info in grown["manifest"]["splits"].values() for s in info["shards"]}
    assert old_names < set(listed)
    for name in old_names:  # still listed, with the entry it had (generation 0 is not written)
        before = next(s for info in first["manifest"]["splits"].values() for s in info["shards"] if s["file"] == name)
        assert listed[name] == before and "generation" not in before
    new_names = set(listed) - old_names
    assert new_names and all(listed[n]["generation"] == 1 for n in new_names)
    assert set(now) == set(listed)  # nothing retired: no generation was replaced


def test_the_manifest_counts_every_case_and_old_cases_keep_their_splits(grown: dict) -> None:
    manifest, plan, first = grown["manifest"], grown["plan"], grown["first"]
    assert manifest["dataset"]["num_cases"] == 30 and len(manifest["cases"]) == 30
    assert sum(info["num_originals"] for info in manifest["splits"].values()) == 30
    old = {c: s for s, ids in first["plan"]["splits"].items() for c in ids}
    now = {c: s for s, ids in plan["splits"].items() for c in ids}
    assert len(old) == 24 and {c: now[c] for c in old} == old
    assert set(now) == set(grown["ids"])
    # the copies already written are kept exactly; only new cases get new copies
    assert {c: plan["copies"][c] for c in first["plan"]["copies"]} == first["plan"]["copies"]
    assert set(plan["copies"]) - set(first["plan"]["copies"]) <= set(grown["ids"][24:])


def test_each_split_reads_back_whole_and_new_shards_hold_only_new_cases(grown: dict) -> None:
    out, manifest, plan = grown["out"], grown["manifest"], grown["plan"]
    new_ids = set(grown["ids"][24:])
    for split, info in manifest["splits"].items():
        shards = info["shards"]
        records = _records_tf(out, [s["file"] for s in shards])
        assert Counter(records) == _expected(plan, split)
        assert len(records) == info["num_records"]
        new_records = _records_tf(out, [s["file"] for s in shards if s.get("generation") == 1])
        assert {c for c, _ in new_records} <= new_ids
        # globally shuffled among themselves: not in case order across the generation
        if len(new_records) > 3:
            assert new_records != sorted(new_records)
        reader = Reader(out, split)  # the TF-free reader reads the manifest's generations too
        assert len(reader) == info["num_records"]
        rows = [reader.record(i, ["case_id", "copy"]) for i in range(len(reader))]
        assert Counter((_text(r["case_id"]), int(r["copy"])) for r in rows) == _expected(plan, split)


def test_the_loader_yields_every_record_and_verify_passes(grown: dict) -> None:
    out, manifest = grown["out"], grown["manifest"]
    for split, info in manifest["splits"].items():
        ds = volprep.load(out, split=split, batch_size=4, shuffle=False, drop_remainder=False)
        assert sum(int(x.shape[0]) for x, _ in ds) == info["num_records"]
    assert verify(out) == []
    assert main(["verify", str(out)]) == 0


def test_the_train_split_stays_within_the_balance_goal(grown: dict) -> None:
    plan, manifest = grown["plan"], grown["manifest"]
    train = plan["splits"]["train"]
    copies = sum(len(plan["copies"].get(c, [])) for c in train)
    budget = copy_budget(len(train), manifest["config"]["balance"]["max_augmented_fraction"])
    assert budget is None or copies <= budget
    by_class = Counter(plan["case_class"][c] for c in train)
    target = max(by_class.values())
    names = dict(zip(plan["class_ids"], plan["classes"], strict=True))
    for cls, n in by_class.items():
        extra = sum(len(plan["copies"].get(c, [])) for c in train if plan["case_class"][c] == cls)
        assert manifest["classes"]["counts_after"][names[int(cls)]] == n + extra
        new_copies = sum(len(plan["copies"].get(c, [])) for c in train
                         if plan["case_class"][c] == cls and c not in grown["first"]["plan"]["copies"])
        # new copies never push a class past the target
        assert new_copies == 0 or n + extra <= target
        # and are what the rule gives, computed here: the class's gap to the target after the
        # copies already written, at most max_copies_per_case a new train case
        old_copies = extra - new_copies
        new_cases = sum(1 for c in train if plan["case_class"][c] == cls and c in set(grown["ids"][24:]))
        per_case = manifest["config"]["balance"]["max_copies_per_case"]
        assert new_copies == max(0, min(target - n - old_copies, new_cases * per_case))
    assert sum(len(v) for c, v in plan["copies"].items() if c in set(grown["ids"][24:])) > 0  # the case above is met
    assert any(line.startswith("Appended generation 1") for line in plan["explanation"])


def test_a_rerun_with_nothing_new_writes_no_shard(grown: dict) -> None:
    out = grown["out"]
    before, manifest = _files(out), (out / "manifest.json").read_bytes()
    assert _run(grown["data"], out, grown["config"]) == 0
    assert _files(out) == before
    assert (out / "manifest.json").read_bytes() == manifest


def test_append_copies_plans_new_cases_from_the_updated_counts() -> None:
    balance = BalanceConfig(enabled=True, max_copies_per_case=4, max_augmented_fraction=1.0)
    # class 0: 10 originals; class 1: 4 old (+6 copies written) and 2 new -> target 10, 12 - 10 = 0 wanted
    assert append_copies({0: 10, 1: 6}, {1: 6}, {1: ["b5", "b4"]}, balance) == {"b4": 0, "b5": 0}
    # class 1: 4 old + 2 copies written, 2 new: wants 10 - 6 - 2 = 2, one each
    assert append_copies({0: 10, 1: 6}, {1: 2}, {1: ["b4", "b5"]}, balance) == {"b4": 1, "b5": 1}
    # capped per new case
    assert append_copies({0: 20, 1: 2}, {}, {1: ["b1"]}, balance) == {"b1": 4}
    # the global budget of the grown split, less what is written: 0.2 of 12 originals allows 3
    capped = BalanceConfig(enabled=True, max_copies_per_case=4, max_augmented_fraction=0.2)
    assert append_copies({0: 10, 1: 2}, {1: 2}, {1: ["b1"]}, capped) == {"b1": 1}
    assert append_copies({0: 10, 1: 2}, {1: 3}, {1: ["b1"]}, capped) == {"b1": 0}


def test_a_manifest_without_generations_still_reads() -> None:
    """Manifests written before appends existed: no ``generation``, ``cases`` or ``record_spec``."""
    from volprep.schema import Schema

    schema = Schema.for_records(target_shape=(4, 4, 4), channels=1, image_dtype="float16", image_encoding="raw",
                                label_kind="none", mask_dtype="uint8")
    data = {"format_version": 2, "features": schema.to_dict(), "failures": [], "config": {}, "seed": 0,
            "classes": {}, "splits": {"train": {"num_records": 1, "shards": [
                {"file": "train-0000abcd-00000-of-00001.tfrecord", "num_records": 1, "num_bytes": 9, "sha256": "0"}]}}}
    manifest = Manifest.from_dict(data)
    assert manifest.splits["train"].shards[0].generation == 0
    assert manifest.cases == {} and manifest.record_spec == ""


@pytest.fixture()
def published(demo_data: Path, pipeline: Path, tmp_path: Path) -> tuple[Path, Path]:
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(demo_data, data, copy_function=shutil.copy2)
    assert _run(data, out, pipeline) == 0
    return data, out


def _refused(data: Path, out: Path, pipeline: Path) -> list[str]:
    """Runs the real console command; it must refuse with exit 2 and change nothing."""
    before, manifest = _files(out), (out / "manifest.json").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out),
                           "--config", str(pipeline), "--workers", "2", "--quiet", "--no-report"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert _files(out) == before and (out / "manifest.json").read_bytes() == manifest
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_a_removed_case_refuses_then_rebuild_rewrites(published: tuple[Path, Path], pipeline: Path) -> None:
    data, out = published
    gone = sorted(_manifest(out)["cases"])[3]
    keep = {c for c in _manifest(out)["cases"] if c != gone}
    assert len(keep) == 11
    shutil.move(data, data.with_name("all"))
    _msd_subset(data.with_name("all"), data, keep)
    lines = _refused(data, out, pipeline)
    assert [x for x in lines if x.startswith("case ")] == [f"case {gone}: in the published shards, not converted "
                                                         "now (removed, or it failed)"]
    assert lines[0].startswith("volprep: error: refusing to append") and "--rebuild" in lines[0]
    assert _run(data, out, pipeline, "--rebuild") == 0
    manifest = _manifest(out)
    assert gone not in manifest["cases"] and manifest["dataset"]["num_cases"] == 11
    assert {s.get("generation", 0) for info in manifest["splits"].values() for s in info["shards"]} == {0}
    assert verify(out) == [] and main(["verify", str(out)]) == 0


def test_a_changed_case_refuses_then_rebuild_rewrites(published: tuple[Path, Path], pipeline: Path) -> None:
    data, out = published
    old = _manifest(out)
    import nibabel as nib
    import numpy as np

    name = sorted(old["cases"])[5]
    victim = data / "imagesTr" / f"{name}.nii.gz"
    image = nib.load(victim)
    voxels = np.asarray(image.dataobj)
    voxels[: voxels.shape[0] // 2] = voxels[: voxels.shape[0] // 2] // 2  # other voxels, same geometry
    nib.save(nib.Nifti1Image(voxels, image.affine, image.header), victim)
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    lines = _refused(data, out, pipeline)
    assert [x for x in lines if x.startswith("case ")] == [f"case {name}: its input changed since its shards were written"]
    assert lines[0].startswith("volprep: error: refusing to append") and "--rebuild" in lines[0]
    assert _run(data, out, pipeline, "--rebuild") == 0
    manifest = _manifest(out)
    changed = {c for c in manifest["cases"] if manifest["cases"][c] != old["cases"][c]}
    assert changed == {name}
    assert verify(out) == [] and main(["verify", str(out)]) == 0
    assert _run(data, out, pipeline) == 0  # and the rebuilt folder is appendable again


def _split_column(data: Path, case_id: str, split: str) -> None:
    """Gives ``case_id`` a user split in the labels table (the other cases none)."""
    lines = (data / "labels.csv").read_text().splitlines()
    rows = [lines[0].split(",")[:3] + ["split"]]
    rows += [x.split(",")[:3] + [split if x.split(",")[0] == case_id else ""] for x in lines[1:]]
    (data / "labels.csv").write_text("".join(",".join(r) + "\n" for r in rows))


def test_a_user_split_that_moves_a_published_case_refuses(demo_data: Path, pipeline: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(demo_data, data, copy_function=shutil.copy2)
    victim = sorted(p.name.removesuffix(".nii.gz") for p in (data / "imagesTr").glob("*.nii.gz"))[0]
    _split_column(data, victim, "val")
    assert _run(data, out, pipeline) == 0
    assert victim in json.loads((out / "plan.json").read_text())["splits"]["val"]
    before = _files(out)
    _split_column(data, victim, "train")
    capsys.readouterr()
    assert _run(data, out, pipeline) == 2
    assert "would change split" in capsys.readouterr().err and _files(out) == before
    assert _run(data, out, pipeline, "--rebuild") == 0
    assert victim in json.loads((out / "plan.json").read_text())["splits"]["train"]
