"""Patch sampling without TensorFlow (``volprep.readers.Patches``) on real anatomy.

The same rules as ``volprep.load(patch=...)``, checked against the records themselves
(decoded by ``Schema.decode``): each patch is a window of its own record in image and
mask alike, padded with the record's ``fill`` and 0 past the border; foreground patches
are centred on the class asked for; a rare class gets its share; augmentation applies
to each patch; the torch datasets batch the patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from realdata import task

from volprep.cli import main
from volprep.readers import Patches, Reader

SIZE = (24, 20, 16)
CENTRE = tuple(n // 2 for n in SIZE)


def _job(root: Path, name: str, preprocess: str) -> Path:
    config = root / "job.toml"
    config.write_text(f'[job]\nseed = 2\nsplits = {{ train = 1.0 }}\n[preprocess]\n{preprocess}')
    out = root / "out"
    assert main(["shards", str(task(name)), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report"]) == 0
    return out


@pytest.fixture(scope="module")
def tissue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _job(tmp_path_factory.mktemp("rp-tissue"), "tissue",
                'reduce = "none"\ntarget_shape = [100, 104, 88]\ndtype = "float16"\n')


def _window_at(patch: np.ndarray, mask: np.ndarray, record: dict, volume: str) -> bool:
    """Whether (patch, mask) sit at one offset of the record, padded with its fill and 0."""
    image = record["image"].astype(np.float32)[..., 0]
    pad = [(n, n) for n in SIZE]
    padded = np.pad(image, pad, constant_values=float(record["fill"][0]))
    padded_mask = np.pad(record[volume], pad, constant_values=0)
    zs, ys, xs = np.nonzero((padded == patch[CENTRE]) & (padded_mask == mask[CENTRE]))
    for z, y, x in zip(zs - CENTRE[0], ys - CENTRE[1], xs - CENTRE[2], strict=True):
        if min(z, y, x) < 0:
            continue
        window = np.s_[z:z + SIZE[0], y:y + SIZE[1], x:x + SIZE[2]]
        got, got_mask = padded[window], padded_mask[window]
        if got.shape == patch.shape and np.array_equal(got, patch) and np.array_equal(got_mask, mask):
            return True
    return False


def test_each_patch_is_a_window_of_its_own_record(tissue: Path) -> None:
    whole = Reader(tissue, target="mask", shuffle=False, dtype=None,
                   extra_features=("fill", "case_id"))
    volume = whole.manifest.features.label_volume
    records = {str(s["case_id"]): s for s in whole.epoch(0)}
    for s in records.values():
        s[volume] = s["label"]
    patched = Reader(tissue, target="mask", shuffle=False, seed=3, extra_features=("case_id",),
                     patches=Patches(SIZE, per_volume=3, foreground=0.5))
    items = list(patched.epoch(0))
    assert len(items) == len(patched) == 3 * len(whole)
    for item in items:
        assert item["image"].shape == (*SIZE, 1) and item["label"].shape == SIZE
        assert "locations" not in item and "fill" not in item
        assert _window_at(item["image"][..., 0], item["label"], records[str(item["case_id"])], volume)


def test_foreground_patches_are_centred_on_the_class_asked_for(tissue: Path) -> None:
    for value in (1, 2):
        reader = Reader(tissue, target="mask", seed=1,
                        patches=Patches(SIZE, per_volume=8, foreground=1.0, class_weights={value: 1.0}))
        assert all(int(s["label"][CENTRE]) == value for s in reader.epoch(0))


def test_patches_past_the_border_hold_the_padding_value(tissue: Path) -> None:
    reader = Reader(tissue, target="mask", seed=4, extra_features=("fill",),
                    patches=Patches((8, 8, 120), per_volume=2, foreground=0.0))
    for s in reader.epoch(0):
        assert np.all(s["image"][:, :, :16] == s["fill"]) and np.all(s["image"][:, :, -16:] == s["fill"])
        assert s["label"][:, :, :16].max() == 0 and s["label"][:, :, -16:].max() == 0


def test_a_rare_atlas_class_gets_its_share(tmp_path: Path) -> None:
    """Label 3 covers 0.15% of the atlas heads; asked for a quarter of the patches."""
    out = _job(tmp_path, "atlas", 'reduce = "none"\n')
    reader = Reader(out, target="mask", seed=8,
                    patches=Patches((16, 16, 16), per_volume=200, foreground=0.5,
                                    class_weights={3: 1.0, "NeuroMaps_1": 1.0}))
    centres = np.array([int(s["label"][8, 8, 8]) for s in reader.epoch(0)])
    assert len(centres) == 200 * len(Reader(out))
    for value in (3, 1):
        assert abs(np.mean(centres == value) - 0.25) < 0.04, (value, np.mean(centres == value))


def test_augmented_patches_and_torch_batches(tissue: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    import volprep
    from volprep.torch import VolumeIterableDataset

    augment = volprep.Augment(flip_axes=(0, 1, 2), rotate_deg=10.0, seed=5)
    ds = VolumeIterableDataset(tissue, target="mask", seed=5, augment=augment,
                               patches=Patches(SIZE, per_volume=4, foreground=1.0))
    batches = list(DataLoader(ds, batch_size=8, num_workers=2))
    assert sum(b[0].shape[0] for b in batches) == len(ds)
    image, mask = batches[0]
    assert image.shape == (8, 1, *SIZE) and image.dtype == torch.float32
    assert mask.shape == (8, *SIZE) and set(torch.unique(mask).tolist()) <= {0, 1, 2}
    again = list(DataLoader(VolumeIterableDataset(tissue, target="mask", seed=5, augment=augment,
                                                  patches=Patches(SIZE, per_volume=4, foreground=1.0)),
                            batch_size=8, num_workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


def test_a_request_the_shards_cannot_serve_is_refused(tissue: Path) -> None:
    with pytest.raises(ValueError, match="class_weights names label 7"):
        Reader(tissue, target="mask", patches=Patches(SIZE, class_weights={7: 1.0}))
    with pytest.raises(ValueError, match="patch must be three sizes"):
        Reader(tissue, target="mask", patches=Patches((8, 8)))
