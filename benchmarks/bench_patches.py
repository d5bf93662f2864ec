"""Patch loading: ``volprep.load(patch=...)`` against whole volumes and a per-sample numpy crop.

Data: the real-anatomy corpus's tissue task (MNI152 heads with grey/white matter masks,
``tests/realdata.py``) upsampled 2x to about 1 mm (170x218x176: the size of a
full-resolution brain MRI), converted with ``reduce = "none"``, float16 images and
deflated masks. Every pipeline yields ``(image, mask)`` float32/uint8 batches of 8
patches of 96^3 (a third centred on foreground), iterated as a training loop does:

- ``volprep.load(patch=..., patches_per_volume=k)`` for k = 1 and 4 (offline class
  locations, batched crops in TF);
- the whole-volume loader (batch 2), for volumes/s;
- the per-sample baseline: ``tf.data.Dataset.from_generator`` over a Python generator that
  loads one preprocessed case (``.npy`` image and mask, as nnU-Net keeps them: no decode
  cost at all), finds foreground with ``np.argwhere`` for a foreground patch, crops with
  numpy (padding past the border) and yields one patch.

``--quick``: two tiny cases, one repeat (for the tests). Writes ``results/patches.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_load import rates  # noqa: E402
from common import CACHE, Goal, write_result  # noqa: E402

PATCH = (96, 96, 96)
BATCH = 8
FOREGROUND = 0.33


def make_data(quick: bool) -> Path:
    """An MSD-layout task of the tissue heads at ~1 mm (written once into the cache)."""
    import nibabel as nib
    import numpy as np
    import scipy.ndimage
    from realdata import task

    source = task("tissue")
    zoom = 0.5 if quick else 2.0
    out = CACHE / f"patches-tissue-z{zoom:g}"
    if (out / "dataset.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    for sub in ("imagesTr", "labelsTr"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    cases = sorted((source / "imagesTr").glob("*.nii.gz"))[:2 if quick else None]
    for path in cases:
        case = path.name.replace("_0000.nii.gz", "").removesuffix(".nii.gz")
        image = nib.load(path)
        label = nib.load(source / "labelsTr" / f"{case}.nii.gz")
        affine = image.affine.copy()
        affine[:3, :3] /= zoom
        big = scipy.ndimage.zoom(np.asarray(image.dataobj, dtype=np.float32), zoom, order=1)
        mask = scipy.ndimage.zoom(np.asarray(label.dataobj), zoom, order=0)
        nib.save(nib.Nifti1Image(big.astype(np.int16), affine), tmp / "imagesTr" / path.name)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp / "labelsTr" / f"{case}.nii.gz")
    meta = json.loads((source / "dataset.json").read_text())
    kept = {f"./imagesTr/{p.name}" for p in cases}
    meta["training"] = [entry for entry in meta["training"] if entry["image"] in kept]
    meta["numTraining"] = len(meta["training"])
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
    tmp.rename(out)
    return out


def convert(data: Path) -> Path:
    from volprep.cli import main

    out = data.with_name(data.name + "-shards")
    config = data.with_name(data.name + ".toml")
    config.write_text('[job]\nseed = 0\nsplits = { train = 1.0 }\nfidelity_sample = 0\n'
                      '[preprocess]\nreduce = "none"\ndtype = "float16"\nmask_encoding = "deflate"\n'
                      '[balance]\nenabled = false\n')
    code = main(["shards", str(data), "--out", str(out), "--config", str(config), "--quiet", "--no-report"])
    if code != 0:
        raise RuntimeError(f"conversion failed ({code})")
    return out


def npy_cases(out: Path) -> list[tuple[Path, Path]]:
    """The shards' records as preprocessed .npy pairs (float32 image, uint8 mask)."""
    import numpy as np

    from volprep.manifest import read_manifest
    from volprep.records import iter_records

    manifest = read_manifest(out)
    folder = out.with_name(out.name + "-npy")
    folder.mkdir(exist_ok=True)
    pairs = []
    volume = manifest.features.label_volume
    for shard in manifest.splits["train"].shards:
        for raw in iter_records(out / shard.file):
            record = manifest.features.decode(raw)
            name = str(record["case_id"])
            image, mask = folder / f"{name}_image.npy", folder / f"{name}_mask.npy"
            if not mask.is_file():
                np.save(image, record["image"].astype(np.float32))
                np.save(mask, record[volume].astype(np.uint8))
            pairs.append((image, mask))
    return pairs


