"""Test helpers for chat: registry set-up behind fake upstreams, rows, and an SSE client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse

from apps.chat.models import Conversation, Message, Role, Status
from apps.registry.providers import openai_compatible


def make_conversation(
    owner: Any, ministry: Any, *, alias_name: str = "test-chat", level: int = 2, **kw: Any
) -> Conversation:
    """A conversation row (inside the caller's ministry scope)."""
    return Conversation.objects.create(
        ministry=ministry, owner=owner, alias_name=alias_name, level=level, **kw
    )


def make_message(
    conversation: Conversation, *, role: str = Role.USER, content: str = "こんにちは", **kw: Any
) -> Message:
    kw.setdefault("status", Status.COMPLETE)
    return Message.objects.create(
        ministry_id=conversation.ministry_id, conversation=conversation, role=role, content=content, **kw
    )


def stream_url(message: Message) -> str:
    return reverse("chat:message_stream", args=[message.conversation_id, message.pk])


# --- URLs for the cross-app endpoint sweep (tests/test_tenant_endpoints.py) ---------


def _owner_staff_a() -> Any:
    from apps.accounts.models import User

    return User.objects.get(username="staff-a")


def conversation_url_of_staff_a(ministry: Any) -> str:
    return make_conversation(_owner_staff_a(), ministry, title="Aの会話").get_absolute_url()


def message_url_of_staff_a(ministry: Any) -> str:
    conversation = make_conversation(_owner_staff_a(), ministry, title="Aの会話")
    message = make_message(conversation, role=Role.ASSISTANT, content="回答")
    return reverse("chat:message", args=[conversation.pk, message.pk])


def delete_confirm_url_of_staff_a(ministry: Any) -> str:
    conversation = make_conversation(_owner_staff_a(), ministry, title="Aの会話")
    return reverse("chat:delete", args=[conversation.pk])


# --- Driving the SSE stream view --------------------------------------------------------


@dataclass
class SSEEvent:
    event: str
    data: str
    at: float


@dataclass
class StreamResult:
    status_code: int
    headers: dict[str, str]
    events: list[SSEEvent] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def tokens(self) -> list[str]:
        return [e.data for e in self.events if e.event == "token"]

    @property
    def done(self) -> SSEEvent | None:
        return next((e for e in self.events if e.event == "done"), None)


def parse_sse(buffer: str) -> tuple[list[tuple[str, str]], str]:
    """Complete events in ``buffer`` and the incomplete rest."""
    events = []
    while "\n\n" in buffer:
        raw, buffer = buffer.split("\n\n", 1)
        name, data = "message", []
        for line in raw.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events, buffer


async def _close_provider_clients() -> None:
    """httpx clients are bound to an event loop; each async_to_sync call has its own loop."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in openai_compatible._clients if k[0] == loop_id]:
        client = openai_compatible._clients.pop(key)
        await client.aclose()


def run_stream(
    user: Any,
    url: str,
    *,
    timeout: float = 15.0,
    on_event: Callable[[SSEEvent, list[SSEEvent]], Any] | None = None,
    cancel_after_tokens: int | None = None,
    language: str = "ja",
) -> StreamResult:
    """GET the stream view through Django's ASGI request path and collect its events.

    Runs in the calling (test) thread's database connection: ``sync_to_async``
    calls made by the view come back to the thread that called ``async_to_sync``.
    ``on_event`` may be a coroutine function (e.g. to set the stop flag).
    ``cancel_after_tokens`` cancels the consuming task like the ASGI handler does
    when the browser disconnects.
    """
    client = AsyncClient()
    client.force_login(user)

    async def consume(result: StreamResult, start: float) -> None:
        response = await client.get(url, headers={"accept-language": language})
        result.status_code = response.status_code
        result.headers = dict(response.items())
        if not getattr(response, "streaming", False):
            return
        buffer = ""
        async for chunk in response.streaming_content:
            buffer += chunk.decode()
            parsed, buffer = parse_sse(buffer)
            for name, data in parsed:
                event = SSEEvent(name, data, time.monotonic() - start)
                result.events.append(event)
                if on_event is not None:
                    outcome = on_event(event, result.events)
                    if asyncio.iscoroutine(outcome):
                        await outcome

    async def main() -> StreamResult:
        start = time.monotonic()
        result = StreamResult(status_code=0, headers={})
        try:
            async with asyncio.timeout(timeout):
                task = asyncio.create_task(consume(result, start))
                if cancel_after_tokens is None:
                    await task
                else:
                    while not task.done() and len(result.tokens) < cancel_after_tokens:
                        await asyncio.sleep(0.01)
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
        finally:
            result.elapsed = time.monotonic() - start
            await _close_provider_clients()
        return result

    return async_to_sync(main)()


# --- Rows for the isolation sweep (tests/test_tenancy_sweep.py) -------------------------


def _sweep_owner() -> Any:
    from apps.accounts.models import User

    return User.objects.get_or_create(username="sweep-owner", defaults={"subject": "sub-sweep-owner"})[0]


def sweep_conversation(ministry: Any) -> Conversation:
    """An unsaved conversation of ``ministry``."""
    return Conversation(
        ministry=ministry, owner=_sweep_owner(), alias_name="sweep-alias", level=2, title="検証"
    )


def sweep_message(ministry: Any) -> Message:
    """An unsaved message of ``ministry`` (its conversation is saved in that ministry's scope)."""
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry.pk):
        conversation = sweep_conversation(ministry)
        conversation.save()
    return Message(ministry=ministry, conversation=conversation, role=Role.USER, content="A only")
