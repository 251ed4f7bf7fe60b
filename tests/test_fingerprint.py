"""Stage fingerprints are the same in every process running the same script, and change with its code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from zephyr_arrow import Dataset
from zephyr_arrow.execution.fingerprint import digest
from zephyr_arrow.planner import plan

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dataclasses import dataclass
    import polars as pl
    from zephyr_arrow import Dataset
    from zephyr_arrow.execution.fingerprint import digest
    from zephyr_arrow.planner import plan

    STOP = {{"a", "the", "of", "and", "to", "in"}}  # a set: pickled in the process's hash order
    FACTOR = {factor}

    @dataclass
    class Row:  # a class of the script: cloudpickle gives it a tracker id per process
        word: str

    def clean(word):
        return {{"word": word, "stop": word in STOP, "row": Row(word)}}

    pipeline = (
        Dataset.from_list(["a", "cat", "the"], num_shards=2)
        .map(clean)
        .map(lambda r: {{**r, "n": len(r["word"]) * FACTOR}})
        .map(json.dumps)
        .map(json.loads)
        .filter(pl.col("n") > 1)
        .group_by("stop", lambda key, rows: {{"stop": key, "words": frozenset(r["word"] for r in rows)}})
    )
    print(json.dumps([digest(stage.for_worker().ops) for stage in plan(pipeline).stages]))
    """
)


def fingerprints(tmp_path, factor: int, hash_seed: str) -> list[str]:
    script = tmp_path / f"pipeline_{factor}.py"
    script.write_text(SCRIPT.format(factor=factor))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True
    )
    return result.stdout.split('"')[1::2]


def test_the_same_script_has_the_same_fingerprints_in_two_processes(tmp_path):
    first, second = fingerprints(tmp_path, 2, "1"), fingerprints(tmp_path, 2, "2")
    assert len(first) == 2
    assert first == second


def test_a_changed_constant_changes_the_fingerprint_of_the_stage_using_it(tmp_path):
    assert fingerprints(tmp_path, 2, "1")[0] != fingerprints(tmp_path, 3, "1")[0]


def test_an_imported_functions_code_is_part_of_its_fingerprint(tmp_path, monkeypatch):
    module = tmp_path / "fp_helper_module.py"
    module.write_text("def step(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fp_helper_module

    before = digest(plan(Dataset.from_list([1]).map(fp_helper_module.step)).stages[0].for_worker().ops)
    fp_helper_module.step.__code__ = compile("def step(x):\n    return x + 2\n", str(module), "exec").co_consts[0]
    after = digest(plan(Dataset.from_list([1]).map(fp_helper_module.step)).stages[0].for_worker().ops)
    assert before != after


def test_a_pipeline_that_cannot_be_pickled_cannot_be_checkpointed(tmp_path):
    import threading

    import pytest

    from zephyr_arrow import PlanError, ZephyrContext

    lock = threading.Lock()

    def locked(x):
        with lock:
            return x

    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path), progress=False) as ctx:
        assert ctx.execute(Dataset.from_list([1, 2]).map(locked)).to_pylist() == [1, 2]  # fine without a checkpoint
        with pytest.raises(PlanError, match=r"checkpoint= needs every function of the pipeline to be picklable .* stage 0 \(from_list"):
            ctx.execute(Dataset.from_list([1, 2]).map(locked), checkpoint="locked")
