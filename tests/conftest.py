"""Shared fixtures for the job-level tests: a small demo dataset, pipeline files, helpers.

Kept small on purpose: a 12-case demo dataset (32x32x20 voxels) written once a session,
a pipeline TOML writer, a function that runs the real ``volprep`` command line in a
subprocess, and one that collects what must be byte-identical between runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CASES = 12


def pipeline_toml(path: Path, *, shard_size_mb: float = 0.02, normalize: str = "zscore",
                  factor: int = 2) -> Path:
    """Writes a pipeline TOML (the defaults, small shards so a job writes several)."""
    path.write_text(f"""
[job]
seed = 7
splits = {{ train = 0.75, val = 0.25 }}
shard_size_mb = {shard_size_mb}
on_error = "skip"
[preprocess]
reduce = "downsample"
factor = {factor}
normalize = "{normalize}"
dtype = "float16"
[balance]
enabled = true
max_copies_per_case = 2
[augment]
flip_axes = [0]
rotate_deg = 10
scale = [0.9, 1.1]
shift_vox = 2
""")
    return path


FAULTS = Path(__file__).resolve().parent / "faultinject"


def hold_env(case_id: str, folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes hold ``case_id`` before converting it.

    The test-only hook lives in ``tests/faultinject/sitecustomize.py`` (volprep has none):
    the process converting the case writes its pid into ``folder`` and sleeps, so a test
    can kill exactly that worker.
    """
    import os

    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAULTS), env.get("PYTHONPATH", "")) if p)
    env["VOLPREP_TEST_HOLD_CASE"] = f"{case_id}:{folder}"
    return env


def package_with_unit(root: Path, module: str, source: str, registry: str, last_line: str) -> tuple[Path, list[str], list[str]]:
    """A copy of the volprep package under ``root`` with one unit added the documented way.

    Writes ``source`` as the new module ``module`` (a path in the package, e.g.
    ``"reductions/stride.py"``) and adds its dotted name after ``last_line`` (the registry's
    current last entry) in the table of ``registry`` (e.g. ``"reductions/__init__.py"``).

    Returns:
        ``(package copy, the registry's changed lines as a unified diff, every file that
        differs from the installed package)``: what a test counts.
    """
    import difflib
    import shutil

    import volprep

    package = Path(volprep.__file__).parent
    copy = root / "volprep"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / module).write_text(source)
    table = copy / registry
    text = table.read_text()
    dotted = "volprep." + module.removesuffix(".py").replace("/", ".")
    edited = text.replace(f'    "{last_line}",\n)', f'    "{last_line}",\n    "{dotted}",\n)', 1)
    table.write_text(edited)
    diff = [line for line in difflib.unified_diff(text.splitlines(), edited.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    changed = [p.relative_to(root).as_posix() for p in sorted(copy.rglob("*"))
               if p.is_file() and (not (package / p.relative_to(copy)).exists()
                                   or (package / p.relative_to(copy)).read_bytes() != p.read_bytes())]
    return copy, diff, changed


def outputs(out: Path) -> dict[str, bytes]:
    """What must be byte-identical between runs: the manifest and every shard it names.

    (Shards of the generation before stay beside them until the next job, for loaders
    still reading them; they are not part of what a job publishes.)
    """
    import json

    manifest = (out / "manifest.json").read_bytes()
    names = [s["file"] for info in json.loads(manifest)["splits"].values() for s in info["shards"]]
    files = {name: (out / name).read_bytes() for name in sorted(names)}
    files["manifest.json"] = manifest
    return files


def start_cli(data: Path, out: Path, config: Path, *extra: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Starts ``volprep shards`` as a real subprocess (the venv's interpreter)."""
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out),
           "--config", str(config), "--quiet", "--no-report", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-case demo dataset (MSD layout, 32x32x20); tests must not modify it."""
    from volprep.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo") / "data", n_cases=DEMO_CASES,
                      shape=(32, 32, 20), seed=1)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline TOML most job tests use."""
    return pipeline_toml(tmp_path_factory.mktemp("pipeline") / "pipeline.toml")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real-anatomy corpus (tests/realdata.py), built once and cached in .testdata/."""
    from realdata import corpus  # tests/ is on sys.path, like io_corpus

    return corpus()
