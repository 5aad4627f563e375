"""/v1 against the official ``openai`` SDK and LangChain's ``ChatOpenAI``, over a real ASGI server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.tenancy.scope import ministry_scope

from .conftest import AsgiServer, World


def client(server: AsgiServer, key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **kw)


def usage_rows(ministry: Any) -> list[UsageRecord]:
    """The ministry's usage rows, after draining the usage journal (as the worker does)."""
    usage_journal_drain()
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def test_chat_non_stream_and_usage_written_once(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    key, plaintext = make_key()
    completion = client(asgi_server, plaintext).chat.completions.create(
        model="standard-chat",
        messages=[{"role": "system", "content": "簡潔に"}, {"role": "user", "content": "こんにちは"}],
        temperature=0.2,
        max_tokens=50,
        seed=7,
        stop=["\n\n"],
        user="system-x",
    )
    assert completion.object == "chat.completion"
    assert completion.model == "standard-chat"  # the alias, not the served name
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    # Parameters pass through; the upstream sees its own model name.
    sent = world.primary.last_body
    assert sent["model"] == "served-primary"
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"]) == (0.2, 50, 7, ["\n\n"])
    assert sent["messages"][1] == {"role": "user", "content": "こんにちは"}

    [row] = usage_rows(world.ministry_a)
    assert (row.api_key_id, row.alias_name, row.status) == (key.pk, "standard-chat", "ok")
    assert row.deployment_id == world.deployments["primary"].pk and row.revision == 1
    assert (row.prompt_tokens, row.completion_tokens, row.level) == (7, 5, 2)
    assert row.ttft_ms is not None and row.latency_ms >= row.ttft_ms
    assert usage_rows(world.ministry_b) == []
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_chat_stream_relays_chunks_with_alias_name(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _key, plaintext = make_key()
    sdk = client(asgi_server, plaintext)
    stream = sdk.chat.completions.create(
        model="standard-chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    )
    assert {c.model for c in chunks} == {"standard-chat"}
    assert all(c.usage is None for c in chunks), "usage chunk only when stream_options asks for it"

    with_usage = list(
        sdk.chat.completions.create(
            model="standard-chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == 5
    rows = usage_rows(world.ministry_a)
    assert [(r.status, r.completion_tokens) for r in rows] == [("ok", 5), ("ok", 5)]


def test_stream_wire_format(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    with httpx.stream(
        "POST",
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": "standard-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["cache-control"] == "no-cache"
        body = response.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    first = json.loads(events[0].removeprefix(b"data: "))
    assert first["model"] == "standard-chat" and first["object"] == "chat.completion.chunk"


def test_langchain_chat_openai(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    from langchain_openai import ChatOpenAI

    _key, plaintext = make_key()
    llm = ChatOpenAI(
        base_url=asgi_server.url + "/v1", api_key=plaintext, model="standard-chat", max_retries=0
    )
    answer = llm.invoke("日本の首都は？")
    assert answer.content == "tok0 tok1 tok2 tok3 tok4 "
    streamed = "".join(str(part.content) for part in llm.stream("日本の首都は？"))
    assert streamed == "tok0 tok1 tok2 tok3 tok4 "
    assert [r.status for r in usage_rows(world.ministry_a)] == ["ok", "ok"]


def test_embeddings_via_sdk(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    sdk = client(asgi_server, plaintext)
    # The SDK asks for base64 by default and decodes it; float is the explicit form.
    result = sdk.embeddings.create(model="embed", input=["行政", "デジタル庁"])
    assert [d.embedding for d in result.data] == [[2.0, 1.0, 0.5], [5.0, 1.0, 0.5]]
    assert result.model == "embed"
    floats = sdk.embeddings.create(model="embed", input="abc", encoding_format="float")
    assert floats.data[0].embedding == [3.0, 1.0, 0.5]
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk.embeddings.create(model="standard-chat", input="x")
    assert excinfo.value.code == "model_not_supported"
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(
        base_url=asgi_server.url + "/v1", api_key=plaintext, model="embed", check_embedding_ctx_length=False
    )
    assert embedder.embed_documents(["ab"]) == [[2.0, 1.0, 0.5]]
    statuses = [(r.endpoint, r.status) for r in usage_rows(world.ministry_a)]
    assert statuses == [
        ("embedding", "ok"),
        ("embedding", "ok"),
        ("embedding", "refused"),
        ("embedding", "ok"),
    ]


def test_models_list_is_per_ministry_and_per_key(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _ka, key_a = make_key()
    _kb, key_b = make_key(world.ministry_b)
    _kr, key_restricted = make_key(aliases=("a-only",))
    ids_a = [m.id for m in client(asgi_server, key_a).models.list()]
    assert ids_a == ["a-only", "drop-chat", "embed", "failover-chat", "standard-chat"]
    models_b = list(client(asgi_server, key_b).models.list())
    assert [m.id for m in models_b] == ["standard-chat"]
    assert models_b[0].owned_by == "gennai" and models_b[0].object == "model" and models_b[0].created > 0
    assert [m.id for m in client(asgi_server, key_restricted).models.list()] == ["a-only"]
    assert client(asgi_server, key_a).models.retrieve("a-only").id == "a-only"
    with pytest.raises(openai.NotFoundError):
        client(asgi_server, key_b).models.retrieve("a-only")


def test_other_ministry_and_key_restrictions_cannot_use_alias(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _kb, key_b = make_key(world.ministry_b)
    _kr, key_restricted = make_key(aliases=("a-only",))
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.NotFoundError) as excinfo:
        client(asgi_server, key_b).chat.completions.create(model="a-only", messages=messages)  # type: ignore[arg-type]
    assert excinfo.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client(asgi_server, key_b).chat.completions.create(model="no-such-model", messages=messages)  # type: ignore[arg-type]
    # Not allowed and not existing read the same (apart from the name).
    assert str(excinfo.value.message).replace("a-only", "X") == str(unknown.value.message).replace(
        "no-such-model", "X"
    )
    with pytest.raises(openai.NotFoundError):
        client(asgi_server, key_restricted).chat.completions.create(model="standard-chat", messages=messages)  # type: ignore[arg-type]
    answer = client(asgi_server, key_restricted).chat.completions.create(model="a-only", messages=messages)  # type: ignore[arg-type]
    assert answer.model == "a-only"
    assert world.primary.requests == 1
    assert [r.status for r in usage_rows(world.ministry_b)] == ["refused", "refused"]


def test_bad_and_revoked_keys_are_401(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    from apps.gateway.services import api_key_revoke

    key, plaintext = make_key()
    messages = [{"role": "user", "content": "x"}]
    for bad in ("sk-not-ours", plaintext[:-2] + "zz", "gn-short"):
        with pytest.raises(openai.AuthenticationError) as excinfo:
            client(asgi_server, bad).chat.completions.create(model="standard-chat", messages=messages)  # type: ignore[arg-type]
        assert excinfo.value.code == "invalid_api_key"
        assert excinfo.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert client(asgi_server, plaintext).models.list().data  # warms the key cache
    api_key_revoke(actor=None, key=key)
    with pytest.raises(openai.AuthenticationError) as revoked:
        client(asgi_server, plaintext).models.list()
    assert "失効" in revoked.value.message and "revoked" in revoked.value.message
    response = httpx.get(asgi_server.url + "/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_malformed_and_invalid_requests_are_400(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    url = asgi_server.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"}
    malformed = httpx.post(url, headers=headers, content=b'{"model": "standard-chat", "messages": [')
    assert malformed.status_code == 400
    error = malformed.json()["error"]
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
    assert " / " in error["message"]  # 日本語 / English
    for body, param in (
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "standard-chat", "messages": []}, "messages"),
        ({"model": "standard-chat", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        ({"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
    ):
        response = httpx.post(url, headers=headers, json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
    too_big = httpx.post(url, headers=headers, content=b" " * (1024 * 1024 + 1))
    assert too_big.status_code == 413
    assert httpx.get(url, headers=headers).status_code == 405
    assert world.primary.requests == 0


def test_classification_refused_with_explanation(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _k3, level3 = make_key(max_level=3)
    _k1, level1 = make_key(max_level=1)
    messages = [{"role": "user", "content": "機密"}]
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        client(
            asgi_server, level3, default_headers={"X-Gennai-Confidentiality": "3"}
        ).chat.completions.create(
            model="standard-chat",
            messages=messages,  # type: ignore[arg-type]
        )
    assert excinfo.value.code == "classification"
    assert "機密性3" in excinfo.value.message and "level 3" in excinfo.value.message
    # Without the header a key's requests count as its max_level: 3 here, so also refused.
    with pytest.raises(openai.PermissionDeniedError):
        client(asgi_server, level3).chat.completions.create(model="standard-chat", messages=messages)  # type: ignore[arg-type]
    # The header may lower the level …
    ok = client(asgi_server, level3, default_headers={"X-Gennai-Confidentiality": "2"})
    assert ok.chat.completions.create(model="standard-chat", messages=messages).model == "standard-chat"  # type: ignore[arg-type]
    # … but never raise it above the key's max_level.
    with pytest.raises(openai.PermissionDeniedError) as above:
        client(
            asgi_server, level1, default_headers={"X-Gennai-Confidentiality": "2"}
        ).chat.completions.create(
            model="standard-chat",
            messages=messages,  # type: ignore[arg-type]
        )
    assert above.value.code == "confidentiality_exceeds_key"
    assert world.primary.requests == 1
    details = [(r.status, r.detail) for r in usage_rows(world.ministry_a)]
    assert details == [
        ("refused", "classification"),
        ("refused", "classification"),
        ("ok", ""),
        ("refused", "confidentiality_exceeds_key"),
    ]


def test_failover_before_first_token(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    answer = client(asgi_server, plaintext).chat.completions.create(
        model="failover-chat", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content == "alt0 alt1 alt2 "
    assert answer.model == "failover-chat"
    assert (world.failing.requests, world.secondary.requests) == (1, 1)
    [row] = usage_rows(world.ministry_a)
    assert row.status == "ok" and row.deployment_id == world.deployments["secondary"].pk


def test_all_upstreams_down_is_503(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    world.secondary.mode = "status"
    with pytest.raises(openai.InternalServerError) as excinfo:
        client(asgi_server, plaintext).chat.completions.create(
            model="failover-chat", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert excinfo.value.status_code == 503 and excinfo.value.code == "upstream_unavailable"
    assert "served-" not in excinfo.value.message and "dep-" not in excinfo.value.message
    [row] = usage_rows(world.ministry_a)
    assert (row.status, row.detail) == ("error", "upstream_unavailable")


def test_mid_stream_drop_ends_with_error_event(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    _key, plaintext = make_key()
    stream = client(asgi_server, plaintext).chat.completions.create(
        model="drop-chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as excinfo:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["tok0 ", "tok1 "]
    assert "incomplete" in excinfo.value.message
    [row] = usage_rows(world.ministry_a)
    assert (row.status, row.detail, row.completion_tokens) == ("interrupted", "upstream_interrupted", 2)


def test_client_disconnect_closes_upstream(asgi_server: AsgiServer, world: World, make_key: Any) -> None:
    import time

    _key, plaintext = make_key()
    world.primary.tokens, world.primary.delay = 200, 0.02  # a 4-second answer
    with httpx.stream(
        "POST",
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not usage_rows(world.ministry_a):
        time.sleep(0.05)
    [row] = usage_rows(world.ministry_a)
    assert row.status == "interrupted"
    assert row.latency_ms < 3000, "the upstream stream was not read to its end"


def test_browser_session_can_stream(asgi_server: AsgiServer, world: World) -> None:
    """A signed-in member (no API key) streams through /v1; CSRF applies to session writes."""
    from django.test import Client

    from tests.support.fixtures import make_user

    user = make_user("staff-session", world.ministry_a, ["staff"])
    django_client = Client()
    django_client.force_login(user)
    secret = "a" * 32  # an unmasked CSRF secret: cookie and header must match
    cookies = {
        "gennai_sessionid": django_client.cookies["gennai_sessionid"].value,
        "gennai_csrftoken": secret,
    }
    body = {"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
    url = asgi_server.url + "/v1/chat/completions"
    level1 = {"X-Gennai-Confidentiality": "1"}
    with httpx.Client(cookies=cookies) as browser:
        assert browser.post(url, json=body, headers=level1).json()["error"]["code"] == "csrf_failed"
        # Fail closed: undeclared, a session's request is 機密性3 (standard-chat is cleared for 2).
        undeclared = browser.post(url, json=body, headers={"X-CSRFToken": secret})
        assert undeclared.status_code == 403
        assert undeclared.json()["error"]["code"] == "classification"
        response = browser.post(url, json=body, headers={"X-CSRFToken": secret, **level1})
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    refused, row = usage_rows(world.ministry_a)
    assert (refused.status, refused.level, refused.detail) == ("refused", 3, "classification")
    assert (row.user_id, row.api_key_id, row.status, row.level) == (user.pk, None, "ok", 1)
