"""``volprep.load(..., patch=...)`` on real anatomy: patches come from where they claim.

The oracle is the records themselves, decoded without TensorFlow (``Schema.decode``):
every patch the loader yields must be a window of one record's image and mask, padded
with the record's ``fill`` (image) and 0 (mask) past the border, at the same offset in
both. Foreground patches must be centred on the class asked for; counts follow the plan;
seeded, deterministic loading repeats itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from realdata import task

import volprep
from volprep.cli import main
from volprep.manifest import read_manifest
from volprep.records import iter_records

PATCH = (24, 20, 16)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNI152 heads with grey/white matter masks, padded to 100 voxels on the first axis."""
    root = tmp_path_factory.mktemp("patch-job")
    config = root / "job.toml"
    config.write_text('[job]\nseed = 2\nsplits = { train = 1.0 }\n'
                      '[preprocess]\nreduce = "none"\ntarget_shape = [100, 104, 88]\ndtype = "float16"\n'
                      'mask_encoding = "deflate"\n')
    out = root / "out"
    assert main(["shards", str(task("tissue")), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report"]) == 0
    return out


def _records(out: Path) -> list[dict]:
    manifest = read_manifest(out)
    return [manifest.features.decode(record) for shard in manifest.splits["train"].shards
            for record in iter_records(out / shard.file)]


def _patches(out: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    images, masks = [], []
    for image, mask in volprep.load(out, **kw):
        images.append(image.numpy())
        masks.append(mask.numpy())
    return np.concatenate(images), np.concatenate(masks)


def _where(image: np.ndarray, mask: np.ndarray, records: list[dict], volume: str) -> list[tuple]:
    """Every (record, origin) at which this image patch and this mask patch both sit."""
    found = []
    centre = tuple(n // 2 for n in PATCH)
    for i, record in enumerate(records):
        full = record["image"].astype(np.float32)[..., 0]
        labels = record[volume]
        pad = [(n, n) for n in PATCH]
        padded = np.pad(full, pad, constant_values=float(record["fill"][0]))
        padded_mask = np.pad(labels, pad, constant_values=0)
        # candidates: voxels holding the patch's centre value and label
        zs, ys, xs = np.nonzero((padded == image[centre]) & (padded_mask == mask[centre]))
        for z, y, x in zip(zs, ys, xs, strict=True):
            z0, y0, x0 = z - centre[0], y - centre[1], x - centre[2]
            if min(z0, y0, x0) < 0 or z0 + PATCH[0] > padded.shape[0] or y0 + PATCH[1] > padded.shape[1] \
                    or x0 + PATCH[2] > padded.shape[2]:
                continue
            window = np.s_[z0:z0 + PATCH[0], y0:y0 + PATCH[1], x0:x0 + PATCH[2]]
            if np.array_equal(padded[window], image) and np.array_equal(padded_mask[window], mask):
                found.append((i, (z0 - PATCH[0], y0 - PATCH[1], x0 - PATCH[2])))
    return found


def test_every_patch_is_a_window_of_one_record_in_image_and_mask_alike(job: Path) -> None:
    records = _records(job)
    volume = read_manifest(job).features.label_volume
    images, masks = _patches(job, batch_size=6, patch=PATCH, patches_per_volume=3, foreground=0.5,
                             shuffle=False, deterministic=True, seed=5)
    assert images.shape == (len(records) * 3, *PATCH, 1) and masks.shape == (len(records) * 3, *PATCH)
    for image, mask in zip(images[::2], masks[::2], strict=True):  # every other patch keeps it quick
        assert _where(image[..., 0], mask, records, volume), "a patch that is no window of any record"


def test_patches_past_the_border_take_the_padding_value(job: Path) -> None:
    # patches longer than the volume along the last axis (88): every patch runs past it
    records = _records(job)
    fills = {float(r["fill"][0]) for r in records}
    images, masks = _patches(job, batch_size=8, patch=(8, 8, 120), patches_per_volume=2, foreground=0.0, seed=4)
    for image, mask in zip(images[..., 0], masks, strict=True):
        assert float(image[0, 0, 0]) in fills and float(image[-1, -1, -1]) in fills  # 16 columns each side
        assert mask[:, :, :16].max() == 0 and mask[:, :, -16:].max() == 0


def test_foreground_patches_are_centred_on_the_class_asked_for(job: Path) -> None:
    centre = tuple(n // 2 for n in PATCH)
    for value, name_or_value in ((1, 1), (2, 2)):
        weights = {name_or_value: 1.0}
        _, masks = _patches(job, batch_size=8, patch=PATCH, patches_per_volume=4, foreground=1.0,
                            class_weights=weights, seed=1)
        assert (masks[(slice(None), *centre)] == value).all()
    # by sequence (the manifest's location label order) as well
    labels = read_manifest(job).features["location_counts"].layout["labels"]
    _, masks = _patches(job, batch_size=8, patch=PATCH, patches_per_volume=4, foreground=1.0,
                        class_weights=[0.0 if v != 2 else 1.0 for v in labels], seed=1)
    assert (masks[(slice(None), *centre)] == 2).all()


def test_without_foreground_origins_are_uniform_and_the_rest_is_foreground(job: Path) -> None:
    centre = tuple(n // 2 for n in PATCH)
    _, masks = _patches(job, batch_size=8, patch=PATCH, patches_per_volume=8, foreground=1.0, seed=2)
    assert (masks[(slice(None), *centre)] > 0).all()
    _, masks = _patches(job, batch_size=8, patch=PATCH, patches_per_volume=8, foreground=0.0, seed=2)
    centres = masks[(slice(None), *centre)]
    assert (centres == 0).any()  # heads fill ~40% of the box: 64 uniform draws hit background


def test_counts_follow_the_plan_on_every_host(job: Path) -> None:
    n = read_manifest(job).splits["train"].num_records
    ds = volprep.load(job, batch_size=5, patch=PATCH, patches_per_volume=3, seed=0)
    assert int(ds.cardinality()) == -(-n * 3 // 5)
    assert sum(int(b[0].shape[0]) for b in ds) == n * 3
    per_host = [sum(int(b[0].shape[0]) for b in volprep.load(job, batch_size=4, patch=PATCH, patches_per_volume=2,
                                                            num_shards=2, shard_index=i, seed=0)) for i in (0, 1)]
    assert per_host[0] == per_host[1] > 0


def test_seeded_deterministic_patches_repeat_and_another_seed_differs(job: Path) -> None:
    kw = dict(batch_size=4, patch=PATCH, patches_per_volume=2, deterministic=True, shuffle=False)
    a, am = _patches(job, seed=11, **kw)
    b, bm = _patches(job, seed=11, **kw)
    c, _ = _patches(job, seed=12, **kw)
    assert np.array_equal(a, b) and np.array_equal(am, bm)
    assert not np.array_equal(a, c)


def test_patches_take_the_batched_augmentation(job: Path) -> None:
    augment = volprep.Augment(flip_axes=(0, 1, 2), rotate_deg=10.0, seed=3)
    ds = volprep.load(job, batch_size=4, patch=PATCH, patches_per_volume=4, augment=augment, seed=3,
                      drop_remainder=True, dtype="float16")
    image, mask = next(iter(ds))
    assert image.shape == (4, *PATCH, 1) and image.dtype.name == "float16"
    assert mask.shape == (4, *PATCH) and set(np.unique(mask.numpy())) <= {0, 1, 2}


def test_a_bad_patch_request_is_refused(job: Path, demo_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patch must be three sizes"):
        volprep.load(job, patch=(8, 8))
    with pytest.raises(ValueError, match="patches_per_volume"):
        volprep.load(job, patch=PATCH, patches_per_volume=0)
    with pytest.raises(ValueError, match="class_weights names label 7"):
        volprep.load(job, patch=PATCH, class_weights={7: 1.0})
    config = tmp_path / "c.toml"
    config.write_text('[job]\nsplits = { train = 1.0 }\n[preprocess]\nclass_locations = 0\n')
    out = tmp_path / "out"
    assert main(["shards", str(demo_data), "--out", str(out), "--config", str(config), "--quiet", "--no-report"]) == 0
    with pytest.raises(ValueError, match="class locations"):
        volprep.load(out, patch=(8, 8, 8), target="mask")
    images = next(iter(volprep.load(out, patch=(8, 8, 8), target="mask", foreground=0.0, batch_size=3)))[0]
    assert images.shape[1:4] == (8, 8, 8)


@pytest.fixture(scope="module")
def atlas_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """INIA19 heads with the NeuroMaps atlas (~660 sparse labels, most under 0.5% of voxels)."""
    root = tmp_path_factory.mktemp("patch-atlas")
    config = root / "job.toml"
    config.write_text('[job]\nseed = 1\nsplits = { train = 1.0 }\n[preprocess]\nreduce = "none"\n')
    out = root / "out"
    assert main(["shards", str(task("atlas")), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report"]) == 0
    return out


def test_a_rare_class_gets_the_share_of_patches_asked_for(atlas_job: Path) -> None:
    """Label 3 covers 0.15% of the voxels; half the patches are foreground, and the class
    of a foreground patch is 3 or 1 with equal weight: a quarter of the patches each."""
    records = _records(atlas_job)
    volume = read_manifest(atlas_job).features.label_volume
    share3 = np.mean([np.mean(r[volume] == 3) for r in records])
    assert share3 < 0.01
    size = (16, 16, 16)
    ds = volprep.load(atlas_job, batch_size=64, patch=size, patches_per_volume=64, foreground=0.5,
                      class_weights={3: 1.0, "NeuroMaps_1": 1.0}, repeat=True, seed=8)
    centres = np.concatenate([mask.numpy()[:, 8, 8, 8] for _, mask in ds.take(40)])
    assert len(centres) == 2560
    for value in (3, 1):
        assert abs(np.mean(centres == value) - 0.25) < 0.04, (value, np.mean(centres == value))


def test_an_input_context_deals_equal_patch_counts(job: Path) -> None:
    import tensorflow as tf

    n = read_manifest(job).splits["train"].num_records
    counts = []
    for i in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)
        ds = volprep.load(job, batch_size=8, patch=PATCH, patches_per_volume=2, input_context=context, seed=0)
        counts.append(sum(int(b[0].shape[0]) for b in ds))
    assert counts[0] == counts[1] == (n // 2) * 2
