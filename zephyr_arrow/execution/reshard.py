"""Reshard: re-cut an output's rows into balanced shards by slicing chunk refs (no data is read)."""

from __future__ import annotations

from zephyr_arrow.store import ChunkRef, ShardRefs


def reshard(refs: ShardRefs, num_shards: int) -> ShardRefs:
    """Shards whose row counts differ by at most one; reading them in order gives the original order."""
    base, extra = divmod(refs.num_rows, num_shards)
    targets = [base + (1 if index < extra else 0) for index in range(num_shards)]
    shards: list[list[ChunkRef]] = [[] for _ in range(num_shards)]
    shard_index, room = 0, targets[0]
    for chunk in refs.chunks:
        offset = 0
        while offset < chunk.num_rows:
            while room == 0:
                shard_index += 1
                room = targets[shard_index]
            take = min(room, chunk.num_rows - offset)
            shards[shard_index].append(chunk.slice(offset, offset + take))
            offset += take
            room -= take
    return ShardRefs(shards, counters=dict(refs.counters), stats=dict(refs.stats))
