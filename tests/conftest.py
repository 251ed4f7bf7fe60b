"""Shared fixtures: every pipeline test runs on every backend.

The session starts each service once: one Ray instance (2 CPUs, on 127.0.0.1) for the
ray backend, and one S3-compatible server (moto, on 127.0.0.1) for ``s3://`` chunk storage.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from zephyr_arrow import ZephyrContext

BACKENDS = ["sync", "local", "ray"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
S3_BUCKET = "zephyr-test"

# Options for contexts on each backend. The session's Ray has 2 CPUs; with half a CPU per
# worker the shared context leaves room for the tests that open a context of their own.
_BACKEND_OPTIONS = {"ray": {"num_cpus_per_worker": 0.5}}

# Issue 18's fault and bad-input probing (corrupt and lost chunks, exact types, invalid input,
# output files and markers, dead drivers, object-store faults, paths, context misuse, worker
# tracebacks, a lost Ray node): its cases live in these modules, and `pytest -m reliability`
# runs them together.
RELIABILITY_MODULES = {
    "test_bad_input", "test_chunk_integrity", "test_context", "test_driver_death", "test_exact_types", "test_faults",
    "test_lost_chunks", "test_object_store_faults", "test_object_store_loss", "test_output_files", "test_paths",
    "test_ray_node_loss", "test_tracebacks",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability: issue 18's fault and bad-input cases (tests/conftest.py: RELIABILITY_MODULES)")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.stem in RELIABILITY_MODULES:
            item.add_marker(pytest.mark.reliability)


# Ray binds to the machine's network address unless told this is no cluster node; it reads
# this when it is imported, so it is set before any test module can import ray.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


@pytest.fixture(scope="session")
def backend_options(backend) -> dict:
    """Extra ZephyrContext arguments a test's own context on ``backend`` should pass."""
    return dict(_BACKEND_OPTIONS.get(backend, {}))


@pytest.fixture(scope="session")
def session_ctx(backend, backend_options, tmp_path_factory):
    """One long-lived context per backend, shared by the pipeline tests (workers are reused)."""
    prefix = str(tmp_path_factory.mktemp(f"chunks-{backend}"))
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, **backend_options) as ctx:
        yield ctx


@pytest.fixture
def ctx(session_ctx):
    yield session_ctx


def rows_of(refs):
    return refs.to_pylist()


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows as a JSONL file and return its path."""
    import json

    def write(name: str, rows: list, raw_lines: list[str] | None = None) -> str:
        path = os.path.join(tmp_path, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lines = raw_lines if raw_lines is not None else [json.dumps(r) for r in rows]
        if path.endswith(".gz"):
            import gzip

            with gzip.open(path, "wt") as out:
                out.write("\n".join(lines) + "\n")
        else:
            with open(path, "w") as out:
                out.write("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server on 127.0.0.1 for the session; ``s3://`` URLs reach it from every process.

    The endpoint is set in this process's fsspec config (it imported fsspec already), which
    each run carries to its workers; the credentials, and the endpoint for other processes
    (fsspec reads ``FSSPEC_S3_*`` when it is imported), are environment variables.
    """
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: any free one
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)
        patch.setitem(fsspec.config.conf, "s3", {**fsspec.config.conf.get("s3", {}), "endpoint_url": endpoint})
        fsspec.filesystem("s3").mkdir(S3_BUCKET)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_prefix(s3_server) -> str:
    """A fresh ``s3://`` prefix for one test."""
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One Ray instance for the session: 2 CPUs, bound to 127.0.0.1, stopped at the end.

    Started after the S3 server, so Ray's workers inherit its environment variables; the
    tests directory is on their PYTHONPATH, so functions defined in test modules unpickle there.
    """
    import ray

    python_path = os.pathsep.join(p for p in [TESTS_DIR, os.environ.get("PYTHONPATH")] if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )
    yield ray
    ray.shutdown()
