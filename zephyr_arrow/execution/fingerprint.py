"""Stage fingerprints: what a checkpointed run compares to decide which stages it can reuse.

A stage's fingerprint covers its ops (the code and closures of user functions, their
arguments), its shard counts, its source (a file list with sizes and modification times or
object-store ETags; in-memory items; an existing output's chunks), how its files are cut into
pieces (io/pieces.py: files, byte or row ranges; the cut follows ``max_workers``), the objects
given to ``ctx.put``, and the fingerprints of the stages it reads. So a stage whose fingerprint
matches a committed record's would compute what the record holds; the first stage that
differs, and every stage after it, reruns.

Ops are hashed as the bytes cloudpickle writes for them, made stable across processes:
functions cloudpickle sends by reference (those importable from a module) are hashed with
their own code object (not the code of helpers they call); sets in the order of their items'
digests (not the process's salted ``hash()``); classes defined in the driver's script without
cloudpickle's per-process tracker id.
"""

from __future__ import annotations

import hashlib
import io
import json
import marshal
import os
import pickle
import types
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as cloudpickle_internals

from zephyr_arrow import ops
from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution.tasks import ItemsInput, ShardInput
from zephyr_arrow.fs import filesystem, is_local
from zephyr_arrow.io.pieces import FilePiece
from zephyr_arrow.planner import Plan, Stage, StageKind


