"""The record schema: which features a record has, their dtypes, shapes and encodings.

Written once, here, TF-free: the converter encodes records with it, the manifest stores
it (its ``features``), and every reader decodes with it — the report and tools in numpy
(:meth:`Schema.decode`), the loader and ``verify`` in TensorFlow through
:mod:`volprep.schema_tf`, which turns the same :class:`Schema` into a parse spec and
batched decoders. No other module restates a feature.

A volprep record has ``image`` (``[D, H, W, C]``), ``case_id``, ``copy``, ``augment``
(the applied augmentation's JSON), ``affine`` (the record grid's voxel-to-world matrix),
and, depending on the dataset, ``label`` (a class id, or the label volume of a
segmentation dataset) and ``mask`` (the label volume when the data has both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from volprep.encodings import ENCODINGS
from volprep.records import decode_example, encode_example

LABEL_KINDS = ("class", "mask", "class+mask", "none")


class SchemaError(ValueError):
    """A feature spec that cannot be used (names the feature and the problem)."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature of a record: dtype, shape, encoding (and an encoding's layout)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    layout: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise SchemaError(f"feature {self.name!r}: unknown encoding {self.encoding!r} "
                              f"(known: {', '.join(sorted(ENCODINGS))})")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def is_volume(self) -> bool:
        """A 3D label volume in an exact array encoding (what ``target="mask"`` loads)."""
        return ENCODINGS[self.encoding].array and len(self.shape) == 3

    def encode(self, value: Any) -> Any:
        """The value as it goes into the record (see :mod:`volprep.encodings`)."""
        return ENCODINGS[self.encoding].encode(value, self)

    def decode(self, value: Any) -> Any:
        """One record's value from :func:`volprep.records.decode_example`, checked."""
        return ENCODINGS[self.encoding].decode(value, self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "encoding": self.encoding}
        if self.layout is not None:
            out["layout"] = dict(self.layout)
        return out

    @classmethod
    def from_dict(cls, name: str, data: Any) -> Feature:
        if not isinstance(data, Mapping) or not {"dtype", "shape", "encoding"} <= set(data):
            raise SchemaError(f"feature {name!r} lacks dtype/shape/encoding")
        shape = data["shape"]
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise SchemaError(f"feature {name!r}: shape {shape!r} is not a list of sizes")
        return cls(name, str(data["dtype"]), tuple(shape), str(data["encoding"]), data.get("layout"))


@dataclasses.dataclass(frozen=True)
class Schema(Mapping[str, Feature]):
    """The features of a record, by name (read-only mapping)."""

    features: Mapping[str, Feature]

    def __getitem__(self, name: str) -> Feature:
        return self.features[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def label_volume(self) -> str | None:
        """The feature holding the label volume (``mask``, or a volume ``label``), if any."""
        if "mask" in self.features:
            return "mask"
        label = self.features.get("label")
        return "label" if label is not None and label.is_volume else None

    def target(self, target: str) -> str | None:
        """The feature a loader yields as the label for ``target`` (``"label"``: the class,
        or the label volume; ``"mask"``: the label volume), or None when there is none.

        Raises:
            ValueError: a bad ``target``, or ``"mask"`` when the records hold no label volume.
        """
        if target not in ("label", "mask"):
            raise ValueError(f"target must be 'label' or 'mask', got {target!r}")
        if target == "mask":
            if self.label_volume is None:
                raise ValueError("target='mask' but these shards hold no label volumes")
            return self.label_volume
        return "label" if "label" in self.features else None

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """A serialised ``tf.train.Example`` of one record (every feature, no other)."""
        missing = sorted(set(self.features) - set(values))
        extra = sorted(set(values) - set(self.features))
        if missing or extra:
            raise SchemaError(f"record values do not match the schema: missing {missing}, extra {extra}")
        return encode_example({name: self.features[name].encode(v) for name, v in values.items()})

    def decode(self, record: bytes, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The features ``names`` (default: all) of a serialised record, decoded and checked."""
        raw = decode_example(record)
        out = {}
        for name in names or tuple(self.features):
            if name not in raw:
                raise SchemaError(f"record has no {name!r} feature")
            out[name] = self.features[name].decode(raw[name])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {name: f.to_dict() for name, f in self.features.items()}

    @classmethod
    def from_dict(cls, data: Any) -> Schema:
        if not isinstance(data, Mapping):
            raise SchemaError("features must be an object of name -> {dtype, shape, encoding}")
        return cls({str(name): Feature.from_dict(str(name), spec) for name, spec in data.items()})

    @classmethod
    def for_records(cls, *, target_shape: tuple[int, ...], channels: int, image_dtype: str,
                    image_encoding: str, label_kind: str, mask_dtype: str,
                    image_layout: Mapping[str, Any] | None = None, mask_encoding: str = "raw",
                    mask_layout: Mapping[str, Any] | None = None, locations: int = 0,
                    location_labels: tuple[int, ...] = ()) -> Schema:
        """The schema of a job's records (what the converter writes).

        ``image_encoding``/``image_layout`` and ``mask_encoding``/``mask_layout`` are the
        payload encodings of the image and of the label volume (when the records hold one);
        a label volume's encoding must be one of the exact array encodings. With
        ``locations`` > 0 and a label volume, records also carry the class locations of
        :mod:`volprep.locations` (``locations`` int16 ``[locations, 3]``;
        ``location_counts`` int32 ``[len(location_labels)]``, its layout naming the label
        value of each count) and ``fill`` (float32 ``[C]``: the value the image was padded
        with, a channel), which the loader's patch sampling reads.
        """
        if label_kind not in LABEL_KINDS:
            raise SchemaError(f"label kind {label_kind!r} is not one of {LABEL_KINDS}")
        shape = tuple(int(n) for n in target_shape)
        features = {
            "image": Feature("image", image_dtype, (*shape, channels), image_encoding, image_layout),
            "case_id": Feature("case_id", "string", (), "bytes"),
            "copy": Feature("copy", "int64", (), "int64"),
            "augment": Feature("augment", "string", (), "bytes"),
            "affine": Feature("affine", "float64", (4, 4), "raw"),
        }
        mask = Feature("mask", mask_dtype, shape, mask_encoding, mask_layout)
        if not ENCODINGS[mask.encoding].array:
            raise SchemaError(f"label volumes need an exact array encoding, not {mask_encoding!r}")
        if label_kind in ("class", "class+mask"):
            features["label"] = Feature("label", "int64", (), "int64")
        if label_kind == "class+mask":
            features["mask"] = mask
        elif label_kind == "mask":
            features["label"] = dataclasses.replace(mask, name="label")
        if locations > 0 and label_kind in ("mask", "class+mask"):
            features["locations"] = Feature("locations", "int16", (int(locations), 3), "raw")
            features["location_counts"] = Feature("location_counts", "int32", (len(location_labels),), "raw",
                                                  {"labels": [int(v) for v in location_labels]})
            features["fill"] = Feature("fill", "float32", (channels,), "raw")
        return cls(features)
