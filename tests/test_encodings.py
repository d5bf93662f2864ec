"""The exact array encodings ("raw", "deflate", "deflate-shuffle"), numpy and TensorFlow.

Expected values come from outside volprep's own decoders: literal bytes for the wire
formats, Python's ``zlib`` for the streams, and a plain-TensorFlow reader written here
from the README's "Records" paragraph alone (``tf.io.decode_compressed(x, "ZLIB")``,
``tf.io.decode_raw``, a uint8 transpose and ``tf.bitcast`` for the byte planes) that
knows nothing but the manifest's feature spec. Every decoded array must equal the encoded
one bit for bit (NaN payloads, -0.0 and infinities included).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from volprep.config import PAYLOAD_ENCODINGS, PreprocessConfig, config_from_dict
from volprep.encodings import ARRAY_ENCODINGS, ENCODINGS
from volprep.errors import ConfigError
from volprep.records import decode_example, frame_record
from volprep.schema import Feature, Schema, SchemaError
from volprep.schema_tf import decode_batch, parse_spec

COMPRESSED = ("deflate", "deflate-shuffle")
DTYPES = ("uint8", "int16", "float16", "float32", "float64")


def sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth-ish array with the awkward values of its dtype at the front."""
    rng = np.random.default_rng([seed, len(dtype)])
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "f":
        values = np.cumsum(rng.normal(0, 0.1, n)).astype(dt)
        special = np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(dt).max, np.finfo(dt).tiny], dt)
        values[: special.size] = special
        values.view(f"u{dt.itemsize}")[0] |= 1  # a NaN with a payload: bits, not values, must survive
    else:
        info = np.iinfo(dt)
        values = (np.arange(n) // 7 % 5 * 3).astype(dt)
        values[:2] = [info.min, info.max]
    return values.reshape(shape)


def bits(array: np.ndarray) -> np.ndarray:
    """The array's bit patterns (NaN == NaN, -0.0 != 0.0)."""
    return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")


def feature(encoding: str, dtype: str, shape: tuple[int, ...], name: str = "x",
            level: int | None = None) -> Feature:
    layout = None if level is None else {"level": level}
    return Feature(name, dtype, shape, encoding, layout)


# ---------------------------------------------------------------- wire formats, numpy


def test_the_table_and_the_config_agree() -> None:
    assert ARRAY_ENCODINGS == PAYLOAD_ENCODINGS == ("raw", "deflate", "deflate-shuffle")
    assert {"int64", "float", "bytes", "wavelet-compress"} <= set(ENCODINGS) - set(ARRAY_ENCODINGS)


def test_wire_formats_are_the_documented_bytes() -> None:
    """float16 [1, 2, -2] is 00 3c 00 40 00 c0; its planes are 00 00 00 | 3c 40 c0."""
    value = np.array([1.0, 2.0, -2.0], np.float16)
    raw = bytes.fromhex("003c004000c0")
    assert ENCODINGS["raw"].encode(value, feature("raw", "float16", (3,))) == raw
    assert zlib.decompress(ENCODINGS["deflate"].encode(value, feature("deflate", "float16", (3,)))) == raw
    shuffled = ENCODINGS["deflate-shuffle"].encode(value, feature("deflate-shuffle", "float16", (3,)))
    assert zlib.decompress(shuffled) == bytes.fromhex("0000003c40c0")
    # int16 0x0102, 0x0304 are 02 01 04 03: low plane 02 04, high plane 01 03; uint8 has one plane
    assert zlib.decompress(ENCODINGS["deflate-shuffle"].encode(
        np.array([0x0102, 0x0304], np.int16), feature("deflate-shuffle", "int16", (2,)))) == bytes.fromhex("02040103")
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    assert ENCODINGS["deflate-shuffle"].encode(mask, feature("deflate-shuffle", "uint8", (2, 2))) == \
        ENCODINGS["deflate"].encode(mask, feature("deflate", "uint8", (2, 2)))


@pytest.mark.parametrize("level", [1, 6, 9])
def test_the_layout_level_is_the_zlib_level(level: int) -> None:
    mask = sample("uint8", (16, 16, 8), 1)
    data = ENCODINGS["deflate"].encode(mask, feature("deflate", "uint8", mask.shape, level=level))
    assert data == zlib.compress(mask.tobytes(), level)


@pytest.mark.parametrize("encoding", ARRAY_ENCODINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_round_trip_is_bit_exact(encoding: str, dtype: str) -> None:
    value = sample(dtype, (5, 6, 7), 2)
    feat = feature(encoding, dtype, value.shape)
    decoded = feat.decode([feat.encode(value)])
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == value.shape
    np.testing.assert_array_equal(bits(decoded), bits(value))


def test_float32_images_are_stored_with_numpys_float16_rounding() -> None:
    value = np.random.default_rng(3).normal(0, 3, (4, 5, 6, 1)).astype(np.float32)
    for encoding in ARRAY_ENCODINGS:
        feat = feature(encoding, "float16", value.shape)
        np.testing.assert_array_equal(bits(feat.decode([feat.encode(value)])), bits(value.astype(np.float16)))


@pytest.mark.parametrize("encoding", COMPRESSED)
def test_numpy_refuses_payloads_of_another_size_naming_the_feature(encoding: str) -> None:
    feat = feature(encoding, "int16", (4, 4, 4), name="mask")
    good = feat.encode(sample("int16", (4, 4, 4), 4))
    short = zlib.compress(zlib.decompress(good)[:-2])
    long = zlib.compress(zlib.decompress(good) + b"\0\0")
    cases = {
        short: "holds 126 bytes, the manifest's shape needs 128",
        long: "holds more than 128 bytes",
        good[:-6]: "truncated stream",
        good + b"tail": "4 bytes after the stream",
        good[:-1] + bytes([good[-1] ^ 1]): "not a valid zlib stream",  # the Adler-32
        b"not zlib at all": "not a valid zlib stream",
    }
    for payload, problem in cases.items():
        with pytest.raises(ValueError, match=f"feature 'mask': .*{problem}"):
            feat.decode([payload])


def test_a_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="zlib level 10"):
        feature("deflate", "uint8", (2,), level=10).encode(np.zeros(2, np.uint8))


# ---------------------------------------------------------------- the schema


@pytest.mark.parametrize("encoding", ARRAY_ENCODINGS)
def test_label_volumes_in_every_array_encoding_are_volumes(encoding: str) -> None:
    for kind, name in (("mask", "label"), ("class+mask", "mask")):
        schema = Schema.for_records(target_shape=(4, 4, 4), channels=1, image_dtype="float16",
                                    image_encoding="raw", label_kind=kind, mask_dtype="uint8",
                                    mask_encoding=encoding, mask_layout={"level": 1})
        assert schema.label_volume == name and schema[name].encoding == encoding
        assert schema[name].to_dict()["layout"] == {"level": 1}
    with pytest.raises(SchemaError, match="exact array encoding"):
        Schema.for_records(target_shape=(4, 4, 4), channels=1, image_dtype="float16", image_encoding="raw",
                           label_kind="mask", mask_dtype="uint8", mask_encoding="wavelet-compress")


# ---------------------------------------------------------------- TensorFlow


def plain_tf_decode(serialized: list[bytes], features: dict[str, Any]) -> dict[str, np.ndarray]:
    """A TF reader written from README "Records" and the manifest's features only."""
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in features}
    parsed = tf.io.parse_example(tf.constant(serialized), spec)
    out = {}
    for name, f in features.items():
        dtype, shape = tf.dtypes.as_dtype(f["dtype"]), f["shape"]
        data = parsed[name]
        if f["encoding"] in ("deflate", "deflate-shuffle"):
            data = tf.io.decode_compressed(data, compression_type="ZLIB")
        if f["encoding"] == "deflate-shuffle":
            planes = tf.reshape(tf.io.decode_raw(data, tf.uint8), [len(serialized), dtype.size, -1])
            values = tf.bitcast(tf.transpose(planes, [0, 2, 1]), dtype) if dtype.size > 1 else planes[:, 0]
        else:
            values = tf.io.decode_raw(data, dtype, little_endian=True)
        out[name] = tf.reshape(values, [len(serialized), *shape]).numpy()
    return out


