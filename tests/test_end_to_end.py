"""The whole flow on a small demo dataset: folder -> shards -> tf.data -> Keras."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from volprep.cli import main
from volprep.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from volprep.demo import write_demo

    base = tmp_path_factory.mktemp("e2e")
    data = write_demo(base / "data", n_cases=12, shape=(32, 32, 20), seed=3)
    out = base / "out"
    code = main(["shards", str(data), "--out", str(out), "--config",
                 str(ROOT / "pipelines" / "default.toml"), "--workers", "2", "--quiet", "--no-report"])
    return {"data": data, "out": out, "code": code, "manifest": json.loads((out / "manifest.json").read_text())}


def _records(out: Path, manifest: dict, split: str) -> list[dict]:
    """Every record of a split, parsed by plain TensorFlow from the manifest's spec only."""
    spec = {}
    for name, feat in manifest["features"].items():
        if feat["encoding"] == "int64":
            spec[name] = tf.io.FixedLenFeature(feat["shape"], tf.int64)
        else:
            spec[name] = tf.io.FixedLenFeature([], tf.string)
    files = [str(out / s["file"]) for s in manifest["splits"][split]["shards"]]
    rows = []
    for serialized in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(serialized, spec)
        row = {}
        for name, feat in manifest["features"].items():
            value = ex[name].numpy()
            if feat["encoding"] == "raw":
                value = np.frombuffer(value, np.dtype(feat["dtype"]).newbyteorder("<")).reshape(feat["shape"])
            row[name] = value
        rows.append(row)
    return rows


def test_job_succeeds_and_writes_the_contract(job: dict) -> None:
    assert job["code"] == 0
    out, m = job["out"], job["manifest"]
    for key in ("format_version", "features", "splits", "classes", "failures", "config", "seed"):
        assert key in m
    assert set(m["splits"]) == {"train", "val"}
    for split, info in m["splits"].items():
        assert info["num_records"] == sum(s["num_records"] for s in info["shards"]) > 0
        for i, shard in enumerate(info["shards"]):
            # <split>-<tag>-<index>-of-<count>.tfrecord, the tag 8 hex digits of the split's content
            assert re.fullmatch(rf"{split}-[0-9a-f]{{8}}-{i:05d}-of-{len(info['shards']):05d}\.tfrecord", shard["file"])
            assert (out / shard["file"]).stat().st_size == shard["num_bytes"]
    assert (out / "plan.json").is_file() and (out / "cache").is_dir()
    image = m["features"]["image"]
    assert image["dtype"] == "float16" and image["encoding"] == "raw" and len(image["shape"]) == 4
    assert m["features"]["label"] == {"dtype": "int64", "shape": [], "encoding": "int64"}
    assert m["features"]["mask"]["encoding"] == "deflate"  # label volumes are deflated by default
    assert m["failures"] == []


def test_plain_tensorflow_parses_every_record(job: dict) -> None:
    m = job["manifest"]
    for split in m["splits"]:
        rows = _records(job["out"], m, split)
        assert len(rows) == m["splits"][split]["num_records"]
        for row in rows:
            assert np.isfinite(row["image"].astype(np.float32)).all()
            assert row["copy"] >= 0
            assert (row["copy"] == 0) == (row["augment"] == b"")


def test_counts_after_equal_what_train_shards_hold(job: dict) -> None:
    m = job["manifest"]
    names = m["classes"]["names"]
    held: dict[str, int] = {}
    for row in _records(job["out"], m, "train"):
        held[names[int(row["label"])]] = held.get(names[int(row["label"])], 0) + 1
    assert held == {k: v for k, v in m["classes"]["counts_after"].items() if v}
    assert sum(m["classes"]["counts_after"].values()) > sum(m["classes"]["counts_before"].values())
    assert all(int(row["copy"]) == 0 for row in _records(job["out"], m, "val"))


