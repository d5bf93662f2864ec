"""Benchmark: volprep against nnU-Net v2's ``nnUNetv2_plan_and_preprocess``, side by side.

The same cases, the same content for both tools: crop to the foreground, z-score, float32,
the label volume kept beside the image, 2 processes. Each tool runs as a subprocess and is
measured from outside: wall time, the peak memory of its whole process tree (the RSS of
the root process and all its descendants, read from ``/proc`` every 50 ms, the maximum of
the sums; the goals use it. RSS counts shared pages, e.g. torch's libraries, once a
process, so the PSS sum is reported too, sampled every second) and the bytes it wrote.

Cases: 36 MNI152-like heads at 1 mm made once from the real-anatomy corpus
(``tests/realdata.py``, task ``tissue``: 8 MNI152 2009a T1 heads at 2 mm, stored in
several orientations and dtypes, with grey/white matter masks, labels 1 and 2). Case ``i``
comes from source ``i % 8``: reoriented to RAS, a random 0-4 voxel margin cut from each
side (so boxes and origins differ), mirrored left-right with p = 0.5, upsampled 2x to
1 mm (``scipy.ndimage.zoom``, order 1 for the image, order 0 for the mask, the affine
scaled to match), its intensities scaled by U(0.8, 1.25) and given Gaussian noise (1% of
the 99th percentile) inside the head, the background outside the head set to 0 (as in the
MNI152 template: nnU-Net crops to the nonzero box, so a noisy background would leave it
nothing to crop), stored int16 (image) and uint8 (mask), seed fixed. ~170x218x176 voxels,
6-7 M voxels a case. They are written once as nnU-Net v2 raw data
(``DatasetNNN_Name/imagesTr/case_0000.nii.gz``, ``labelsTr/case.nii.gz``, ``dataset.json``
with ``channel_names``, ``labels``, ``numTraining``, ``file_ending``), a layout volprep
also reads (``imagesTr``/``labelsTr``, the ``_0000`` channel suffix), so both tools read
the very same files.

Rows (median of ``--repeats`` runs each; the tools take turns, the order rotating each
repeat; outputs, and volprep's conversion cache, deleted before every run):

* ``nnunet``: ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np 2 -npfp 2
  --verify_dataset_integrity`` from its own virtualenv (``--nnunet-venv``): fingerprint,
  plans, and the 3d_fullres preprocessing only. Bytes: its ``nnUNetPlans_3d_fullres``
  folder (the preprocessed cases: image float32 and segmentation, plus a ``.pkl`` of
  properties a case); the whole preprocessed dataset folder (with ``gt_segmentations``,
  the fingerprint and plans) is reported too.
* ``volprep (images raw)``: ``volprep shards DATA --out OUT --config X --workers 2
  --no-report`` with ``reduce = "none"``, ``crop_foreground = true``, ``normalize =
  "zscore"``, ``zscore_over = "all"`` (nnU-Net plans ``use_mask_for_norm = false`` for
  these cases: its crop keeps more than 3/4 of each volume, so it z-scores every voxel of
  the cropped box), ``dtype = "float32"``, no balancing, one train split, no fidelity
  sample; masks deflated (the default), images raw.
* ``volprep (images deflate)``: the same with ``image_encoding = "deflate"`` (lossless).
  Bytes: the shard files and the manifest (OUT without ``cache/``, the conversion cache,
  whose size is reported apart).

What each output holds is reported too: nnU-Net keeps each case cropped to its own
nonzero box (and says whether it resampled: it does not when every case has the same
spacing), volprep crops to the foreground box then crops/pads every case to one target
shape (the median of the cropped shapes): per-case voxel counts of both.

Goals (volprep against nnU-Net, each volprep setting): >= 3x faster (wall), >= 4x leaner
(peak RSS of the process tree), shard bytes <= 1.5x nnU-Net's 3d_fullres bytes. Writes
``results/peer_nnunet.json``; ``--quick`` uses 4 cases and 1 repeat
(``results/peer_nnunet_quick.json``). Without nnU-Net's virtualenv the nnU-Net row is
skipped with a message (volprep still runs). nnU-Net's venv: ``python3 -m venv
/work/nnunet-venv && /work/nnunet-venv/bin/pip install torch nnunetv2`` (CPU torch).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import CACHE, Goal, median, table, write_result  # noqa: E402

SOURCE = ROOT / ".testdata" / "v1" / "tissue"
PEER = CACHE / "peer-36"  # the cases (nnU-Net raw layout), then every tool's outputs
CASES_VERSION = 1  # bump when the case recipe changes: the cache is rebuilt
FULL_CASES, QUICK_CASES = 36, 4
DATASET_IDS = {FULL_CASES: 961, QUICK_CASES: 962}
LABELS = {"background": 0, "grey": 1, "white": 2}
SAMPLE_S = 0.05  # RSS of the process tree
PSS_EVERY_S = 1.0  # PSS of the process tree (costly to read)
PAGE = os.sysconf("SC_PAGE_SIZE")
WORKERS = 2
SETTINGS = {  # volprep row -> [preprocess] lines beyond the shared ones
    "volprep (images raw)": 'image_encoding = "raw"\n',
    "volprep (images deflate)": 'image_encoding = "deflate"\n',
}
NNUNET = "nnU-Net v2"


# ---------------------------------------------------------------- the cases


def _head(image: np.ndarray) -> np.ndarray:
    """The head: the largest component above 10% of the (floor, p99) range, holes filled, dilated."""
    import scipy.ndimage as ndi

    lo, hi = np.percentile(image, [0.5, 99.0])
    above = image > lo + 0.1 * (hi - lo)
    labelled, n = ndi.label(above)
    if n > 1:
        sizes = ndi.sum_labels(above, labelled, index=np.arange(1, n + 1))
        above = labelled == 1 + int(np.argmax(sizes))
    return ndi.binary_dilation(ndi.binary_fill_holes(above), iterations=2)  # type: ignore[no-any-return]


def _make_case(index: int, image_path: Path, mask_path: Path, out_image: Path, out_mask: Path) -> dict[str, Any]:
    """Case ``index`` of the set (see the module docstring) from one 2 mm source."""
    import nibabel as nib
    import scipy.ndimage as ndi

    rng = np.random.default_rng([20240, index])
    img = nib.as_closest_canonical(nib.load(str(image_path)))
    msk = nib.as_closest_canonical(nib.load(str(mask_path)))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    labels = np.rint(np.asarray(msk.get_fdata(dtype=np.float32))).astype(np.uint8)
    head = _head(data)
    lo = rng.integers(0, 5, size=3)
    hi = np.array(data.shape) - rng.integers(0, 5, size=3)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    data, labels, head = data[box], labels[box], head[box]
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    flipped = bool(rng.random() < 0.5)
    if flipped:  # mirror the anatomy left-right (the grid stays)
        data, labels, head = data[::-1], labels[::-1], head[::-1]
    # 2x: voxel j of the new grid has its centre at old voxel j/2 - 1/4 (grid_mode)
    data = ndi.zoom(data, 2, order=1, grid_mode=True, mode="nearest")
    labels = ndi.zoom(labels, 2, order=0, grid_mode=True, mode="nearest")
    head = ndi.zoom(head.astype(np.uint8), 2, order=0, grid_mode=True, mode="nearest").astype(bool)
    affine = affine @ np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 0.5, -0.25], [0, 0, 0, 1]])
    floor, p99 = np.percentile(data[head], [0.5, 99.0])
    scale = float(rng.uniform(0.8, 1.25))
    data = (data - floor) / max(p99 - floor, 1e-6) * 1000.0 * scale
    data += rng.normal(0.0, 10.0, size=data.shape).astype(np.float32)
    data = np.where(head, np.clip(data, 1, 32767), 0)  # nonzero inside the head, 0 outside
    labels = np.where(head, labels, 0).astype(np.uint8)
    out_image.parent.mkdir(parents=True, exist_ok=True)
    out_mask.parent.mkdir(parents=True, exist_ok=True)
    for array, dtype, path in ((data, np.int16, out_image), (labels, np.uint8, out_mask)):
        nifti = nib.Nifti1Image(np.rint(array).astype(dtype), affine)
        nifti.header.set_xyzt_units("mm", "sec")
        nifti.set_qform(affine, code=1)
        nifti.set_sform(affine, code=1)
        nib.save(nifti, str(path))
    return {"case": out_mask.name.split(".")[0], "source": image_path.name, "shape": list(data.shape),
            "flipped": flipped, "intensity_scale": round(scale, 3), "head_voxels": int(head.sum())}


def _dataset_json(folder: Path, n: int) -> None:
    meta = {"name": folder.name.split("_", 1)[1], "description": "MNI152-like 1 mm heads (volprep "
            "benchmarks/bench_peer_nnunet.py) from the MNI152 2009a T1 of tests/realdata.py 'tissue'",
            "channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": n, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def make_cases(n: int) -> Path:
    """The nnU-Net raw folder holding ``n`` cases (written once; ``n`` < 36: links to the first ``n``)."""
    raw = PEER / "nnUNet_raw"
    full = raw / f"Dataset{DATASET_IDS[FULL_CASES]:03d}_PeerMNI{FULL_CASES}"
    stamp = full / f".complete-v{CASES_VERSION}"
    if not stamp.is_file():
        if not (SOURCE / "dataset.json").is_file():
            raise SystemExit(f"{SOURCE} is missing: build the real-anatomy corpus first "
                             "(python -c 'import sys; sys.path.insert(0, \"tests\"); import realdata; realdata.build()')")
        shutil.rmtree(full, ignore_errors=True)
        meta = json.loads((SOURCE / "dataset.json").read_text())
        sources = [(SOURCE / t["image"], SOURCE / t["label"]) for t in meta["training"]]
        t0 = time.perf_counter()
        info = []
        for i in range(FULL_CASES):
            image, mask = sources[i % len(sources)]
            case = f"peer_{i + 1:03d}"
            info.append(_make_case(i, image, mask, full / "imagesTr" / f"{case}_0000.nii.gz",
                                   full / "labelsTr" / f"{case}.nii.gz"))
        _dataset_json(full, FULL_CASES)
        (full / "cases.json").write_text(json.dumps(info, indent=1) + "\n")
        stamp.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    if n == FULL_CASES:
        return full
    sub = raw / f"Dataset{DATASET_IDS[n]:03d}_PeerMNI{n}"
    shutil.rmtree(sub, ignore_errors=True)
    for kind, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        (sub / kind).mkdir(parents=True)
        for i in range(n):
            name = f"peer_{i + 1:03d}{suffix}.nii.gz"
            (sub / kind / name).symlink_to(full / kind / name)
    _dataset_json(sub, n)
    return sub


def case_info(data: Path) -> list[dict[str, Any]]:
    cases = json.loads((PEER / "nnUNet_raw" / f"Dataset{DATASET_IDS[FULL_CASES]:03d}_PeerMNI{FULL_CASES}"
                        / "cases.json").read_text())
    return cases[:len(list((data / "labelsTr").glob("*.nii.gz")))]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- measuring a process tree


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (``/proc/PID/task/TID/children``, cheap: no scan of /proc)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # gone meanwhile
            continue
    return found


def _rss(pid: int) -> int:
    """Resident bytes of one process (``/proc/PID/statm``; 0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size of one process (``smaps_rollup``: shared pages split between their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Runs ``cmd``; wall seconds, peak RSS and PSS of its process tree, most processes seen.

    RSS (``statm``) is summed over the tree every ``SAMPLE_S`` seconds; PSS every
    ``PSS_EVERY_S`` only, since ``smaps_rollup`` walks every mapping (~40 ms of kernel time
    for nnU-Net's tree: at 50 ms it would take a core from the tools being measured).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = {"rss": 0, "pss": 0, "processes": 0, "samples": 0}
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            last_pss = 0.0
            while not done.is_set():
                pids = _tree(proc.pid)
                rss = [_rss(p) for p in pids]
                peak["rss"] = max(peak["rss"], sum(rss))
                peak["processes"] = max(peak["processes"], sum(1 for r in rss if r))
                peak["samples"] += 1
                if time.perf_counter() - last_pss >= PSS_EVERY_S:
                    last_pss = time.perf_counter()
                    peak["pss"] = max(peak["pss"], sum(_pss(p) for p in pids))
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; its output: {log}\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "peak_rss_gb": peak["rss"] / 1e9, "peak_pss_gb": peak["pss"] / 1e9,
            "processes": peak["processes"], "samples": peak["samples"]}


def folder_bytes(folder: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files under ``folder`` (apparent sizes), top-level names in ``skip`` left out."""
    total = 0
    if not folder.exists():
        return 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.relative_to(folder).parts[0] not in skip:
            total += path.stat().st_size
    return total


# ---------------------------------------------------------------- the tools


def nnunet_env(venv: Path) -> dict[str, str]:
    env = {**os.environ, "nnUNet_raw": str(PEER / "nnUNet_raw"), "nnUNet_preprocessed": str(PEER / "nnUNet_preprocessed"),
           "nnUNet_results": str(PEER / "nnUNet_results"), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def nnunet_versions(venv: Path) -> dict[str, Any]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('nnunetv2', 'torch', 'blosc2', 'numpy', 'SimpleITK')}))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False)
    versions: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}
    du = subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=False)
    if du.returncode == 0:
        versions["venv_gb"] = round(int(du.stdout.split()[0]) / 1e9, 2)
    versions["venv"] = str(venv)
    return versions


def run_nnunet(venv: Path, data: Path, i: int) -> dict[str, Any]:
    dataset_id = int(data.name[len("Dataset"):].split("_")[0])
    pre = PEER / "nnUNet_preprocessed" / data.name
    shutil.rmtree(pre, ignore_errors=True)
    (PEER / "nnUNet_results").mkdir(parents=True, exist_ok=True)
    cmd = [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres",
           "-np", str(WORKERS), "-npfp", str(WORKERS), "--verify_dataset_integrity", "--no_pbar"]
    row = measure(cmd, nnunet_env(venv), PEER / "logs" / f"nnunet-{i}.log")
    fullres = [p for p in pre.iterdir() if p.is_dir() and p.name.endswith("_3d_fullres")]
    if len(fullres) != 1:
        raise RuntimeError(f"{pre}: expected one *_3d_fullres folder, found {[p.name for p in fullres]}")
    by_kind: dict[str, int] = {}
    for path in fullres[0].iterdir():
        kind = path.name.split(".", 1)[1] if "." in path.name else path.name
        kind = f"seg.{kind}" if path.name.split(".", 1)[0].endswith("_seg") else kind
        by_kind[kind] = by_kind.get(kind, 0) + path.stat().st_size
    row.update(bytes=folder_bytes(fullres[0]), bytes_by_kind=by_kind, bytes_all=folder_bytes(pre),
               folder=str(fullres[0]))
    return row


def volprep_config(setting: str) -> Path:
    path = PEER / f"volprep-{setting.split('(')[1].rstrip(')').replace(' ', '-')}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[job]\nseed = 0\nsplits = { train = 1.0 }\nfidelity_sample = 0\n"
                    "[preprocess]\nreduce = \"none\"\ncrop_foreground = true\nnormalize = \"zscore\"\n"
                    "zscore_over = \"all\"\ndtype = \"float32\"\nmask_encoding = \"deflate\"\n" + SETTINGS[setting]
                    + "[balance]\nenabled = false\n")
    return path


def run_volprep(setting: str, data: Path, i: int) -> dict[str, Any]:
    out = PEER / "volprep-out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out), "--config",
           str(volprep_config(setting)), "--workers", str(WORKERS), "--no-report", "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    row = measure(cmd, env, PEER / "logs" / f"volprep-{i}-{setting.split('(')[1][:-1].replace(' ', '-')}.log")
    row.update(bytes=folder_bytes(out, skip=("cache",)), cache_bytes=folder_bytes(out / "cache"),
               shard_bytes=sum(p.stat().st_size for p in out.rglob("*.tfrecord*")),
               files=sorted(str(p.relative_to(out)) for p in out.rglob("*")
                            if p.is_file() and p.relative_to(out).parts[0] != "cache"))
    row["content"] = volprep_content(out, json.loads((out / "manifest.json").read_text()))
    return row


# ---------------------------------------------------------------- what the outputs hold


def volprep_content(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The records' shape and encodings (manifest), per-case foreground boxes (cache headers)."""
    import struct

    features = manifest.get("features", {})
    shape = features.get("image", {}).get("shape")
    boxes = {}
    for path in sorted((out / "cache" / "cases").glob("*.vpc")):
        with open(path, "rb") as f:
            head = f.read(16)
            meta = json.loads(f.read(struct.unpack("<Q", head[8:16])[0]))["meta"]
        boxes[path.stem] = {"shape_before": meta["shape_before"], "cropped_shape": meta["shape"][:3],
                            "crop_box": meta.get("crop_box")}
    record = int(np.prod(shape[:3])) if shape else 0
    return {"record_shape": shape, "target_shape": manifest.get("target_shape"),
            "records": sum(int(s.get("num_records", 0)) for s in manifest.get("splits", {}).values()),
            "features": {k: f"{v.get('dtype')} {v.get('shape')} {v.get('encoding')}" for k, v in features.items()},
            "voxels_per_record": record, "cases": boxes,
            "box_voxels": [int(np.prod(b["cropped_shape"])) for b in boxes.values()],
            "cases_cropped_to_target": sum(any(n > t for n, t in zip(b["cropped_shape"], shape, strict=False))
                                           for b in boxes.values()) if shape else None,
            "notes": manifest.get("notes")}


def nnunet_content(venv: Path, folder: Path) -> dict[str, Any]:
    """Per-case shapes of nnU-Net's preprocessed cases (read with its own Python: blosc2, pickles)."""
    code = r"""
import json, pickle, sys, pathlib
import numpy as np
folder = pathlib.Path(sys.argv[1])
rows = []
for pkl in sorted(folder.glob("*.pkl")):
    case = pkl.name[:-4]
    with open(pkl, "rb") as f:
        props = pickle.load(f)
    files = sorted(p.name for p in [*folder.glob(case + ".*"), *folder.glob(case + "_seg.*")] if p.suffix != ".pkl")
    shape = dtype = None
    for name in files:
        p = folder / name
        if name.endswith(".b2nd") and not name.endswith("_seg.b2nd"):
            import blosc2
            a = blosc2.open(str(p), mode="r")
            shape, dtype = list(a.shape), str(a.dtype)
        elif name.endswith(".npy") and not name.endswith("_seg.npy"):
            a = np.load(p, mmap_mode="r")
            shape, dtype = list(a.shape), str(a.dtype)
        elif name.endswith(".npz"):
            a = np.load(p)["data"]
            shape, dtype = list(a.shape), str(a.dtype)
    rows.append({"case": case, "files": files, "data_shape": shape, "data_dtype": dtype,
                 "shape_before_cropping": [int(n) for n in props["shape_before_cropping"]],
                 "shape_after_cropping": [int(n) for n in props["shape_after_cropping_and_before_resampling"]],
                 "spacing": [float(s) for s in props["spacing"]]})
print(json.dumps(rows))
"""
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, str(folder)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-1000:]}
    rows = json.loads(done.stdout)
    plans_path = folder.parent / (folder.name.rsplit("_3d_fullres", 1)[0] + ".json")
    plans = json.loads(plans_path.read_text()) if plans_path.is_file() else {}
    fullres = plans.get("configurations", {}).get("3d_fullres", {})
    resampled = [r["case"] for r in rows if r["data_shape"] and r["data_shape"][1:] != r["shape_after_cropping"]]
    return {"cases": rows, "target_spacing": fullres.get("spacing"), "patch_size": fullres.get("patch_size"),
            "normalization": fullres.get("normalization_schemes"), "use_mask_for_norm": fullres.get("use_mask_for_norm"),
            "resampled_cases": resampled, "resampled": bool(resampled),
            "voxels": [int(np.prod(r["data_shape"][1:])) for r in rows if r["data_shape"]]}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 cases, 1 repeat (results/peer_nnunet_quick.json)")
    parser.add_argument("--nnunet-venv", type=Path, default=Path("/work/nnunet-venv"),
                        help="virtualenv with nnunetv2 installed (default /work/nnunet-venv)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each tool (default 3, --quick 1)")
    parser.add_argument("--out", type=Path, default=None, help="result file (default results/peer_nnunet.json)")
    args = parser.parse_args(argv)
    n = QUICK_CASES if args.quick else FULL_CASES
    repeats = args.repeats or (1 if args.quick else 3)

    venv = args.nnunet_venv.resolve()
    have_nnunet = (venv / "bin" / "nnUNetv2_plan_and_preprocess").is_file()
    if not have_nnunet:
        print(f"nnU-Net skipped: {venv}/bin/nnUNetv2_plan_and_preprocess not found. Make its virtualenv with "
              f"`python3 -m venv {venv} && {venv}/bin/pip install torch nnunetv2`, or pass --nnunet-venv.")

    t0 = time.perf_counter()
    data = make_cases(n)
    print(f"{n} cases in {data} ({time.perf_counter() - t0:.1f} s)", flush=True)

    tools = ([NNUNET] if have_nnunet else []) + list(SETTINGS)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    load_start = os.getloadavg()
    for r in range(repeats):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            load = os.getloadavg()[0]
            row = run_nnunet(venv, data, r) if tool == NNUNET else run_volprep(tool, data, r)
            row["load_avg_1m_before"] = load
            runs[tool].append(row)
            print(f"  run {r + 1}/{repeats} {tool}: {row['wall_s']:.1f} s, {row['peak_rss_gb']:.2f} GB RSS "
                  f"({row['peak_pss_gb']:.2f} GB PSS), {row['bytes'] / 1e6:.1f} MB, load {load:.2f}", flush=True)
    load_end = os.getloadavg()

    rows: dict[str, Any] = {}
    for tool, rs in runs.items():
        rows[tool] = {k: median([x[k] for x in rs]) for k in ("wall_s", "peak_rss_gb", "peak_pss_gb")}
        rows[tool]["mb_written"] = median([x["bytes"] / 1e6 for x in rs])
        if tool == NNUNET:
            rows[tool]["mb_whole_preprocessed_folder"] = median([x["bytes_all"] / 1e6 for x in rs])
            rows[tool]["mb_by_kind"] = {k: v / 1e6 for k, v in rs[-1]["bytes_by_kind"].items()}
            rows[tool]["content"] = nnunet_content(venv, Path(rs[-1]["folder"]))
        else:
            rows[tool]["mb_shards"] = median([x["shard_bytes"] / 1e6 for x in rs])
            rows[tool]["mb_cache_not_counted"] = median([x["cache_bytes"] / 1e6 for x in rs])
            rows[tool]["files"] = rs[-1]["files"]
            rows[tool]["content"] = rs[-1]["content"]
        rows[tool]["runs"] = [{k: v for k, v in x.items() if k not in ("files", "content", "bytes_by_kind")} for x in rs]

    goals: list[Goal] = []
    if have_nnunet:
        nn = rows[NNUNET]
        for setting in SETTINGS:
            vp = rows[setting]
            goals += [Goal(f"nnU-Net wall / {setting} wall", nn["wall_s"] / vp["wall_s"], 3.0),
                      Goal(f"nnU-Net peak RSS / {setting} peak RSS", nn["peak_rss_gb"] / vp["peak_rss_gb"], 4.0),
                      Goal(f"{setting} bytes / nnU-Net 3d_fullres bytes", vp["mb_written"] / nn["mb_written"], 1.5,
                           at_most=True)]
            vp["vs_nnunet"] = {"faster": nn["wall_s"] / vp["wall_s"], "leaner_rss": nn["peak_rss_gb"] / vp["peak_rss_gb"],
                               "leaner_pss": nn["peak_pss_gb"] / vp["peak_pss_gb"],
                               "bytes_ratio": vp["mb_written"] / nn["mb_written"]}

    content: dict[str, Any] = {}
    if have_nnunet and rows[NNUNET]["content"].get("voxels"):
        vox = rows[NNUNET]["content"]["voxels"]
        content[NNUNET] = {"what": "each case cropped to its own nonzero box, not resampled"
                           if not rows[NNUNET]["content"]["resampled"] else "each case cropped to its nonzero box, resampled",
                           "voxels_total": sum(vox), "voxels_per_case_median": median(vox),
                           "bytes_per_voxel": rows[NNUNET]["mb_written"] * 1e6 / sum(vox)}
    for setting in SETTINGS:
        c = rows[setting]["content"]
        total = c["voxels_per_record"] * c["records"]
        content[setting] = {"what": f"each case cropped to its foreground box, then cropped/padded to "
                                    f"{c['target_shape']} ({c['cases_cropped_to_target']} of {c['records']} cases cut on "
                                    f"some axis)", "voxels_total": total, "voxels_per_case_median": c["voxels_per_record"],
                            "box_voxels_total": sum(c["box_voxels"]), "box_voxels_per_case_median": median(c["box_voxels"]),
                            "bytes_per_voxel": rows[setting]["mb_written"] * 1e6 / total}

    print()
    print(table(f"{n} MNI152-like 1 mm cases, crop to foreground, z-score, float32, {WORKERS} processes "
                f"(median of {repeats})",
                [(t, f"{r['wall_s']:.1f} s", f"peak {r['peak_rss_gb']:.2f} GB RSS / {r['peak_pss_gb']:.2f} GB PSS, "
                  f"{r['mb_written']:.0f} MB written") for t, r in rows.items()],
                ("tool", "wall", "memory, bytes")))
    for tool, c in content.items():
        print(f"  {tool}: {c['what']}; {c['voxels_total'] / 1e6:.1f} M voxels, {c['bytes_per_voxel']:.2f} bytes a voxel")
    for g in goals:
        print(g.line())
    cases = case_info(data)
    path = write_result("peer_nnunet", {
        "cases": {"n": n, "folder": str(data), "source": str(SOURCE), "recipe": "see the module docstring",
                  "per_case": cases},
        "commands": {NNUNET: f"nnUNet_raw={PEER / 'nnUNet_raw'} nnUNet_preprocessed={PEER / 'nnUNet_preprocessed'} "
                             f"nnUNet_results={PEER / 'nnUNet_results'} {venv}/bin/nnUNetv2_plan_and_preprocess -d "
                             f"{DATASET_IDS[n]} -c 3d_fullres -np {WORKERS} -npfp {WORKERS} --verify_dataset_integrity --no_pbar",
                     **{s: f"{sys.executable} -m volprep shards {data} --out OUT --config {volprep_config(s)} "
                           f"--workers {WORKERS} --no-report --quiet" for s in SETTINGS},
                     "volprep_configs": {s: volprep_config(s).read_text() for s in SETTINGS}},
        "nnunet": nnunet_versions(venv) if have_nnunet else {"skipped": f"no {venv}"},
        "repeats": repeats, "rss_sample_interval_s": SAMPLE_S, "pss_sample_interval_s": PSS_EVERY_S,
        "load_avg_start": list(load_start), "load_avg_end": list(load_end),
        "rows": rows, "content": content, "goals": [g.to_dict() for g in goals],
    }, args.quick, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