def write_and_read(tmp_path: Path, schema: Schema, rows: list[dict[str, Any]]) -> list[bytes]:
    """Records written without TensorFlow, read back by TF's own TFRecord reader."""
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"".join(frame_record(schema.encode(row)) for row in rows))
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def array_schema(encoding: str, shape: tuple[int, ...] = (6, 5, 4)) -> Schema:
    return Schema({dtype: feature(encoding, dtype, shape, name=dtype) for dtype in DTYPES})


@pytest.mark.parametrize("encoding", ARRAY_ENCODINGS)
def test_plain_tensorflow_decodes_from_the_manifest_alone(encoding: str, tmp_path: Path) -> None:
    schema = array_schema(encoding)
    manifest_features = json.loads(json.dumps(schema.to_dict()))  # as manifest.json holds it
    rows = [{name: sample(name, (6, 5, 4), seed) for name in schema} for seed in range(3)]
    decoded = plain_tf_decode(write_and_read(tmp_path, schema, rows), manifest_features)
    for name in schema:
        for i, row in enumerate(rows):
            np.testing.assert_array_equal(bits(decoded[name][i]), bits(row[name]), err_msg=f"{name} #{i}")


@pytest.mark.parametrize("encoding", ARRAY_ENCODINGS)
def test_volprep_batched_decoders_are_bit_exact(encoding: str, tmp_path: Path) -> None:
    schema = array_schema(encoding)
    rows = [{name: sample(name, (6, 5, 4), seed) for name in schema} for seed in range(4)]
    serialized = write_and_read(tmp_path, schema, rows)
    decoded = tf.function(lambda x: decode_batch(tf.io.parse_example(x, parse_spec(schema)), schema))(
        tf.constant(serialized))
    for name in schema:
        assert decoded[name].shape == (4, 6, 5, 4) and decoded[name].dtype == tf.as_dtype(name)
        for i, row in enumerate(rows):
            np.testing.assert_array_equal(bits(decoded[name][i].numpy()), bits(row[name]))
            # the numpy side reads the same records
            np.testing.assert_array_equal(bits(schema[name].decode(decode_example(serialized[i])[name])),
                                          bits(row[name]))


