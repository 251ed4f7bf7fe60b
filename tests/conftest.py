"""Shared fixtures: every pipeline test runs on every backend."""

from __future__ import annotations

import os

import pytest

from zephyr_arrow import ZephyrContext

BACKENDS = ["sync", "local"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def session_ctx(backend, tmp_path_factory):
    """One long-lived context per backend, shared by the pipeline tests (workers are reused)."""
    prefix = str(tmp_path_factory.mktemp(f"chunks-{backend}"))
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix) as ctx:
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
