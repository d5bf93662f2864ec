"""Records written without TensorFlow are what TensorFlow reads."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from volprep.errors import DataError
from volprep.records import (
    decode_example,
    encode_example,
    frame_parts,
    frame_record,
    iter_records,
)


def _features() -> dict:
    image = np.arange(2 * 3 * 4, dtype="<f2").reshape(2, 3, 4, 1)
    return {
        "image": image.tobytes(),
        "label": 2,
        "case_id": "case_ü1",
        "copy": np.array([0, -7, 1 << 40]),
        "augment": "",
        "weights": np.array([1.5, -2.25], np.float32),
    }


def test_encode_example_is_what_tensorflow_parses() -> None:
    data = encode_example(_features())
    ex = tf.train.Example.FromString(data)
    f = ex.features.feature
    assert f["label"].int64_list.value == [2]
    assert list(f["copy"].int64_list.value) == [0, -7, 1 << 40]
    assert f["case_id"].bytes_list.value == ["case_ü1".encode()]
    assert f["augment"].bytes_list.value == [b""]
    assert list(f["weights"].float_list.value) == [1.5, -2.25]
    assert f["image"].bytes_list.value[0] == _features()["image"]
    # The same message serialised by protobuf parses back to the same fields.
    assert decode_example(ex.SerializeToString())["copy"].tolist() == [0, -7, 1 << 40]


def test_encoding_is_deterministic_and_key_order_free() -> None:
    feats = _features()
    reordered = dict(reversed(list(feats.items())))
    assert encode_example(feats) == encode_example(reordered)


def test_decode_example_round_trip() -> None:
    out = decode_example(encode_example(_features()))
    assert out["case_id"] == ["case_ü1".encode()]
    assert out["label"].tolist() == [2]
    np.testing.assert_array_equal(out["weights"], np.array([1.5, -2.25], np.float32))


def test_tfrecord_framing_read_by_tensorflow(tmp_path) -> None:
    records = [encode_example({"i": k, "b": bytes([k]) * k}) for k in range(5)]
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as fh:
        for record in records:
            fh.writelines(frame_parts(record))
    assert path.read_bytes() == b"".join(frame_record(r) for r in records)
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert read == records
    assert list(iter_records(path)) == records


def test_corrupt_record_is_detected(tmp_path) -> None:
    path = tmp_path / "x.tfrecord"
    frame = bytearray(frame_record(encode_example({"i": 1, "b": b"payload"})))
    frame[20] ^= 0xFF
    path.write_bytes(bytes(frame))
    with pytest.raises(DataError, match="CRC"):
        list(iter_records(path))
    path.write_bytes(bytes(frame[:-6]))
    with pytest.raises(DataError, match="truncated"):
        list(iter_records(path, check_crc=False))