@pytest.mark.parametrize("encoding", ARRAY_ENCODINGS)
def test_tensorflow_refuses_a_payload_of_another_size_naming_the_feature(encoding: str, tmp_path: Path) -> None:
    """A record one voxel short (a valid stream of the wrong size) is an InvalidArgumentError."""
    wrong = Schema({"mask": feature(encoding, "int16", (4, 4, 3), name="mask")})
    right = Schema({"mask": feature(encoding, "int16", (4, 4, 4), name="mask")})
    good = right.encode({"mask": sample("int16", (4, 4, 4), 5)})
    bad = wrong.encode({"mask": sample("int16", (4, 4, 3), 5)})
    decode = tf.function(lambda x: decode_batch(tf.io.parse_example(x, parse_spec(right)), right))
    decode(tf.constant([good, good]))
    what = "inflated bytes" if encoding != "raw" else "bytes"
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"feature mask: the record {what} do not match the manifest \(int16 \[4, 4, 4\] = 128 bytes"):
        decode(tf.constant([good, bad]))


@pytest.mark.parametrize("encoding", COMPRESSED)
def test_tensorflow_names_the_feature_of_a_payload_that_is_no_zlib_stream(encoding: str) -> None:
    schema = Schema({"mask": feature(encoding, "uint8", (4, 4, 4), name="mask")})
    from volprep.records import encode_example

    bad = encode_example({"mask": b"\x00not a zlib stream"})
    decode = tf.function(lambda x: decode_batch(tf.io.parse_example(x, parse_spec(schema)), schema))
    with pytest.raises(tf.errors.DataLossError, match="inflate_mask"):
        decode(tf.constant([bad]))


# ---------------------------------------------------------------- config


def test_config_keys_and_their_checks() -> None:
    cfg = PreprocessConfig()
    assert (cfg.image_encoding, cfg.mask_encoding, cfg.deflate_level) == ("raw", "deflate", None)
    cfg = config_from_dict({"preprocess": {"image_encoding": "deflate-shuffle", "mask_encoding": "deflate",
                                           "deflate_level": 1}}).preprocess
    assert (cfg.image_encoding, cfg.mask_encoding, cfg.deflate_level) == ("deflate-shuffle", "deflate", 1)
    refusals = {
        ("mask_encoding", "zip"): "'zip' is not one of 'raw', 'deflate', 'deflate-shuffle'",
        ("image_encoding", "wavelet-compress"): "is not one of",
        ("deflate_level", 0): "expected an integer 1..9, got 0",
        ("deflate_level", 10): "expected an integer 1..9, got 10",
    }
    for (key, value), problem in refusals.items():
        with pytest.raises(ConfigError, match=problem) as info:
            config_from_dict({"preprocess": {key: value}}, "p.toml")
        assert info.value.key == f"preprocess.{key}"


