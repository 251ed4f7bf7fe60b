"""Relative paths mean on every worker what they mean on the driver: its working directory."""

from __future__ import annotations

import json
import os

from zephyr_arrow import Dataset, ZephyrContext

ROWS = [{"id": i, "word": f"w{i % 3}"} for i in range(12)]


def test_relative_inputs_outputs_and_chunk_prefix_resolve_in_the_drivers_directory(backend, backend_options, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ray's workers started elsewhere, in the session's directory
    os.makedirs("in")
    for part in range(2):
        with open(f"in/part-{part}.jsonl", "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in ROWS[part * 6 : (part + 1) * 6])
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix="chunks", preserve_chunks=True, **backend_options) as ctx:
        ds = Dataset.from_files("in/*.jsonl").load_jsonl().map(lambda row: {**row, "len": len(open(f"in/part-{row['id'] // 6}.jsonl").read())})
        written = ctx.execute(ds.write_jsonl("out/part-{shard:05d}.jsonl")).to_pylist()
    assert sorted(written) == [str(tmp_path / "out" / f"part-{shard:05d}.jsonl") for shard in range(2)] or sorted(written) == [
        f"out/part-{shard:05d}.jsonl" for shard in range(2)
    ]
    back = [json.loads(line) for shard in range(2) for line in open(tmp_path / "out" / f"part-{shard:05d}.jsonl")]
    sizes = [os.path.getsize(tmp_path / "in" / f"part-{part}.jsonl") for part in range(2)]
    assert back == [{**row, "len": sizes[row["id"] // 6]} for row in ROWS]
    assert os.listdir(tmp_path / "chunks"), "the relative chunk prefix is under the driver's directory"
