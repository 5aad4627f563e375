"""The SSE relay: upstream chunks → htmx-ext-sse events, with the answer saved as it streams.

Events (``Content-Type: text/event-stream``):

* ``token``: the HTML-escaped text delta; the page appends it to the answer
  (``sse-swap="token" hx-swap="beforeend"``);
* ``done``: the final message fragment (Markdown rendered and sanitised, with
  status and usage); the page swaps it over the streaming element and closes
  the EventSource (``sse-close="done"``);
* ``refused`` (before ``done``, instead of any token): a budget or rate limit
  refused the answer; the data is the explanation (ja/en, with when it
  resets). Not named ``error``: an EventSource reports its own connection
  failures under that name.

The relay is the hot path (DESIGN §4): per chunk it only appends to a list and
formats one small event. It never writes to the database per chunk: partial
text is saved at most once per ``FLUSH_SECONDS`` and at the end, and the stop
flag is read once before the model is called and then at most once per
``STOP_CHECK_SECONDS``. All database work goes
through :func:`~apps.tenancy.connections.db_hop` into services that enter the
ministry scope themselves, because the middleware's scope has ended before the
body streams; ``db_hop`` gives the connection back after each call, so an open
stream holds no database connection while it waits on the model (DESIGN
invariant 10).
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator

from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _

from apps.quotas.admission import QuotaExceeded, Reservation, asettle
from apps.quotas.alerts import alerts_after_settle
from apps.registry.providers.base import UpstreamError, UpstreamInterrupted, UpstreamRejected
from apps.registry.router import AllUpstreamsFailed, stream_chat
from apps.tenancy.connections import db_hop

from . import quota
from .models import Message, Status
from .services import StreamJob, answer_usage, message_stream_update, stop_requested

logger = logging.getLogger("gennai.chat")

FLUSH_SECONDS = 1.0
STOP_CHECK_SECONDS = 0.25

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(event: str, data: str) -> bytes:
    """One SSE event; every line of ``data`` gets its own ``data:`` field."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return ("event: " + event + "\n" + "".join(["data: " + line + "\n" for line in lines]) + "\n").encode()


def token_event(delta: str) -> bytes:
    return sse_event("token", html.escape(delta, quote=False))


def render_message(message: Message, *, alias_label: str = "", is_last: bool = True) -> str:
    """The message fragment as the conversation page shows it (no request or DB needed)."""
    return render_to_string(
        "chat/_message.html",
        {
            "m": message,
            "conversation_id": message.conversation_id,
            "alias_label": alias_label,
            "is_last": is_last,
            "connect": False,
        },
    )


def done_event(message: Message, *, alias_label: str = "") -> bytes:
    return sse_event("done", render_message(message, alias_label=alias_label))


async def replay(
    message: Message, *, alias_label: str = "", language: str | None = None
) -> AsyncIterator[bytes]:
    """Nothing to stream (already claimed, finished or refused): send the message as it is."""
    with translation.override(language):
        yield done_event(message, alias_label=alias_label)


