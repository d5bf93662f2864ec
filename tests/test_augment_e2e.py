"""Class-balanced offline copies through a real job, replayable; online augmentation in load()."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow  # noqa: F401  (a dependency: missing must fail, not skip)

from volprep.cli import main
from volprep.records import decode_example, iter_records


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from volprep.demo import write_demo

    base = tmp_path_factory.mktemp("bal")
    data = write_demo(base / "data", n_cases=20, shape=(32, 32, 20), seed=5)
    config = base / "p.toml"
    config.write_text(
        "[job]\nseed = 7\nsplits = { train = 0.75, val = 0.25 }\n"
        "[balance]\nmax_copies_per_case = 12\nmax_augmented_fraction = 1.0\n"
        "[augment]\nflip_axes = [0, 1]\nrotate_deg = 15\nscale = [0.9, 1.1]\nshift_vox = 2\n"
        "intensity_scale = [0.9, 1.1]\ngamma = [0.8, 1.2]\n"
    )
    out = base / "out"
    assert main(["shards", str(data), "--out", str(out), "--config", str(config),
                 "--workers", "2", "--quiet", "--no-report"]) == 0
    return out


def _rows(out: Path, split: str) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        rows.extend(decode_example(r) for r in iter_records(out / shard["file"]))
    return rows


def test_train_split_comes_out_balanced(balanced: Path) -> None:
    manifest = json.loads((balanced / "manifest.json").read_text())
    before, after = manifest["classes"]["counts_before"], manifest["classes"]["counts_after"]
    assert max(before.values()) / min(before.values()) >= 3  # the demo is imbalanced
    assert max(after.values()) / min(after.values()) <= 1.3
    plan = json.loads((balanced / "plan.json").read_text())
    assert plan["explanation"], "plan.json explains itself"
    copies = [c for cs in plan["copies"].values() for c in cs]
    assert len(copies) == sum(after.values()) - sum(before.values())
    assert all(c["params"] for c in copies)
    assert all(int(r["copy"][0]) == 0 for r in _rows(balanced, "val"))


def test_replaying_augment_params_reproduces_record_bytes(balanced: Path) -> None:
    from volprep.augment import numpy_ops
    from volprep.augment.spec import Params
    from volprep.cache import CaseCache
    from volprep.config import config_from_dict
    from volprep.geometry import Grid
    from volprep.preprocess import normalize, window_case

    manifest = json.loads((balanced / "manifest.json").read_text())
    cfg = config_from_dict(manifest["config"])
    cache = CaseCache(balanced / "cache")
    copies = [r for r in _rows(balanced, "train") if int(r["copy"][0]) > 0][:3]
    assert copies
    for row in copies:
        cached = cache.load(row["case_id"][0].decode())
        image, mask, _ = window_case(cached.image, cached.mask, Grid.from_dict(cached.meta["grid"]),
                                     cached.meta["anchor"], tuple(manifest["target_shape"]),
                                     [st["floor"] for st in cached.meta["stats"]])
        image = normalize(image, cached.meta["stats"], cfg.preprocess)
        image, mask = numpy_ops.apply(Params.from_json(row["augment"][0].decode()), image, mask)
        assert image.astype("<f2").tobytes() == row["image"][0]
        assert mask.astype("u1").tobytes() == zlib.decompress(row["mask"][0])  # deflated (the default)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}


def test_online_augmentation_is_batched_seeded_and_keeps_labels(balanced: Path) -> None:
    import volprep

    aug = volprep.Augment(flip_axes=(0,), rotate_deg=10, scale=(0.9, 1.1), shift_vox=2)

    def first(seed: int) -> tuple[np.ndarray, np.ndarray]:
        ds = volprep.load(balanced, split="train", batch_size=3, shuffle=False, deterministic=True,
                          augment=aug, seed=seed, target="mask")
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    plain = next(iter(volprep.load(balanced, split="train", batch_size=3, shuffle=False,
                                   deterministic=True, target="mask")))[0].numpy()
    a, ma = first(1)
    b, _ = first(1)
    c, _ = first(2)
    assert a.shape == plain.shape and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, plain)
    assert set(np.unique(ma)) <= {0, 1, 2, 3}
