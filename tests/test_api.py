"""The public surface, pinned and documented; and a Zephyr pipeline that ports by changing its imports."""

from __future__ import annotations

import functools
import gzip
import inspect
import json
import subprocess
import sys

import zephyr_arrow
from zephyr_arrow import Dataset

PUBLIC = {
    "DEFAULT_FILE_PATH_COLUMN", "ChunkCorruptError", "ChunkMissingError", "ChunkRef", "Dataset", "InputFileError",
    "ObjectStoreError", "Plan", "PlanError",
    "SchemaConflictError", "ShardFailedError", "ShardInfo", "ShardRefs", "WorkerContext", "ZephyrContext",
    "ZephyrError", "col", "compute_plan", "counters", "lit", "load_file", "load_jsonl", "load_parquet", "plan",
    "read_parquet", "worker_ctx", "write_jsonl_file", "write_parquet_file", "zephyr_worker_ctx",
    # Zephyr's names (issue #21)
    "Expr", "InputFileSpec", "OutputTypeError", "ZephyrExecutionResult", "ZephyrWorkerError", "infer_arrow_schema",
    "load_vortex", "write_vortex_file",
}

# Zephyr's Dataset methods (shared/reference/zephyr-api.md, section 1.2), all present with their names.
ZEPHYR_DATASET_METHODS = {
    "from_list", "from_iterable", "from_files", "map", "flat_map", "filter", "select", "take_per_shard", "window",
    "window_by", "map_shard", "reshard", "load_file", "load_parquet", "load_jsonl", "write_jsonl", "write_parquet",
    "group_by", "deduplicate", "reduce", "count", "sorted_merge_join",
}


def test_public_surface_is_pinned():
    assert set(zephyr_arrow.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(zephyr_arrow, name) is not None


def test_zephyr_dataset_methods_exist():
    assert ZEPHYR_DATASET_METHODS <= set(dir(Dataset))


def _members(obj: object):
    """The public functions, methods, properties and classes a module or class defines itself."""
    home = obj.__name__ if inspect.ismodule(obj) else obj.__module__
    for name, member in vars(obj).items():
        if isinstance(member, property):
            member = member.fget
        elif isinstance(member, functools.cached_property):
            member = member.func
        elif isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.isclass(member)) and member.__module__ == home:
            yield name, member


def _has_docstring(obj: object) -> bool:
    doc = (obj.__doc__ or "").strip()
    return bool(doc) and not (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("))  # a dataclass's signature


def test_every_public_name_and_method_has_a_docstring():
    missing = []
    for name in sorted(PUBLIC):
        obj = getattr(zephyr_arrow, name)
        if isinstance(obj, str):  # DEFAULT_FILE_PATH_COLUMN
            continue
        if not _has_docstring(obj):
            missing.append(name)
        if inspect.ismodule(obj) or (inspect.isclass(obj) and obj.__module__.startswith("zephyr_arrow")):
            missing += [f"{name}.{member_name}" for member_name, member in _members(obj) if not _has_docstring(member)]
    assert missing == []


def test_api_reference_builds_with_one_command(tmp_path):
    # The README's command: pdoc -o DIR zephyr_arrow (pdoc is in the docs and test extras).
    subprocess.run([sys.executable, "-m", "pdoc", "-o", str(tmp_path), "zephyr_arrow"], check=True, capture_output=True)
    page = (tmp_path / "zephyr_arrow.html").read_text()
    assert "Call <code>reducer(key, rows_iterator)</code> once per key" in page
    assert all(f'id="Dataset.{method}"' in page for method in ZEPHYR_DATASET_METHODS)
    assert (tmp_path / "zephyr_arrow" / "counters.html").is_file()


def test_import_is_light():
    code = "import sys, zephyr_arrow; print(sorted(m for m in ('ray', 'pyarrow', 'polars', 'duckdb', 'fsspec') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_reading_an_output_with_sql_imports_no_engine(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"n": [1, 2, 3]}), tmp_path / "part-0.parquet")
    code = (
        "import sys; from zephyr_arrow import read_parquet; "
        f"print(read_parquet({str(tmp_path / '*.parquet')!r}).sql('select sum(n) from data').fetchall()[0][0]); "
        "print(sorted(m for m in ('polars', 'fsspec', 'zephyr_arrow.dataset', 'zephyr_arrow.execution') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["6", "[]"]


def test_a_zephyr_pipeline_ports_by_changing_imports(tmp_path):
    # Written as for Zephyr; only the import line differs.
    from zephyr_arrow import Dataset, ZephyrContext, col, counters, load_jsonl, write_jsonl_file  # noqa: F811

    docs = [{"id": i, "lang": "en" if i % 3 else "de", "score": i / 10} for i in range(10)]
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as out:
        out.writelines(json.dumps(d) + "\n" for d in docs)

    def tag(doc):
        counters.increment("tagged")
        return {**doc, "tag": doc["lang"].upper()}

    ctx = ZephyrContext(max_workers=2, chunk_storage_prefix=str(tmp_path / "chunks"))
    pipeline = (
        Dataset.from_files(str(tmp_path / "*.jsonl.gz"))
        .flat_map(load_jsonl)
        .filter(col("score") > 0.25)
        .map(tag)
        .group_by(lambda d: d["tag"], reducer=lambda key, items: {"tag": key, "n": sum(1 for _ in items)})
    )
    result = ctx.execute(pipeline)
    kept = [d for d in docs if d["score"] > 0.25]
    expected = [{"tag": t, "n": sum(1 for d in kept if d["lang"].upper() == t)} for t in ("DE", "EN")]
    assert sorted(result.results, key=lambda r: r["tag"]) == expected
    assert result.counters["tagged"] == len(kept)
    assert ctx.execute(Dataset.from_list(docs).count()).results == [10]
    written = write_jsonl_file(docs, str(tmp_path / "out" / "docs.jsonl"))
    assert written["count"] == 10 and list(load_jsonl(written["path"])) == docs
    ctx.close()
