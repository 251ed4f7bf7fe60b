"""An object store that fails some requests: transient failures are retried, lasting ones name the key.

The chunk prefix is on the test S3 server, reached through ``flaky_s3.FlakyS3``, a proxy on
127.0.0.1 that answers chosen requests with a 503 (throttling), a 500 or a reset connection.
"""

from __future__ import annotations

import collections

import pytest

from flaky_s3 import FlakyS3
from zephyr_arrow import Dataset, ObjectStoreError, ShardFailedError, ZephyrContext

ROWS = [{"id": i, "k": i % 7} for i in range(700)]


def count_by_k(k, rows):
    return {"k": k, "n": sum(1 for _ in rows)}


@pytest.fixture
def through_proxy(s3_server, monkeypatch):
    """``start(fail, **options)``: a FlakyS3 in front of the session's S3 server, made the endpoint
    of ``s3://`` (with ``options`` for s3fs)."""
    import fsspec
    import s3fs

    proxies = []

    def start(fail, **options) -> FlakyS3:
        proxy = FlakyS3(s3_server, fail).__enter__()
        proxies.append(proxy)
        monkeypatch.setitem(fsspec.config.conf, "s3", {**fsspec.config.conf.get("s3", {}), "endpoint_url": proxy.endpoint, **options})
        s3fs.S3FileSystem.clear_instance_cache()
        return proxy

    yield start
    for proxy in proxies:
        proxy.__exit__(None, None, None)
    s3fs.S3FileSystem.clear_instance_cache()


def test_transient_store_failures_are_retried_and_the_answer_is_exact(backend, backend_options, through_proxy, s3_prefix):
    # throttling, server errors, lost connections; the run makes about 111 requests without them
    faults = {20: 503, 45: 500, 70: "reset", 95: 503, 100: "reset"}
    proxy = through_proxy(lambda number, method, path: faults.get(number))
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=s3_prefix, progress=False, **backend_options) as ctx:
        refs = ctx.execute(Dataset.from_list(ROWS, num_shards=4).group_by("k", count_by_k))
        got = sorted(refs.to_pylist(), key=lambda row: row["k"])
    expected = collections.Counter(row["k"] for row in ROWS)
    assert got == [{"k": k, "n": expected[k]} for k in sorted(expected)]
    assert sorted(fault for fault, _, _ in proxy.faults if fault != "reset") == [500, 503, 503]
    assert len(proxy.faults) == len(faults)


def test_a_store_that_keeps_failing_fails_the_task_naming_the_operation_and_key(backend, backend_options, through_proxy, s3_prefix):
    import fsspec

    bucket_key = s3_prefix.removeprefix("s3://")
    # Fewer attempts than botocore's default 5, only to keep the test short.
    fewer = {"config_kwargs": {"retries": {"max_attempts": 2}}}
    proxy = through_proxy(lambda number, method, path: 500 if method == "PUT" and "/stage-00-" in path else None, **fewer)
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=s3_prefix, progress=False, **backend_options) as ctx:
        with pytest.raises(ShardFailedError, match=r"ObjectStoreError: writing s3://\S+/stage-00-scatter/shard=\d+/chunk-\S+\.parquet failed") as caught:
            ctx.execute(Dataset.from_list(ROWS, num_shards=4).group_by("k", count_by_k))
        if caught.value.__cause__ is not None:  # the exception itself comes back where it unpickles
            assert isinstance(caught.value.__cause__, ObjectStoreError)
    assert proxy.faults, "the proxy refused the uploads"
    assert not [path for path in fsspec.filesystem("s3").find(bucket_key) if ".tmp-" in path], "no temporary file is left"


def refuse(row):
    if row["id"] == 350:
        raise PermissionError("the user's own file, not the store")
    return row


@pytest.mark.parametrize("output", ["chunks", "jsonl", "parquet"])
def test_a_users_os_error_while_rows_stream_to_the_store_is_not_called_the_stores(backend, backend_options, s3_prefix, output):
    # The map runs lazily inside the write of a chunk or an output file on S3: the store's
    # error wrapping must not claim the user's error.
    dataset = Dataset.from_list(ROWS, num_shards=4).map(refuse)
    if output != "chunks":
        dataset = getattr(dataset, f"write_{output}")(f"{s3_prefix}/out/part-{{shard:05d}}.{output}")
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=s3_prefix, progress=False, **backend_options) as ctx:
        with pytest.raises(ShardFailedError, match=r"raised PermissionError: the user's own file") as caught:
            ctx.execute(dataset)
    assert "ObjectStoreError" not in str(caught.value)