async def relay(job: StreamJob, *, started: float, language: str | None = None) -> AsyncIterator[bytes]:
    """Stream ``job``'s answer from the router to the browser, saving it on the way.

    With a charge (:mod:`apps.chat.quota`), the answer's estimate is reserved
    before the router is called and settled to what was produced whatever ends
    the stream (complete, upstream error, stop, client gone), right after the
    final save that also writes the answer's usage record. A refused
    reservation ends the stream with a ``refused`` event (the explanation) and
    the answer saved as an error with that explanation: no half answer exists.
    """
    parts: list[str] = []
    status: str = Status.COMPLETE
    error = ""
    usage: dict[str, int] = {}
    ttft_ms: int | None = None
    deployment_id: int | None = None
    last_flush = last_check = started
    flushed_parts = 0
    alias = job.plan.alias
    alias_label = alias.display_name_en if (language or "ja").startswith("en") else alias.display_name_ja
    charge = job.charge
    reservation: Reservation | None = None
    finished = False

    async def save(final_status: str | None, detail: str = "", ledger_status: str = "") -> Message | None:
        fields = (
            answer_usage(job=job, deployment_id=deployment_id, usage=usage, content_chunks=len(parts))
            if final_status
            else {}
        )
        latency_ms = int((time.monotonic() - started) * 1000)
        outcome = (
            quota.outcome_for(
                charge=charge,
                plan=job.plan,
                status=ledger_status or final_status,
                deployment_id=deployment_id,
                usage_fields=fields,
                ttft_ms=ttft_ms,
                latency_ms=latency_ms,
                detail=detail,
            )
            if final_status and charge is not None
            else None
        )
        try:
            return await db_hop(
                message_stream_update,
                ministry_id=job.ministry_id,
                message_id=job.message_id,
                content="".join(parts),
                status=final_status,
                error=error if final_status else None,
                deployment_id=deployment_id,
                **fields,
                ttft_ms=ttft_ms if final_status else None,
                latency_ms=latency_ms if final_status else None,
                ledger=outcome.ledger if outcome is not None else None,
            )
        finally:
            if outcome is not None and reservation is not None:
                # Settle to what was produced, even if the save failed or the task is cancelled.
                await asyncio.shield(
                    asettle(
                        reservation=reservation,
                        prompt_tokens=outcome.prompt_tokens,
                        completion_tokens=outcome.completion_tokens,
                        cost_yen=outcome.cost_yen,
                    )
                )

    async def finish(final_status: str, detail: str = "", ledger_status: str = "") -> Message | None:
        nonlocal finished
        if finished:
            return None
        finished = True
        return await save(final_status, detail, ledger_status)

    with translation.override(language):
        if charge is not None:

            async def released(made: Reservation) -> None:
                # The browser left while admission ran: settle (to nothing) and end the answer.
                nonlocal reservation
                reservation = made
                await finish(Status.INTERRUPTED)

            try:
                made = await quota.reserve(charge, on_cancel=released)
                reservation = made
            except QuotaExceeded as exc:
                logger.info("chat stream %s refused: %s/%s", job.message_id, exc.level, exc.kind)
                status, error = Status.ERROR, quota.refusal_text(exc)
                final = await finish(Status.ERROR, detail=f"quota_{exc.kind}", ledger_status="refused")
                yield sse_event("refused", html.escape(error, quote=False))
                if final is not None:
                    yield done_event(final, alias_label=alias_label)
                return
            except Exception:  # admission itself failed: fail closed, but end the answer explained
                logger.exception("chat stream %s: admission failed", job.message_id)
                status, error = Status.ERROR, _("回答の生成中にエラーが発生しました。")
                final = await finish(Status.ERROR, detail="admission_error", ledger_status="refused")
                if final is not None:
                    yield done_event(final, alias_label=alias_label)
                return
        # A stop pressed while the stream was starting (after its claim, before any check in the
        # loop, which waits STOP_CHECK_SECONDS) ends it here, before the model is called: a short
        # answer would otherwise complete before the first check and the stop would be lost.
        if await db_hop(stop_requested, job.message_id):
            final = await finish(Status.INTERRUPTED)
            if final is not None:
                yield done_event(final, alias_label=alias_label)
            return
        stream = stream_chat(job.plan, job.request)
        try:
            try:
                async for deployment, chunk in stream:
                    if deployment_id is None:
                        deployment_id = deployment.id
                    if chunk.usage:
                        usage = chunk.usage
                    if chunk.delta:
                        if ttft_ms is None:
                            ttft_ms = int((time.monotonic() - started) * 1000)
                        parts.append(chunk.delta)
                        yield token_event(chunk.delta)
                    now = time.monotonic()
                    if now - last_check >= STOP_CHECK_SECONDS:
                        last_check = now
                        if await db_hop(stop_requested, job.message_id):
                            status = Status.INTERRUPTED
                            break
                    if now - last_flush >= FLUSH_SECONDS and len(parts) != flushed_parts:
                        last_flush, flushed_parts = now, len(parts)
                        await save(None)
            finally:
                # Closes the provider stream and with it the upstream HTTP request.
                await stream.aclose()  # type: ignore[attr-defined]
        except UpstreamInterrupted as exc:
            logger.warning("chat stream %s interrupted: %s", job.message_id, exc)
            status, error = (
                Status.INTERRUPTED,
                _("モデルとの接続が途中で切れたため、回答が途中までになりました。"),
            )
        except AllUpstreamsFailed as exc:
            logger.warning("chat stream %s: all upstreams failed: %s", job.message_id, exc)
            status, error = (
                Status.ERROR,
                _("現在このモデルに接続できません。しばらくしてから「再生成」を押してください。"),
            )
        except UpstreamRejected as exc:
            logger.warning("chat stream %s rejected: %s", job.message_id, exc)
            status, error = (
                Status.ERROR,
                _(
                    "モデルがこの依頼を受け付けませんでした。会話が長すぎる場合は、新しい会話を始めてください。"
                ),
            )
        except UpstreamError as exc:
            logger.warning("chat stream %s failed: %s", job.message_id, exc)
            status, error = Status.ERROR, _("回答の生成中にエラーが発生しました。")
        except Exception:  # a bug must still leave the message in a final state
            logger.exception("chat stream %s failed unexpectedly", job.message_id)
            status, error = Status.ERROR, _("回答の生成中にエラーが発生しました。")
        except (asyncio.CancelledError, GeneratorExit):
            # The browser went away (tab closed, reload, stop button): keep what we have.
            await finish(Status.INTERRUPTED)
            raise
        final = await finish(status)
        if final is not None:
            yield done_event(final, alias_label=alias_label)
    if charge is not None and reservation is not None:
        # After the last event (the user waits for nothing): queue the 80 %/100 % warnings if due.
        await alerts_after_settle(charge.subject)
