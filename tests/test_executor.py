"""The executor between stages: what each stage's chunk files are, and when they are deleted."""

from __future__ import annotations

import collections
import os

from zephyr_arrow import Dataset, ZephyrContext
from zephyr_arrow.planner import StageKind, plan


def _stage_dirs_seen_by(prefix: str):
    """A reducer that returns its key, its rows' sum and the stage directories present while it runs."""

    def reduce(key, rows):
        (run,) = os.listdir(prefix)
        stages = sorted(name.split("-")[1] for name in os.listdir(os.path.join(prefix, run)) if name.startswith("stage-"))
        return {"k": key, "total": sum(r["n"] for r in rows), "stages": stages}

    return reduce


def test_a_stages_chunks_are_deleted_as_soon_as_the_next_stage_has_read_them(backend, backend_options, tmp_path):
    prefix = str(tmp_path / "chunks")
    rows = [{"x": i, "n": i * 3} for i in range(60)]
    ds = (
        Dataset.from_list(rows, num_shards=4)
        .group_by("x", lambda x, rs: {"k": x % 5, "n": sum(r["n"] for r in rs)})
        .group_by("k", _stage_dirs_seen_by(prefix), num_output_shards=2)
    )
    assert [s.kind for s in plan(ds).stages] == [StageKind.SCATTER, StageKind.SHUFFLE, StageKind.SCATTER, StageKind.SHUFFLE]
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, **backend_options) as ctx:
        out = sorted(ctx.execute(ds).to_pylist(), key=lambda r: r["k"])
    totals = collections.Counter()
    for row in rows:
        totals[row["x"] % 5] += row["n"]
    assert [(r["k"], r["total"]) for r in out] == sorted(totals.items())
    # While stage 3 ran, stage 2's chunks (its input) were there; stages 0 and 1, read by then, were gone.
    # (Stage 3's own directory exists once one of its tasks has written.)
    assert all(r["stages"] in (["02"], ["02", "03"]) for r in out), [r["stages"] for r in out]
