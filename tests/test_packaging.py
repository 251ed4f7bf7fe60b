"""The package as ``pip install zephyr_arrow`` delivers it: a wheel, installed without the source tree,
with its demo data and its type annotations.

The wheel is built from a copy of the sources (so the checkout gets no build/ folder) with the
venv's own setuptools, and installed with ``pip install --target`` into a folder that comes first
on PYTHONPATH, ahead of the editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = [
    "zephyr_arrow/datasets/nycflights13/flights_2013_01_07.parquet",
    "zephyr_arrow/datasets/nycflights13/airlines.csv",
    "zephyr_arrow/datasets/nycflights13/airports.csv",
    "zephyr_arrow/datasets/kjv/kjv_passages.parquet",
    "zephyr_arrow/datasets/debian/debian_descriptions.parquet",  # not the demo's: the near-duplicate tests' and benches'
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "zephyr_arrow", source / "zephyr_arrow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("zephyr_arrow-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A folder holding the installed wheel (and its bin/ scripts), nothing else."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(site / "bin" / "zephyr-arrow"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


USER_CODE = """
from zephyr_arrow import Dataset, ZephyrContext

def double(n: int) -> int:
    return n * 2

pipeline = Dataset.from_list([1, 2]).map(double)
reveal_type(pipeline)
with ZephyrContext(backend="sync") as ctx:
    refs = ctx.execute(pipeline)
    reveal_type(refs)
    reveal_type(refs.num_rows)
count: int = pipeline
"""


def test_wheel_ships_the_demo_data_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in [*DEMO_DATA, "zephyr_arrow/py.typed"] if name not in names] == []


def test_type_checkers_see_the_installed_packages_types(installed, tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "user.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, timeout=300,
    )
    assert result.stdout.splitlines() == [
        'user.py:8: note: Revealed type is "zephyr_arrow.dataset.Dataset"',
        'user.py:11: note: Revealed type is "zephyr_arrow.store.shard_refs.ShardRefs"',
        'user.py:12: note: Revealed type is "int"',
        'user.py:13: error: Incompatible types in assignment (expression has type "Dataset", variable has type "int")  [assignment]',
    ], result.stdout + result.stderr


def test_version(installed, tmp_path):
    result = run_installed(installed, "--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"zephyr-arrow {version('zephyr_arrow')}\n")


def test_demo_runs_from_an_install_without_the_source_tree(installed, tmp_path):
    result = run_installed(installed, "demo", "--backend", "sync", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"reading {installed / 'zephyr_arrow' / 'datasets'}\n" in result.stdout
    assert f"The pipeline is {installed / 'zephyr_arrow' / 'cli' / 'demo.py'}." in result.stdout
