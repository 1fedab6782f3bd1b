"""Kernels run in the Triton interpreter on machines without a GPU.

TRITON_INTERPRET is read by Triton when a @triton.jit function is defined, so
it is set here, before any test imports a kernel template.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("markers", "slow: longer interpreter runs")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback for the whole session (tests/pg.py). Missing server
    binaries fail the test that needs it: CI must run it, so it is never skipped."""
    from tests.pg import PostgresMissing, PostgresServer
    try:
        server, missing = PostgresServer(), None
    except PostgresMissing as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    """An empty database of its own for one test: its storage URL."""
    import re
    return postgres_server.create_database(re.sub(r"\W", "_", request.node.name)[:60].lower())
