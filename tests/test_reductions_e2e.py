"""Every reduction method works through `volprep shards` and `volprep.load`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from volprep.cli import main
from volprep.manifest import read_manifest

tf = pytest.importorskip("tensorflow")

REDUCTIONS = {
    "none": "reduce = 'none'\n",
    "downsample": "reduce = 'downsample'\nfactor = [2, 2, 1]\n",
    "resample": "reduce = 'resample'\nspacing = [3.0, 3.0, 4.0]\ninterpolation = 'cubic'\n",
    "wavelet-approx": "reduce = 'wavelet'\nwavelet = 'haar'\nlevel = 1\nmode = 'approx'\n",
    "wavelet-compress": "reduce = 'wavelet'\nwavelet = 'db2'\nlevel = 2\nmode = 'compress'\nkeep = 0.1\n",
    "wavelet-compress-int8": "reduce = 'wavelet'\nwavelet = 'db2'\nlevel = 2\nmode = 'compress'\nkeep = 0.1\nwavelet_values = 'int8'\n",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from volprep.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("red") / "data", n_cases=6, shape=(32, 32, 20), seed=1)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_through_shards_and_loader(name: str, data: Path, tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text(
        "[job]\nsplits = { train = 0.5, val = 0.5 }\n[balance]\nenabled = false\n"
        f"[preprocess]\n{REDUCTIONS[name]}dtype = 'float32'\n"
    )
    out = tmp_path / "out"
    assert main(["shards", str(data), "--out", str(out), "--config", str(config),
                 "--workers", "1", "--quiet", "--no-report"]) == 0
    m = read_manifest(out)
    shape = m["features"]["image"]["shape"]
    if name == "none":
        assert shape[:3] == [32, 32, 20]
    elif name in ("downsample", "wavelet-approx"):
        assert shape[:3] == [16, 16, 20 if name == "downsample" else 10]
    if name == "none":
        assert m["fidelity"] is None
    else:
        assert m["fidelity"]["psnr"]["min"] > 10
    import volprep

    ds = volprep.load(out, split="val", batch_size=2, shuffle=False, deterministic=True, target="mask")
    images, masks = next(iter(ds))
    assert images.shape[1:] == shape and images.dtype == tf.float32
    assert np.isfinite(images.numpy()).all()
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, 3}
    if name.startswith("wavelet-compress"):
        from volprep.preprocess import wavelet
        from volprep.records import decode_example, iter_records

        feat = m["features"]["image"]
        assert feat["encoding"] == "wavelet-compress" and feat["layout"]["keep"] == 0.1
        assert feat["layout"]["value_dtype"] == ("int8" if name.endswith("int8") else "int16")
        shard = out / m["splits"]["val"]["shards"][0]["file"]
        first = decode_example(next(iter_records(shard)))
        reference = wavelet.decode(first["image"][0], feat["layout"])
        scale = np.abs(reference).max()
        assert np.abs(images.numpy()[0] - reference).max() <= 1e-4 * scale
        # Stored compactly: the record is smaller than the float32 volume.
        assert feat["layout"]["nbytes"] < 4 * np.prod(shape) / 2


def test_inspect_prints_fidelity(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["shards", str(data), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "psnr" in text.lower() and "ratio" in text.lower()
