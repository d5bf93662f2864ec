"""Cache and resume with real processes: a job SIGKILLed while it preprocesses or while it
writes shards leaves no partial file under a final name, and its rerun reuses every
finished case and ends byte-identical to an uninterrupted run; config changes recompute
only the stages they affect; added cases are the only ones preprocessed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import DEMO_CASES, outputs, pipeline_toml, start_cli

from volprep.config import load_config
from volprep.runner import JobResult, run_job


def _run(data: Path, out: Path, pipeline: Path, workers: int = 2) -> JobResult:
    return run_job(data, out, load_config(pipeline), workers=workers, quiet=True)


@pytest.fixture(scope="module")
def reference(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: what every resumed run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert _run(demo_data, out, pipeline).exit_code == 0
    return out


def _cached(out: Path) -> dict[str, int]:
    """Case entries under their final names -> their mtime; each must load whole."""
    from volprep.cache import CaseCache

    root = out / "cache" / "cases"
    found = {}
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith("."):
            continue  # a temporary file: never read as a case
        CaseCache(out / "cache").load(path.stem)  # whole: every checksum holds
        found[path.stem] = path.stat().st_mtime_ns
    return found


def _kill_when(data: Path, out: Path, pipeline: Path, ready: Callable[[], bool]) -> None:
    """Runs the CLI job in a subprocess and SIGKILLs it (workers die with it) once ``ready()``."""
    proc = start_cli(data, out, pipeline, "--workers", "2")
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    try:
        while not ready():
            assert proc.poll() is None, f"the job ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "the job never reached the stage to kill"
            with contextlib.suppress(psutil.NoSuchProcess):
                children = psutil.Process(proc.pid).children(recursive=True) or children
            time.sleep(0.002)
        children = psutil.Process(proc.pid).children(recursive=True) or children
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"workers outlived the killed job: {alive}"


def test_kill_during_preprocessing_then_rerun(demo_data: Path, pipeline: Path, reference: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill_when(demo_data, out, pipeline, lambda: len(_cached(out)) >= 2)
    done = _cached(out)
    assert 2 <= len(done) < DEMO_CASES
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tfrecord"))

    result = _run(demo_data, out, pipeline)
    assert result.exit_code == 0
    assert result.cases_reused == len(done)  # every finished case reused ...
    after = _cached(out)
    assert {k: after[k] for k in done} == done  # ... and not rewritten
    assert len(after) == DEMO_CASES
    assert outputs(out) == outputs(reference)
    assert not [p for p in (out / "cache" / "cases").iterdir() if p.name.startswith(".")]


def test_kill_during_shard_writing_then_rerun(demo_data: Path, pipeline: Path, reference: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    final = outputs(reference)

    def writing() -> bool:
        return bool(list(out.glob("*.tfrecord")) or list(out.glob(".*.tfrecord.tmp-*")))

    _kill_when(demo_data, out, pipeline, writing)
    assert not (out / "manifest.json").exists()
    assert len(_cached(out)) == DEMO_CASES
    for shard in out.glob("*.tfrecord"):  # whatever is under a final name is whole
        assert shard.read_bytes() == final[shard.name]

    result = _run(demo_data, out, pipeline)
    assert result.exit_code == 0 and result.cases_reused == DEMO_CASES
    assert outputs(out) == final
    assert not list(out.glob(".*.tmp-*"))


def _without_case(src: Path, dst: Path, case_id: str) -> None:
    """Copies an MSD dataset (keeping mtimes) without one case."""
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub / f"{case_id}.nii.gz").unlink()
    index = json.loads((dst / "dataset.json").read_text())
    index["training"] = [t for t in index["training"] if case_id not in t["image"]]
    index["numTraining"] = len(index["training"])
    (dst / "dataset.json").write_text(json.dumps(index))
    lines = (dst / "labels.csv").read_text().splitlines(keepends=True)
    (dst / "labels.csv").write_text("".join(x for x in lines if not x.startswith(f"{case_id},")))


def test_adding_a_case_preprocesses_only_it(demo_data: Path, pipeline: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    _without_case(demo_data, data, "demo_010")
    first = _run(data, out, pipeline)
    assert first.cases_converted == DEMO_CASES - 1 and first.cases_reused == 0
    first_splits = json.loads((out / "plan.json").read_text())["splits"]
    before = _cached(out)
    for name in ("imagesTr/demo_010.nii.gz", "labelsTr/demo_010.nii.gz", "dataset.json", "labels.csv"):
        shutil.copy2(demo_data / name, data / name)

    second = _run(data, out, pipeline)
    assert second.cases_converted == DEMO_CASES and second.cases_reused == DEMO_CASES - 1
    after = _cached(out)
    assert set(after) - set(before) == {"demo_010"}
    assert {k: after[k] for k in before} == before
    # Old cases kept their splits (stable splits); given those same splits, a fresh run
    # over the grown dataset writes the same shards.
    plan = json.loads((out / "plan.json").read_text())
    assert {c: s for s, ids in plan["splits"].items() for c in ids if c != "demo_010"} == \
        {c: s for s, ids in first_splits.items() for c in ids}
    split_file = tmp_path / "splits_final.json"
    split_file.write_text(json.dumps([plan["splits"]]))
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(pipeline.read_text().replace("[job]\n", f"[job]\nsplit_file = {str(split_file)!r}\n"))
    fresh = tmp_path / "fresh"
    assert _run(data, fresh, pinned).cases_reused == 0
    # the grown job appended the new case as generation 1 (volprep.append); --rebuild
    # rewrites every split as one generation, what the fresh run wrote
    assert {s.generation for info in second.manifest.splits.values() for s in info.shards} == {0, 1}
    rebuilt = run_job(data, out, load_config(pipeline), workers=2, quiet=True, rebuild=True)
    assert rebuilt.cases_reused == DEMO_CASES
    shards = {k: v for k, v in outputs(out).items() if k != "manifest.json"}
    assert shards == {k: v for k, v in outputs(fresh).items() if k != "manifest.json"}


def test_config_changes_recompute_only_affected_stages(demo_data: Path, reference: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    old = outputs(out)

    bigger = _run(demo_data, out, pipeline_toml(tmp_path / "a.toml", shard_size_mb=1.0))
    assert bigger.cases_reused == DEMO_CASES  # shard size: shards rewritten, cache reused
    new = outputs(out)
    # a split cut into other shards gets other names; one that fits one shard either way
    # keeps its name and bytes
    assert len(new) < len(old) and all(old[k] == new[k] for k in set(old) & set(new) if k != "manifest.json")
    assert any(k.startswith("train-") for k in set(old) - set(new))
    # the old generation stays until the next job (a loader may still be reading it)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == sorted((set(new) | set(old)) - {"manifest.json"})

    norm = _run(demo_data, out, pipeline_toml(tmp_path / "b.toml", shard_size_mb=1.0, normalize="percentile"))
    assert norm.cases_reused == DEMO_CASES  # normalisation is applied when shards are written
    assert outputs(out) != new
    assert norm.manifest.normalization["method"] == "percentile"

    factor = _run(demo_data, out, pipeline_toml(tmp_path / "c.toml", shard_size_mb=1.0, factor=4))
    assert factor.cases_reused == 0 and factor.cases_converted == DEMO_CASES
    assert factor.manifest.target_shape != norm.manifest.target_shape


@pytest.mark.slow
def test_resume_and_memory_benchmarks_run_quick(tmp_path: Path) -> None:
    import importlib.util

    for name, keys in (("bench_resume", {"resume", "scaling"}), ("bench_memory", {"rows"})):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = tmp_path / f"{name}.json"
        assert module.main(["--quick", "--out", str(out)]) == 0
        result = json.loads(out.read_text())
        assert keys <= set(result) and result["quick"] is True
    assert len(json.loads((tmp_path / "bench_memory.json").read_text())["rows"]) == 2


def test_fidelity_figures_come_only_from_the_sample(demo_data: Path, pipeline: Path, tmp_path: Path) -> None:
    """A case cached without fidelity is remeasured when it joins the sample; a case cached
    with it never leaks figures when it is out of the sample (manifest = f(inputs) only)."""
    from volprep.cases import discover
    from volprep.convert import convert_case

    case = discover(demo_data).cases[0]
    config, cache = load_config(pipeline), str(tmp_path / "cache")
    first = convert_case(case, config, cache, None, False)
    assert first.ok and not first.reused and "fidelity" not in first.meta
    assert convert_case(case, config, cache, None, False).reused
    measured = convert_case(case, config, cache, None, True)
    assert not measured.reused and measured.meta["fidelity"]["psnr"] > 0
    assert convert_case(case, config, cache, None, True).reused
    out_of_sample = convert_case(case, config, cache, None, False)
    assert out_of_sample.reused and "fidelity" not in out_of_sample.meta
