from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.search.base import reset_backends


@pytest.fixture(autouse=True)
def fresh_backends() -> Any:
    reset_backends()
    yield
    reset_backends()


@pytest.mark.django_db
def test_readyz_reports_search_health(client: Client) -> None:
    body = client.get("/readyz").json()
    assert body["checks"]["search"]["ok"]
    assert body["checks"]["search"]["detail"].startswith("postgres (pgvector 0.")


@pytest.mark.django_db
def test_readyz_is_degraded_not_unavailable_when_search_is_down(client: Client, settings: Any) -> None:
    settings.GENNAI_SEARCH_BACKEND = "elasticsearch"
    settings.GENNAI_ELASTICSEARCH_URL = "http://127.0.0.1:1"
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["search"]["ok"] is False
    assert body["checks"]["search"]["error"] == "SearchUnhealthy"
