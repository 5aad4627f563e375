"""Security review of ``POST /v1/search``: every list a key sends is bounded."""

from __future__ import annotations

from typing import Any

import pytest

from apps.gateway import search_endpoint
from apps.gateway.errors import ApiError

from .test_v1_search import call


def test_workspace_ids_are_bounded() -> None:
    """A 1 MB body holds ≈150,000 ids; each would go into the lookup's SQL (and an ES terms filter)."""
    ids = list(range(1, search_endpoint.MAX_WORKSPACE_IDS + 2))
    with pytest.raises(ApiError) as refused:
        search_endpoint.search_params({"query": "旅費", "workspace_ids": ids})
    assert refused.value.status == 400
    at_bound = list(range(1, search_endpoint.MAX_WORKSPACE_IDS + 1))
    assert search_endpoint.search_params({"query": "旅費", "workspace_ids": at_bound})[1] == at_bound


def test_too_many_workspace_ids_name_the_field(world: Any, make_key: Any) -> None:
    _, key = make_key()
    status, body = call(key, {"query": "旅費", "workspace_ids": list(range(1, 100_001))})
    assert status == 400 and body["error"]["param"] == "workspace_ids"
