"""Where the bytes live: Parquet chunk files (ChunkRef), grouped by shard (ShardRefs)."""

from zephyr_arrow.store.chunk_ref import ChunkRef
from zephyr_arrow.store.shard_refs import ShardRefs

__all__ = ["ChunkRef", "ShardRefs"]
