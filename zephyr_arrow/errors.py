"""Errors raised by zephyr_arrow.

    ZephyrError
    ├── PlanError              a pipeline was built with a wrong argument (raised when it is built)
    ├── InputFileError         an input file is missing, unreadable or malformed (names file and line)
    ├── SchemaConflictError    two chunks disagree on a column's type beyond promotion (names column, types, files)
    ├── OutputTypeError        a value no output file format holds (names the file, column, types and row)
    ├── ChunkMissingError      a ChunkRef's file is gone (names the path and why it may be gone)
    ├── ChunkCorruptError      a ChunkRef's file fails its checksums or is not Parquet (names the path)
    ├── ObjectStoreError       an object store kept failing past its client's retries (names operation and key)
    ├── ShardFailedError       a shard task failed: user code raised, or its worker died (names stage and shard);
    │   │                      also a RuntimeError, and importable as Zephyr's name for it, ZephyrWorkerError
    │   └── OutputPatternError several shards would write one output file (also a PlanError: found before running)
    └── CheckpointLockedError  another live driver is running the same checkpoint (names its host, pid, since when)

    UsageError                 the ``zephyr-arrow`` command line was wrong (exit code 2)
    CommandError               a ``zephyr-arrow`` command was right but its work failed (exit code 1)

Every message says what failed and where; a user's own exception is chained as ``__cause__``.
"""

from __future__ import annotations

import pyarrow as pa


class ZephyrError(Exception):
    """Base class of every error zephyr_arrow raises on purpose."""


class PlanError(ZephyrError, ValueError):
    """A Dataset method or the planner was given an argument it cannot use."""


class InputFileError(ZephyrError):
    """An input file is missing, cannot be read, or holds malformed records."""


class SchemaConflictError(ZephyrError, TypeError):
    """Chunks of one output hold types for the same column that do not promote to one type."""


class OutputTypeError(ZephyrError, pa.ArrowInvalid):
    """A column holds values no output file (Parquet, JSON, CSV) can: a set, an object, an int in a column
    of strings. An ``ArrowInvalid`` (a ValueError), as writing such rows is in Zephyr."""


class ChunkMissingError(ZephyrError, FileNotFoundError):
    """A chunk file referenced by a ChunkRef no longer exists; ``path`` is the file's."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ChunkCorruptError(ZephyrError):
    """A chunk file cannot be read as written: a page fails its checksum, or it is truncated or not Parquet;
    ``path`` is the file's."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ObjectStoreError(ZephyrError, OSError):
    """An object store operation kept failing (server errors, throttling, lost connections) after
    the retries with backoff its client makes (botocore's: 5 attempts for S3)."""


class ShardFailedError(ZephyrError, RuntimeError):
    """A shard task failed for good: user code raised, or its worker kept dying."""

    def __init__(self, message: str, *, stage: str, shard_index: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.shard_index = shard_index


# Zephyr's name for a failed shard: its programs and tests catch ZephyrWorkerError.
ZephyrWorkerError = ShardFailedError


class OutputPatternError(PlanError, ShardFailedError):
    """A write's pattern lacks ``{shard}`` while several shards write: found when the plan is
    checked, before any task runs. Zephyr finds it on a worker, so it is a ShardFailedError
    (ZephyrWorkerError) as well as a PlanError."""

    def __init__(self, message: str, *, stage: str) -> None:
        ShardFailedError.__init__(self, message, stage=stage, shard_index=1)


class CheckpointLockedError(ZephyrError):
    """Another driver, still alive, holds the checkpoint this run asked for."""


class UsageError(Exception):
    """The command line was wrong: exit code 2."""


class CommandError(Exception):
    """The command was right but its work failed: exit code 1."""
