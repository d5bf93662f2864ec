"""Direct reads (volprep.loader_direct) against TensorFlow's own parser, on real anatomy.

The loader reads local shards itself (random access, hardware CRC32C, one copy into the
batch). Nothing here is checked against volprep's own decoding: the oracles are
TensorFlow's ``TFRecordDataset`` + ``parse_example`` (the streamed path, ``direct=False``,
and test_oracle_e2e's plain-TF ``read_records``) and ``tf.train.Example`` itself.
Encodings covered: raw float16 images, deflated uint8 masks and location lists (tissue);
deflated float32 images and deflate-shuffled int16 atlas labels (atlas); int64 class
labels (mixed); wavelet-compressed images (demo).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from conftest import pipeline_toml
from test_oracle_e2e import read_records  # the plain-TensorFlow record reader
from test_realdata_e2e import data_path, default_pipeline

import volprep
from volprep.cli import main
from volprep.errors import UsageError
from volprep.loader_direct import ALIGN, DirectReader, aligned_empty
from volprep.manifest import read_manifest
from volprep.records import bytes_value, decode_feature, feature_views

JOBS: dict[str, tuple[str, str]] = {
    # name: (task, extra [preprocess] lines)
    "tissue": ("tissue", ""),
    "atlas": ("atlas", 'image_encoding = "deflate"\nmask_encoding = "deflate-shuffle"\n'),
    "mixed": ("mixed", ""),
}
TARGETS = {"tissue": ("label", "mask"), "atlas": ("label", "mask"), "mixed": ("label",), "wavelet": ("label",)}


@pytest.fixture(scope="module")
def jobs(realdata: Path, demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("direct")
    outs: dict[str, Path] = {}
    for name, (task, extra) in JOBS.items():
        config = default_pipeline(root / f"{name}.toml", extra)
        out = root / name
        assert main(["shards", str(data_path(realdata, task)), "--out", str(out), "--config", str(config),
                     "--workers", "1", "--quiet", "--no-report"]) in (0, 3)
        outs[name] = out
    config = pipeline_toml(root / "wavelet.toml")
    config.write_text(config.read_text().replace(
        'reduce = "downsample"\nfactor = 2\n',
        "reduce = 'wavelet'\nwavelet = 'db2'\nlevel = 2\nmode = 'compress'\nkeep = 0.1\ntarget_shape = [32, 32, 20]\n"))
    assert "mode = 'compress'" in config.read_text()
    assert main(["shards", str(demo_data), "--out", str(root / "wavelet"), "--config", str(config),
                 "--workers", "1", "--quiet", "--no-report"]) == 0
    outs["wavelet"] = root / "wavelet"
    return outs


def _batches(out: Path, split: str, target: str, **kw: Any) -> list[tuple[np.ndarray, ...]]:
    ds = volprep.load(out, split=split, batch_size=3, shuffle=False, deterministic=True, dtype=None,
                      target=target, **kw)
    return [tuple(np.asarray(t) for t in (b if isinstance(b, tuple) else (b,))) for b in ds]


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["tissue", "atlas", "mixed", "wavelet"])
def test_direct_reads_equal_tensorflows_parser_record_for_record(jobs: dict[str, Path], name: str) -> None:
    """Same batches, same order, same dtypes as the TFRecordDataset + parse_example path."""
    out = jobs[name]
    manifest = read_manifest(out)
    if name == "atlas":
        assert manifest.features["image"].encoding == "deflate"
        assert manifest.features[manifest.features.label_volume or ""].encoding == "deflate-shuffle"
    if name == "wavelet":
        assert manifest.features["image"].encoding.startswith("wavelet")
    for split in manifest.splits:
        for target in TARGETS[name]:
            direct = _batches(out, split, target)
            streamed = _batches(out, split, target, direct=False)
            assert len(direct) == len(streamed) > 0
            for a, b in zip(direct, streamed, strict=True):
                assert len(a) == len(b)
                for x, y in zip(a, b, strict=True):
                    assert x.dtype == y.dtype and x.shape == y.shape
                    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["tissue", "atlas"])
def test_direct_reads_hold_every_record_plain_tensorflow_parses(jobs: dict[str, Path], name: str) -> None:
    """Images and label volumes as plain TF + zlib (README's recipe) decode them, as multisets."""
    out = jobs[name]
    manifest = json.loads((out / "manifest.json").read_text())
    mask_name = read_manifest(out).features.label_volume
    assert mask_name is not None
    for split in manifest["splits"]:
        rows = read_records(out, manifest, split)
        expected = Counter(_digest(r["image"], r[mask_name]) for r in rows)
        got = Counter(_digest(x, y) for xb, yb in _batches(out, split, "mask") for x, y in zip(xb, yb, strict=True))
        assert got == expected and sum(got.values()) == manifest["splits"][split]["num_records"]


def test_shuffled_epochs_are_permutations_and_a_seed_repeats_them(jobs: dict[str, Path]) -> None:
    out = jobs["tissue"]
    plain = [_digest(x) for xb, _ in _batches(out, "train", "mask") for x in xb]

    def epochs(seed: int, n: int) -> list[list[str]]:
        ds = volprep.load(out, split="train", batch_size=2, seed=seed, deterministic=True, repeat=True,
                          dtype=None, target="mask")
        per_epoch = len(plain) // 2 + len(plain) % 2
        it = iter(ds)
        got: list[list[str]] = []
        for _ in range(n):
            got.append([_digest(x) for _ in range(per_epoch) for x in np.asarray(next(it)[0])])
        return got

    first = epochs(7, 3)
    for epoch in first:
        assert Counter(epoch) == Counter(plain)  # every record once an epoch
    assert first[0] != first[1] != first[2]  # reshuffled each epoch
    assert first[0] != plain
    assert epochs(7, 3) == first  # the same seed, the same epochs


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cache"))
    return copy


def test_a_corrupt_payload_is_named_by_file_and_record(jobs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(jobs["tissue"], tmp_path)
    shard = copy / read_manifest(copy).splits["train"].shards[0].file
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside some record's image: the length CRCs stay right
    shard.write_bytes(bytes(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{shard.name}: record \d+: data CRC mismatch"):
        for _ in volprep.load(copy, split="train", batch_size=2, shuffle=False):
            pass
    with pytest.raises(tf.errors.DataLossError):  # what TensorFlow's own reader says of it
        for _ in volprep.load(copy, split="train", batch_size=2, shuffle=False, direct=False):
            pass


def test_a_truncated_shard_is_named(jobs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(jobs["tissue"], tmp_path)
    shard = copy / read_manifest(copy).splits["train"].shards[-1].file
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{shard.name}: record \d+: truncated data"):
        for _ in volprep.load(copy, split="train", batch_size=2, shuffle=False):
            pass


def test_a_missing_shard_is_named(jobs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(jobs["tissue"], tmp_path)
    shard = copy / read_manifest(copy).splits["train"].shards[0].file
    shard.unlink()
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{shard.name}.*cannot open the shard"):
        next(iter(volprep.load(copy, split="train", batch_size=2, shuffle=False)))


def test_direct_reads_need_local_files(jobs: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="direct reads need local files"):
        volprep.load("s3://bucket/shards", direct=True)


def test_feature_views_find_what_tf_train_example_holds(jobs: dict[str, Path]) -> None:
    """Every feature's view (bytes, int64, float) equals tf.train.Example's parse of the record."""
    out = jobs["mixed"]
    manifest = read_manifest(out)
    serialized = next(iter(tf.data.TFRecordDataset(str(out / manifest.splits["train"].shards[0].file)))).numpy()
    example = tf.train.Example.FromString(serialized)
    views = feature_views(serialized, set(manifest.features))
    assert set(views) == set(example.features.feature) & set(manifest.features)
    for name, view in views.items():
        feature = example.features.feature[name]
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            assert bytes(bytes_value(view)) == feature.bytes_list.value[0]
        elif kind == "int64_list":
            np.testing.assert_array_equal(decode_feature(view), np.asarray(feature.int64_list.value, np.int64))
        else:
            np.testing.assert_array_equal(decode_feature(view), np.asarray(feature.float_list.value, np.float32))


def test_batch_arrays_are_aligned_for_tensorflow(jobs: dict[str, Path]) -> None:
    for shape, dtype in [((3, 5, 7), np.float16), ((1,), np.int64), ((2, 9, 1), np.uint8)]:
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.ctypes.data % ALIGN == 0
    out = jobs["tissue"]
    manifest = read_manifest(out)
    shards = manifest.splits["train"].shards
    reader = DirectReader([str(out / s.file) for s in shards], [s.num_records for s in shards],
                          [s.num_bytes for s in shards], manifest.features, ["image"])
    (images,) = reader.read(np.array([[0, 0], [len(shards) - 1, 0]]))
    assert images.ctypes.data % ALIGN == 0 and images.shape == (2, *manifest.features["image"].shape)