def test_a_reduction_with_its_own_image_encoding_takes_only_raw() -> None:
    wavelet = {"reduce": "wavelet", "mode": "compress", "level": 2}
    assert config_from_dict({"preprocess": {**wavelet, "mask_encoding": "deflate"}}).preprocess.mask_encoding == "deflate"
    with pytest.raises(ConfigError, match="writes its images as 'wavelet-compress'") as info:
        config_from_dict({"preprocess": {**wavelet, "image_encoding": "deflate"}}, "p.toml")
    assert info.value.key == "preprocess.image_encoding"
    # wavelet "approx" stores its (smaller) grid raw: that one may be compressed
    approx = config_from_dict({"preprocess": {"reduce": "wavelet", "mode": "approx", "image_encoding": "deflate"}})
    assert approx.preprocess.image_encoding == "deflate"


def test_spec_records_the_chosen_encodings() -> None:
    from volprep.record_spec import make_record_spec

    metas = [{"voxel_counts": {"1": 3}, "mask_max": 2, "stats": [{"floor": 0.0}]}]
    pre = dataclasses.replace(PreprocessConfig(), image_encoding="deflate-shuffle", mask_encoding="deflate",
                              deflate_level=3)
    spec = make_record_spec(pre, "/c", (8, 8, 8), 1, has_class=False, metas=metas)
    schema = spec.schema()
    assert (schema["image"].encoding, schema["image"].layout) == ("deflate-shuffle", {"level": 3})
    assert (schema["label"].encoding, schema["label"].layout) == ("deflate", {"level": 3})
    measured = dataclasses.replace(pre, deflate_level=None)  # the measured defaults: images 1, masks 6
    schema = make_record_spec(measured, "/c", (8, 8, 8), 1, has_class=False, metas=metas).schema()
    assert (schema["image"].layout, schema["label"].layout) == ({"level": 1}, {"level": 6})
    default = make_record_spec(PreprocessConfig(), "/c", (8, 8, 8), 1, has_class=False, metas=metas).schema()
    assert default["image"].to_dict() == {"dtype": "float16", "shape": [8, 8, 8, 1], "encoding": "raw"}
    assert default["label"].to_dict() == {"dtype": "uint8", "shape": [8, 8, 8], "encoding": "deflate",
                                          "layout": {"level": 6}}  # label volumes: deflated by default


def test_raw_specs_keep_the_shard_names_they_had() -> None:
    """An existing config's shards keep their names: the split tag of a raw spec is what
    volprep computed before compressed payloads existed (its content key restated here:
    every RecordSpec field of then, the image layout named ``wavelet_layout``, and the whole
    [preprocess] table of then, without the keys added since). Records of a label volume
    with class locations (``class_locations > 0``, the default) hold new features, so
    their shards are named anew; with ``class_locations = 0`` they are the records of then."""
    import hashlib

    from volprep.record_spec import make_record_spec
    from volprep.shards import RECORD_FORMAT, RecordRef, split_tag

    new_keys = {"image_encoding", "mask_encoding", "deflate_level", "class_locations"}
    metas = [{"voxel_counts": {"1": 3}, "mask_max": 2, "stats": [{"floor": 0.0}]}]
    refs = [RecordRef("a"), RecordRef("b", 1, '{"flip": [0]}')]
    checksums = {"a": {"image": "x"}, "b": {"image": "y"}}
    pre = PreprocessConfig(class_locations=0, mask_encoding="raw")
    spec = make_record_spec(pre, "/c", (8, 8, 8), 1, has_class=True, metas=metas)
    then = {"target_shape": [8, 8, 8], "channels": 1, "image_dtype": "float16", "image_encoding": "raw",
            "label_kind": "class+mask", "mask_dtype": "uint8", "dataset_stats": None, "wavelet_layout": None,
            "preprocess": {k: v for k, v in dataclasses.asdict(pre).items() if k not in new_keys}}
    blob = json.dumps({"format": RECORD_FORMAT, "spec": json.loads(json.dumps(then, default=str)), "split": "train",
                       "records": [[r.case_id, r.copy, r.params, checksums.get(r.case_id)] for r in refs]},
                      sort_keys=True, separators=(",", ":"))
    assert split_tag(spec, "train", refs, checksums) == hashlib.sha256(blob.encode()).hexdigest()[:8]
    # choosing a compressed payload (or another level for one) names other shards
    tags = {split_tag(make_record_spec(p, "/c", (8, 8, 8), 1, has_class=True, metas=metas), "train", refs, checksums)
            for p in (pre, dataclasses.replace(pre, mask_encoding="deflate"),
                      dataclasses.replace(pre, mask_encoding="deflate", deflate_level=1),
                      dataclasses.replace(pre, image_encoding="deflate"),
                      dataclasses.replace(pre, class_locations=64))}
    assert len(tags) == 5
