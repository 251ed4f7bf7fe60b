"""Where chunk files live: every path zephyr_arrow writes is built here.

    {prefix}/{execution_id}/{stage}/shard=00003/chunk-00001-attempt-0.parquet

Hive style (``shard=NNNNN``) and zero padded, so ``ls`` sorts them and DuckDB or
pyarrow read any stage's output with a plain glob. The attempt number is part of
the file name: a stale attempt of a retried task can never overwrite or be
mistaken for the accepted one.
"""

from __future__ import annotations

import hashlib
import re
import uuid

MANIFEST_NAME = "_zephyr_manifest.json"
CHECKPOINT_DIR_NAME = "_checkpoint"  # a checkpointed run's records, inside its execution directory
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_execution_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def join(*parts: str) -> str:
    """Join path parts with single slashes, keeping a URL's ``scheme://``."""
    head, *rest = parts
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest)])


def checkpoint_execution_id(key: str) -> str:
    """The stable execution id of the checkpoint ``key``: readable, and unique however ``key`` is spelled."""
    return f"ckpt-{_UNSAFE.sub('_', key)[:60]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def stage_dir_name(stage_index: int, stage_name: str, fingerprint: str = "") -> str:
    """A stage's directory name; a checkpointed run's carries the stage's fingerprint, so chunks of
    a stage whose code or input changed never overwrite those an older record names."""
    suffix = f"-{fingerprint[:12]}" if fingerprint else ""
    return f"stage-{stage_index:02d}-{_UNSAFE.sub('_', stage_name)[:60]}{suffix}"


def spill_dir_name(stage_dir: str, side: int) -> str:
    """The stage directory of a shuffle's merge-pass files for input ``side`` (deleted when the stage is done)."""
    return f"{stage_dir}-spill{side}"


def pieces_dir_name(stage_dir: str) -> str:
    """The stage directory of the pieces' chunks of a stage that writes files cut into pieces (its
    write tasks read them; deleted when the stage is done, or with a checkpoint when the run is)."""
    return f"{stage_dir}-pieces"


def execution_dir(prefix: str, execution_id: str) -> str:
    return join(prefix, execution_id)


def stage_dir(prefix: str, execution_id: str, stage: str) -> str:
    return join(prefix, execution_id, stage)


def shard_dir(prefix: str, execution_id: str, stage: str, shard_index: int) -> str:
    return join(prefix, execution_id, stage, f"shard={shard_index:05d}")


def chunk_path(
    prefix: str, execution_id: str, stage: str, shard_index: int, chunk_index: int, attempt: int
) -> str:
    name = f"chunk-{chunk_index:05d}-attempt-{attempt}.parquet"
    return join(shard_dir(prefix, execution_id, stage, shard_index), name)


def checkpoint_path(prefix: str, execution_id: str, *parts: str) -> str:
    """A file of a checkpointed run's records: ``lock.json``, ``run.json``, ``complete.json``."""
    return join(prefix, execution_id, CHECKPOINT_DIR_NAME, *parts)


def task_records_dir(prefix: str, execution_id: str, stage_index: int, fingerprint: str, pieces: bool = False) -> str:
    """Where a stage's committed tasks' records go; ``pieces``: those of the pieces before its write tasks."""
    name = f"stage-{stage_index:02d}-{fingerprint[:16]}"
    return checkpoint_path(prefix, execution_id, "tasks", pieces_dir_name(name) if pieces else name)


def task_record_path(prefix: str, execution_id: str, stage_index: int, fingerprint: str, shard_index: int, pieces: bool = False) -> str:
    return join(task_records_dir(prefix, execution_id, stage_index, fingerprint, pieces), f"shard-{shard_index:05d}.json")


def shared_object_path(prefix: str, execution_id: str, name: str) -> str:
    return join(prefix, execution_id, "shared", f"{_UNSAFE.sub('_', name)}.pkl")


def saved_chunk_path(directory: str, shard_index: int, chunk_index: int) -> str:
    return join(directory, f"shard={shard_index:05d}", f"chunk-{chunk_index:05d}.parquet")
