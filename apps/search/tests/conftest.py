"""Backends for the conformance suite: PostgreSQL always, Elasticsearch when its URL is set (make test-es)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

BACKEND_NAMES = ["postgres", "elasticsearch"]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, settings: Any, db: None) -> Iterator[Any]:
    from apps.search.base import get_backend, reset_backends

    if request.param == "elasticsearch":
        if not os.environ.get("GENNAI_ELASTICSEARCH_URL"):
            pytest.skip("live Elasticsearch tier: set GENNAI_ELASTICSEARCH_URL (make test-es)")
        settings.GENNAI_ELASTICSEARCH_URL = os.environ["GENNAI_ELASTICSEARCH_URL"]
        settings.GENNAI_ELASTICSEARCH_API_KEY = os.environ.get("GENNAI_ELASTICSEARCH_API_KEY", "")
        settings.GENNAI_ELASTICSEARCH_INDEX_PREFIX = f"gennai-test{os.getpid()}"
    settings.GENNAI_SEARCH_BACKEND = request.param
    reset_backends()
    instance = get_backend()
    yield instance
    reset_backends()
    if request.param == "elasticsearch":
        instance.drop_all_for_tests()  # type: ignore[attr-defined]
