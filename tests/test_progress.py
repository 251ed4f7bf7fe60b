"""What a run prints when stderr is not a terminal: one summary line per stage, unless silenced.

Each case runs in a fresh interpreter with stderr piped, since pytest configures logging itself.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

PIPELINE = """
import logging
from zephyr_arrow import Dataset, ZephyrContext
{setup}
with ZephyrContext(backend="sync"{options}) as ctx:
    ctx.execute(Dataset.from_list(list(range(6)), num_shards=2).map(lambda n: n * 2).reshard(3).map(lambda n: n + 1))
print("done")
"""
SUMMARY = r"\[{stage}\] {name}: {shards} shards, 6 rows in, 6 rows out, {shards} chunks, [0-9.]+ MB, [0-9.]+s"
# A reshard regroups references and runs no tasks, so it prints no line of its own.
STAGES = [("0", re.escape("from_list(6 items, 2 shards) -> map(<lambda>)"), "2"), ("2", re.escape("map(<lambda>)"), "3")]


def run(setup: str = "", options: str = "") -> str:
    script = PIPELINE.format(setup=setup, options=options)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr
    return result.stderr


def test_without_logging_configured_each_stage_prints_one_summary_line():
    lines = run().splitlines()
    assert len(lines) == len(STAGES)
    for line, (stage, name, shards) in zip(lines, STAGES):
        assert re.fullmatch("zephyr_arrow: " + SUMMARY.format(stage=stage, name=name, shards=shards), line), line


def test_configured_logging_gets_the_summaries_once():
    lines = run(setup='logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")').splitlines()
    assert len(lines) == len(STAGES)
    for line, (stage, name, shards) in zip(lines, STAGES):
        assert re.fullmatch("zephyr_arrow INFO " + SUMMARY.format(stage=stage, name=name, shards=shards), line), line


@pytest.mark.parametrize("setup, options", [
    ('logging.getLogger("zephyr_arrow").setLevel(logging.WARNING)', ""),
    ("", ", progress=False"),
    ("logging.basicConfig(level=logging.WARNING)", ""),
], ids=["logger-level", "progress-false", "root-at-warning"])
def test_silenced(setup, options):
    assert run(setup, options) == ""
