"""Resolve a plan's source into the first stage's per-shard inputs (the only I/O before a run)."""

from __future__ import annotations

import glob
import itertools
import os
import re

from zephyr_arrow import ops
from zephyr_arrow.errors import InputFileError
from zephyr_arrow.execution.tasks import ChunksInput, ItemsInput, ShardInput
from zephyr_arrow.store.files import filesystem, is_local

_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a/{x,y}/*.jsonl`` -> ``["a/x/*.jsonl", "a/y/*.jsonl"]`` (nested braces expand too)."""
    match = _BRACES.search(pattern)
    if match is None or "," not in match.group(1):
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return list(itertools.chain.from_iterable(expand_braces(head + option + tail) for option in match.group(1).split(",")))


def glob_files(pattern: str, empty_glob_ok: bool = False) -> list[str]:
    """Files matching ``pattern``, sorted; InputFileError when none match (unless ``empty_glob_ok``)."""
    paths: set[str] = set()
    for expanded in expand_braces(pattern):
        if is_local(expanded):
            local = expanded.removeprefix("file://")
            paths.update(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
            continue
        fs, fs_pattern = filesystem(expanded)
        matches = fs.glob(fs_pattern, detail=True) if any(c in fs_pattern for c in "*?[") else _single(fs, fs_pattern)
        paths.update(fs.unstrip_protocol(path) for path, info in matches.items() if info.get("type") != "directory")
    if not paths and not empty_glob_ok:
        raise InputFileError(f"no files match {pattern!r} (pass empty_glob_ok=True to allow an empty input)")
    return sorted(paths)


def _single(fs, path: str) -> dict:
    return {path: fs.info(path)} if fs.exists(path) else {}


def source_inputs(source: ops.Source) -> list[ShardInput]:
    """One input per shard of the first stage."""
    if isinstance(source, ops.ItemsSource):
        return [ItemsInput(tuple(items)) for items in ops.shard_items(source.items, source.num_shards)]
    if isinstance(source, ops.FilesSource):
        return [ItemsInput((path,)) for path in glob_files(source.pattern, source.empty_glob_ok)]
    if isinstance(source, ops.RefsSource):
        return [ChunksInput(tuple(shard)) for shard in source.refs.shards]
    raise TypeError(f"unknown source {source!r}")