@dataclass(frozen=True, slots=True)
class StageFingerprint:
    """A stage's fingerprint (``digest``) and what it was made of, to say why a stage reruns."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)  # ops, source, pieces, shards, shared, inputs

    def differences(self, recorded: dict[str, str]) -> list[str]:
        """What changed since ``recorded`` (an earlier run's ``parts``), in words."""
        words = {
            "ops": "its code or arguments changed",
            "source": "its input files changed",
            "pieces": "its files are cut into other pieces (max_workers changed)",
            "shards": "its shard count changed",
            "shared": "an object given to ctx.put changed",
            "inputs": "a stage it reads reran",
        }
        changed = [name for name in words if self.parts.get(name) != recorded.get(name)]
        if "source" in changed and "pieces" in changed:
            changed.remove("pieces")  # other files are cut otherwise: no news
        return [words[name] for name in changed]


def stage_fingerprints(
    plan: Plan, source_inputs: dict[int, list[ShardInput]], shard_counts: dict[int, int], last_use: dict[int, int], shared_digest: str
) -> dict[int, StageFingerprint]:
    """Every stage's fingerprint, in plan order (each covers those of the stages it reads);
    ``shared_digest``: the ``digest`` of the objects given to ``ctx.put``."""
    fingerprints: dict[int, StageFingerprint] = {}
    for stage in plan.stages:
        num_tasks = shard_counts[stage.index]
        num_output_shards = shard_counts[last_use[stage.index]] if stage.kind is StageKind.SCATTER else num_tasks
        parts = {
            "ops": _stage_ops_digest(stage),
            **({"source": "", "pieces": ""} if stage.source is None else _source_digests(stage.source, source_inputs[stage.index])),
            "shards": f"{num_tasks}/{num_output_shards}",
            "shared": shared_digest,
            "inputs": ",".join(fingerprints[index].digest for index in (*stage.inputs, *stage.broadcast)),
        }
        fingerprints[stage.index] = StageFingerprint(_sha(json.dumps(parts, sort_keys=True).encode()), parts)
    return fingerprints


def digest(obj: Any) -> str:
    """A hash of ``obj`` that is the same in every process running the same code on the same values."""
    buffer = io.BytesIO()
    _StablePickler(buffer).dump(obj)
    return _sha(buffer.getvalue())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stage_ops_digest(stage: Stage) -> str:
    worker_stage = stage.for_worker()
    boundary = worker_stage.boundary
    if stage.kind is StageKind.SCATTER and any(f.name == "reducer" for f in fields(boundary)):
        # Only the reduce side runs the reducer: fixing it must not rerun the map side, unless
        # the fix reads other columns, which the map side then carries through the shuffle.
        boundary = (replace(boundary, reducer=None), boundary.carried_columns())
    try:
        return digest((stage.kind.value, worker_stage.ops, boundary, stage.side, stage.input_columns, len(stage.broadcast)))
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise PlanError(
            f"checkpoint= needs every function of the pipeline to be picklable (its fingerprint is its pickled code), "
            f"but stage {stage.index} ({stage.name}) is not: {error}"
        ) from error


def _source_digests(source: ops.Source, inputs: list[ShardInput]) -> dict[str, str]:
    """The "source" part (what the stage reads) and the "pieces" part (how its files are cut; "" if they are not)."""
    if isinstance(source, ops.FilesSource):
        # A task's item is a file's path, an InputFileSpec (a row range of one), or a piece of a
        # file cut for several tasks: a file's pieces are consecutive tasks, the first from 0.
        items = [item.items[0] for item in inputs if isinstance(item, ItemsInput)]
        pieces = [(item.path, item.start, item.stop) for item in items if isinstance(item, FilePiece)]
        files = [
            (_file_identity(getattr(item, "path", item)), getattr(item, "row_start", None), getattr(item, "row_end", None))
            for item in items
            if not isinstance(item, FilePiece) or item.start == 0
        ]
        return {"source": digest(files), "pieces": digest(pieces) if pieces else ""}
    if isinstance(source, ops.RefsSource):
        return {"source": digest([(c.path, c.num_rows, c.row_range) for c in source.refs.chunks]), "pieces": ""}
    return {"source": digest((source.items, source.num_shards)), "pieces": ""}


def _file_identity(path: str) -> tuple[str, str, int]:
    """What tells a file's content changed without reading it: its size and modification time,
    or the ETag an object store gives."""
    if is_local(path):
        stat = os.stat(path.removeprefix("file://"))
        return path, str(stat.st_mtime_ns), stat.st_size
    fs, fs_path = filesystem(path)
    info = fs.info(fs_path)
    version = info.get("ETag") or info.get("etag") or info.get("md5Hash") or str(info.get("mtime") or info.get("LastModified") or "")
    return path, str(version), int(info.get("size") or 0)


def _by_reference(module: str, qualname: str, code: str) -> None:
    """Stands in for a function hashed by reference (never called: fingerprint bytes are never loaded)."""


def _by_value_class(module: str, qualname: str) -> None:
    """Stands in for a class hashed by value (never called)."""


@dataclass(frozen=True, slots=True)
class _Unordered:
    """A set's items in a fixed order (a set pickles in the order of the process's salted hashes)."""

    items: tuple


class _StablePickler(cloudpickle.Pickler):
    """cloudpickle, with what varies between processes running the same code made stable.

    The C pickler writes sets and dicts itself (no ``reducer_override`` for them), so sets are
    put in order where they are reachable from a reduction: a function's globals and closure,
    and any object's state.
    """

    def reducer_override(self, obj: Any) -> Any:
        if obj is _by_reference or obj is _by_value_class:
            return NotImplemented  # by name, as pickle does
        if isinstance(obj, types.FunctionType) and cloudpickle_internals._should_pickle_by_reference(obj):
            return _by_reference, (obj.__module__, obj.__qualname__, _code_digest(obj.__code__))
        if isinstance(obj, type) and _is_dynamic_class(obj):
            attributes, _ = cloudpickle_internals._class_getstate(obj)
            attributes = sorted((name, value) for name, value in attributes.items() if name not in ("__doc__", "_abc_impl"))
            # The attributes go in as state, after the class is memoized: its methods may refer to it.
            return _by_value_class, (obj.__module__, obj.__qualname__), _canonical((obj.__bases__, attributes))
        reduced = super().reducer_override(obj)
        if reduced is NotImplemented and not isinstance(obj, type) and type(obj).__module__ != "builtins":
            try:
                reduced = obj.__reduce_ex__(5)
            except Exception:  # noqa: BLE001 - pickle finds its own way (copyreg) or says why it cannot
                return NotImplemented
        if isinstance(reduced, tuple):
            return tuple(_canonical(part) if index >= 1 else part for index, part in enumerate(reduced))
        return reduced


def _canonical(value: Any) -> Any:
    """``value`` with every set inside (lists, tuples, dicts) replaced by its items in a stable order."""
    if isinstance(value, (set, frozenset)):
        return _Unordered(tuple(sorted((_canonical(item) for item in value), key=digest)))
    if type(value) is dict:
        return {key: _canonical(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_canonical(item) for item in value)
    return value


def _is_dynamic_class(cls: type) -> bool:
    """Whether cloudpickle sends ``cls`` by value (with a tracker id unique to this process)."""
    reduced = cloudpickle_internals._class_reduce(cls)
    return reduced is not NotImplemented and reduced[0] is cloudpickle_internals._make_skeleton_class


def _code_digest(code: types.CodeType) -> str:
    return _sha(marshal.dumps(code))