def test_loader_yields_what_preprocessing_produced(job: dict) -> None:
    """Value by value: the loader's batches equal an independent oracle (tests/oracle.py:
    nibabel + scipy + numpy, no volprep) of each case, read from the demo's NIfTI files.

    The oracle reorients with ``nib.as_closest_canonical``, block-means by the job's factor
    (block majority for the mask), cuts the window where the record's ``affine`` says,
    z-scores over the foreground and rounds to float16. Images agree to one float16 step
    (volprep computes in float32, the oracle in float64), masks exactly; the window sits
    where the documented placement rule (centred on the scan's centre, rounded towards
    zero) puts it.
    """
    import oracle

    import volprep

    m = job["manifest"]
    pre = m["config"]["preprocess"]
    factors = pre["factor"] if isinstance(pre["factor"], list) else [pre["factor"]] * 3
    assert pre["reduce"] == "downsample" and len(set(factors)) == 1 and pre["normalize"] == "zscore"
    settings = oracle.Settings("downsample", factor=factors[0], zscore_over=pre["zscore_over"],
                               dtype=m["features"]["image"]["dtype"])
    target = m["target_shape"]
    cases = oracle.msd_cases(job["data"])
    checked = 0
    for split in ("val", "train"):
        # One shard a split: the loader (shuffle=False, deterministic) yields file order.
        assert len(m["splits"][split]["shards"]) == 1
        ds = volprep.load(job["out"], split=split, batch_size=2, shuffle=False, deterministic=True,
                          target="mask")
        assert ds.cardinality().numpy() == -(-m["splits"][split]["num_records"] // 2)
        images, masks = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
        images, masks = np.concatenate(images), np.concatenate(masks)
        rows = _records(job["out"], m, split)
        assert images.shape == (len(rows), *m["features"]["image"]["shape"])
        assert images.dtype == np.float32
        for image, mask, row in zip(images, masks, rows, strict=True):
            np.testing.assert_array_equal(image, row["image"].astype(np.float32))  # the pairing
            if row["copy"] != 0:
                continue  # augmented copies: tests/test_augment_e2e.py
            case_id = row["case_id"].decode()
            paths, label = cases[case_id]
            expected = oracle.expected_record(paths, label, settings, row["affine"], target)
            reduced, scan = expected.reduced, expected.scan
            np.testing.assert_allclose(row["affine"][:3, :3], reduced.affine[:3, :3], rtol=0, atol=1e-9)
            assert expected.start == oracle.centred_start(reduced.affine, scan.centre(), target), case_id
            bad = oracle.beyond_float16(image, expected.image)
            assert not bad.any(), f"{case_id}: {int(bad.sum())} voxels off the oracle by more than a float16 step"
            np.testing.assert_array_equal(mask, expected.mask, err_msg=case_id)
            checked += 1
    assert checked == sum(info["num_originals"] for info in m["splits"].values())


def test_verify_passes_then_names_a_flipped_shard(job: dict, tmp_path: Path, capsys) -> None:
    assert main(["verify", str(job["out"])]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(job["out"], copy, ignore=shutil.ignore_patterns("cache"))
    shard = copy / job["manifest"]["splits"]["train"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 1
    assert shard.name in capsys.readouterr().err


def test_inspect_reads_the_manifest(job: dict, capsys) -> None:
    assert main(["inspect", str(job["out"])]) == 0
    text = capsys.readouterr().out
    for shard in job["manifest"]["splits"]["train"]["shards"]:
        assert shard["file"] in text


def test_keras_model_fits_one_step(job: dict) -> None:
    import keras

    import volprep

    ds, m = volprep.load(job["out"], split="train", batch_size=2, seed=0, repeat=True, with_info=True)
    n_classes = len(m.classes.names)
    shape = m.features["image"].shape
    model = keras.Sequential([
        keras.Input(shape=shape),
        keras.layers.Conv3D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling3D(),
        keras.layers.Dense(n_classes),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_readme_snippet_runs(job: dict) -> None:
    """The README's two lines, on this job's folder."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nimport volprep")
    snippet = text[start + len("```python\n"): text.index("```", start + 10)]
    snippet = snippet.replace('"shards/demo"', repr(str(job["out"])))
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    images, labels = next(iter(scope["ds"]))
    assert images.shape[0] == labels.shape[0] > 0


def test_console_script_runs_for_real(job: dict) -> None:
    exe = Path(sys.executable).with_name("volprep")
    assert exe.exists(), "the console script is installed with the package"
    proc = subprocess.run([str(exe), "verify", str(job["out"]), "--no-parse"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "all shards match" in proc.stdout


def test_default_pipeline_is_the_contract_config() -> None:
    cfg = load_config(ROOT / "pipelines" / "default.toml")
    assert cfg.job.shard_size_mb == 64 and cfg.preprocess.reduce == "downsample"