def numpy_generator(pairs: list[tuple[Path, Path]], shape: tuple[int, ...], patch: tuple[int, int, int]) -> Any:
    """The per-sample baseline: load, find foreground, crop, one patch a read."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def crop(array: np.ndarray, start: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((*patch, *array.shape[3:]), fill, array.dtype)
        lo = np.maximum(start, 0)
        hi = np.minimum(start + patch, array.shape[:3])
        src = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        out[dst] = array[src]
        return out

    def gen() -> Any:
        for i in rng.permutation(len(pairs)):
            image, mask = np.load(pairs[i][0]), np.load(pairs[i][1])
            dims, size = np.array(mask.shape), np.array(patch)
            if rng.random() < FOREGROUND:
                found = np.argwhere(mask > 0)
                start = found[rng.integers(len(found))] - size // 2
            else:
                start = np.array([rng.integers(max(1, d - p + 1)) for d, p in zip(dims, size, strict=True)])
            yield crop(image, start, float(image.min())), crop(mask, start, 0)

    sig = (tf.TensorSpec((*patch, shape[-1]), tf.float32), tf.TensorSpec(patch, tf.uint8))
    return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def measure(quick: bool, repeats: int, epochs: int) -> dict[str, Any]:
    import volprep
    from volprep.manifest import read_manifest

    out = convert(make_data(quick))
    manifest = read_manifest(out)
    n = manifest.splits["train"].num_records
    shape = tuple(manifest.features["image"].shape)
    patch = (16, 16, 16) if quick else PATCH
    pairs = npy_cases(out)

    def patched(k: int) -> Any:
        return lambda: volprep.load(out, batch_size=BATCH, patch=patch, patches_per_volume=k, foreground=FOREGROUND,
                                    seed=0, repeat=False)

    makers = {"volprep patches k=1": patched(1), "volprep patches k=4": patched(4),
              "volprep whole volumes": lambda: volprep.load(out, batch_size=2, target="mask", seed=0),
              "numpy per-sample from_generator": lambda: numpy_generator(pairs, shape, patch)}
    got = rates(makers, n, epochs, repeats, warmup=1)
    per_read = {"volprep patches k=1": 1, "volprep patches k=4": 4, "volprep whole volumes": 0,
                "numpy per-sample from_generator": 1}
    rows = {}
    for name, r in got.items():
        k = per_read[name]
        rows[name] = {"volumes_per_s": r["volumes_per_s"], "patches_per_s": r["volumes_per_s"] * k if k else None,
                      "cpu_ms_per_volume": r["cpu_ms_per_volume"], "runs": r["runs"]}
    base = rows["numpy per-sample from_generator"]["patches_per_s"]
    goals = [Goal("volprep patches (k=4) / per-sample numpy crop, patches/s",
                  rows["volprep patches k=4"]["patches_per_s"] / base, 10.0),
             Goal("volprep patches (k=1) / per-sample numpy crop, patches/s",
                  rows["volprep patches k=1"]["patches_per_s"] / base, 1.0)]
    mask = manifest.features[manifest.features.label_volume]
    return {"cases": n, "shape": list(shape), "patch": list(patch), "batch": BATCH,
            "foreground": FOREGROUND, "epochs": epochs, "repeats": repeats, "mask_encoding": mask.encoding,
            "rows": rows, "goals": [g.to_dict() for g in goals]}


def report(result: dict[str, Any]) -> str:
    lines = [f"Patch loading: {result['cases']} cases {'x'.join(map(str, result['shape']))}, patches "
             f"{'x'.join(map(str, result['patch']))}, batch {result['batch']} (medians of {result['repeats']} runs)"]
    for name, r in result["rows"].items():
        patches = f"{r['patches_per_s']:8.1f} patches/s" if r["patches_per_s"] else " " * 18
        lines.append(f"  {name:34s} {r['volumes_per_s']:8.1f} volumes/s {patches}  {r['cpu_ms_per_volume']:7.1f} CPU ms/vol")
    lines += [Goal(**{k: v for k, v in g.items() if k != "met"}).line() for g in result["goals"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat (for the tests)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default results/patches.json)")
    args = parser.parse_args(argv)
    repeats, epochs = (1, 1) if args.quick else (args.repeats, args.epochs)
    result = measure(args.quick, repeats, epochs)
    print(report(result))
    print(f"wrote {write_result('patches', result, args.quick, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
