"""zephyr_arrow: lazy, sharded dataset pipelines whose chunks are Parquet files."""
