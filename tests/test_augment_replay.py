"""Records written before augmentation ops became units replay to the same bytes.

``tests/data/augment_v1_replay.{json,npz}`` was written once with the version-1 code (one
shared random stream, flat ``Params``): small (image, mask) pairs, the version-1
``Params.to_json()`` of copies sampled for them, and the exact bytes the version-1 numpy
executor rendered (the image as little-endian float16 and the mask as uint8, as a shard
record stores them). Today's code must read each string and render the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from volprep.augment import numpy_ops
from volprep.augment.spec import PARAMS_VERSION, Params

DATA = Path(__file__).parent / "data"
DOC = json.loads((DATA / "augment_v1_replay.json").read_text())
RENDERS = DOC["renders"]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(DATA / "augment_v1_replay.npz") as z:
        return {k: z[k] for k in z.files}


def test_fixture_covers_every_op_of_version_1() -> None:
    texts = [json.loads(r["params"]) for r in RENDERS]
    assert all(t["version"] == 1 for t in texts)
    assert any(t["flips"] for t in texts) and any(t["rot90_k"] for t in texts)
    assert any(t["matrix"] != [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] for t in texts)
    assert any(any(t["fourier_shift"]) for t in texts) and any(t["intensity_scale"] != 1.0 for t in texts)
    assert any(t["gamma"] != 1.0 for t in texts) and any(t["noise_std"] > 0 for t in texts)
    assert any(t["matrix"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] for t in texts)  # p gated


@pytest.mark.parametrize("r", range(len(RENDERS)))
def test_version_1_params_replay_to_the_same_bytes(r: int, arrays: dict[str, np.ndarray]) -> None:
    entry = RENDERS[r]
    params = Params.from_json(entry["params"])
    image, mask = arrays[f"image{entry['pair']}"], arrays[f"mask{entry['pair']}"]
    out, lab = numpy_ops.apply(params, image, mask)
    assert out.astype("<f2").tobytes() == arrays[f"out_image{r}"].tobytes()
    assert lab is not None and lab.astype("u1").tobytes() == arrays[f"out_mask{r}"].tobytes()
    # rewritten as version 2, the same parameters still render the same bytes
    again = Params.from_json(params.to_json())
    assert again == params and json.loads(params.to_json())["version"] == PARAMS_VERSION == 2
    out2, _ = numpy_ops.apply(again, image, mask)
    assert out2.tobytes() == out.tobytes()


def test_version_1_reads_only_the_ops_that_acted() -> None:
    text = json.loads(RENDERS[3]["params"])  # "spatial": a flip and an affine, nothing else
    params = Params.from_dict(text)
    assert set(params.ops) == {"flip", "affine"}
    assert params.ops["flip"]["axes"] == tuple(text["flips"])
    assert params.ops["affine"]["matrix"] == tuple(tuple(row) for row in text["matrix"])
    with pytest.raises(ValueError, match="unknown"):
        Params.from_dict({**text, "bogus": 1})
