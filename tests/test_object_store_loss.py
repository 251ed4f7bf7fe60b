"""Losing the object store mid-run: the user gets the run's own error, not one from clean-up."""

from __future__ import annotations

import logging
import uuid

import pytest

from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext


@pytest.fixture
def doomed_s3(s3_server, monkeypatch):
    """An S3 server of this test's own (the session's keeps running), and a bucket on it; yields
    (prefix, stop): ``stop()`` takes the server down, as an outage would."""
    import fsspec
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # One attempt, a short timeout: the outage is certain, waiting on retries would only slow the test.
    options = {"endpoint_url": f"http://{host}:{port}", "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    monkeypatch.setitem(fsspec.config.conf, "s3", options)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"doomed-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3").mkdir(bucket)
    stopped = []

    def stop() -> None:
        if not stopped:
            server.stop()
            stopped.append(True)

    yield f"s3://{bucket}/chunks", stop
    stop()
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_run_that_loses_its_object_store_fails_with_its_own_error(doomed_s3, caplog):
    prefix, stop = doomed_s3

    def lose_the_store(x: int) -> int:
        if x == 2:
            stop()
        return x

    ctx = ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False)
    assert ctx.execute(Dataset.from_list([0, 1]).map(lambda x: x + 1)).to_pylist() == [1, 2]
    with caplog.at_level(logging.WARNING, logger="zephyr_arrow"), pytest.raises(ShardFailedError, match=r"stage 0 .*shard"):
        ctx.execute(Dataset.from_list([0, 1, 2, 3], num_shards=4).map(lose_the_store))
    assert any("could not delete" in record.getMessage() for record in caplog.records), "the failed clean-up is logged"
    with caplog.at_level(logging.WARNING, logger="zephyr_arrow"):
        ctx.close()  # its chunks cannot be deleted either: logged, not raised
