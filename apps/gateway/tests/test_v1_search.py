"""``POST /v1/search``: a key reads its own ministry's shared workspaces up to its level, nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.documents.models import Workspace
from apps.gateway import asgi
from apps.search import embeddings
from apps.search.tests.test_retriever import _indexed
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


class DjangoStub:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a /v1 request with a key must not reach Django")


def call(key: str, payload: Any, *, method: str = "POST") -> tuple[int, Any]:
    """(status, JSON body) of one request through the /v1 front, in the test's thread and transaction."""
    app = asgi.V1Application(DjangoStub())
    body = json.dumps(payload).encode()
    sent: list[MutableMapping[str, Any]] = []
    state = {"read": False}

    async def receive() -> MutableMapping[str, Any]:
        if not state["read"]:
            state["read"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        while not any(m["type"] == "http.response.body" and not m.get("more_body") for m in sent):
            await asyncio.sleep(0.005)  # the client stays connected until the reply is complete
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": "/v1/search",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }
    async_to_sync(app)(scope, receive, send)
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(raw)


@pytest.fixture(autouse=True)
def _lexical(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]

    def unavailable(**_kwargs: Any) -> tuple[float, ...]:
        raise embeddings.EmbeddingUnavailable("no embedding alias in this test")

    monkeypatch.setattr(embeddings, "embed_query", unavailable)


def test_search_returns_only_shared_workspaces_of_the_keys_ministry_up_to_its_level(
    world: Any, make_key: Any
) -> None:
    a, b = world.ministry_a, world.ministry_b
    owner_a, owner_b = make_user("owner-a", a, ["staff"]), make_user("owner-b", b, ["staff"])
    shared, shared_chunk = _indexed(
        owner_a, a, name="出張規程", text="宿泊料の上限は一泊一万二千円とする。", page=2
    )
    secret, _ = _indexed(owner_a, a, name="機密3", text="宿泊料の上限は機密の内規で定める。")
    personal, _ = _indexed(owner_a, a, name="個人メモ", text="宿泊料の上限についての個人メモ。")
    other, other_chunk = _indexed(owner_b, b, name="B省規程", text="宿泊料の上限は一泊九千円とする。")
    with ministry_scope(ministry_id=a.pk):
        Workspace.objects.filter(pk=secret.pk).update(level=3)
        Workspace.objects.filter(pk=personal.pk).update(kind="personal")
    _, key_a = make_key(a, max_level=2)
    _, key_b = make_key(b, max_level=3)

    status, body = call(key_a, {"query": "宿泊料の上限", "top_k": 10})
    assert status == 200, body
    assert [r["chunk_id"] for r in body["data"]] == [shared_chunk.pk]
    row = body["data"][0]
    assert row["document_id"] == shared_chunk.document_id and row["page_start"] == 2
    assert row["filename"] == "出張規程.pdf" and "一万二千円" in row["text"]

    # Crafted ids: B's workspace, the personal one and the level-3 one are dropped like missing ids.
    crafted = [other.pk, personal.pk, secret.pk]
    assert call(key_a, {"query": "宿泊料の上限", "workspace_ids": crafted})[1]["data"] == []
    # B's key asking for A's workspace: nothing of A's.
    status, body = call(key_b, {"query": "宿泊料の上限", "workspace_ids": [shared.pk, secret.pk]})
    assert status == 200 and body["data"] == []
    assert [r["chunk_id"] for r in call(key_b, {"query": "宿泊料の上限"})[1]["data"]] == [other_chunk.pk]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "query"),
        ({"query": "  "}, "query"),
        ({"query": "a", "top_k": 0}, "top_k"),
        ({"query": "a", "top_k": True}, "top_k"),
        ({"query": "a", "workspace_ids": ["1"]}, "workspace_ids"),
        ({"query": "a", "workspace_ids": 1}, "workspace_ids"),
    ],
)
def test_bad_requests_name_the_field(world: Any, make_key: Any, payload: Any, param: str) -> None:
    _, key = make_key()
    status, body = call(key, payload)
    assert status == 400 and body["error"]["param"] == param


def test_search_needs_post_and_a_valid_key(world: Any, make_key: Any) -> None:
    _, key = make_key()
    assert call(key, {"query": "a"}, method="GET")[0] == 405
    assert call("gk_not-a-key", {"query": "a"})[0] == 401
