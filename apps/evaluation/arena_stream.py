"""One side of a chat arena battle, streamed: chat's admission, router and ledger, the battle's storage.

Like :func:`apps.chat.streaming.relay` for one answer: the job's charge is
reserved before the router is called (a refusal ends the side as an error,
nothing reaches a model), ``token`` events carry the HTML-escaped deltas, and
whatever ends the stream (complete, upstream error, client gone) the side is
saved with exactly one usage record (feature ``eval``, endpoint ``arena``)
and the reservation settled to what was produced. The answer goes to the
battle (:func:`apps.evaluation.arena.arena_side_finish`), not to a chat
message, and no error text names the model: the candidates are anonymous
until the vote. The caller sends the final ``done`` fragment.

DESIGN invariant 10: the database is reached only through ``db_hop``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from apps.chat import quota
from apps.chat.services import StreamJob, answer_usage
from apps.chat.streaming import token_event
from apps.quotas.admission import QuotaExceeded, Reservation, asettle
from apps.quotas.alerts import alerts_after_settle
from apps.registry.providers.base import UpstreamError, UpstreamInterrupted
from apps.registry.router import AllUpstreamsFailed, stream_chat
from apps.tenancy.connections import db_hop

from .arena import arena_side_finish
from .arena_models import SideStatus

logger = logging.getLogger("gennai.evaluation")


async def arena_relay(job: StreamJob, *, battle_id: int, side: str, started: float) -> AsyncIterator[bytes]:
    """Stream one side's answer (token events only), then save it and settle its reservation."""
    parts: list[str] = []
    usage: dict[str, int] = {}
    ttft_ms: int | None = None
    deployment_id: int | None = None
    charge = job.charge
    reservation: Reservation | None = None
    finished = False

    async def finish(status: str, detail: str = "", ledger_status: str = "", reason: str = "") -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        fields = answer_usage(job=job, deployment_id=deployment_id, usage=usage, content_chunks=len(parts))
        outcome = (
            quota.outcome_for(
                charge=charge,
                plan=job.plan,
                status=ledger_status or status,
                deployment_id=deployment_id,
                usage_fields=fields,
                ttft_ms=ttft_ms,
                latency_ms=int((time.monotonic() - started) * 1000),
                detail=detail,
            )
            if charge is not None
            else None
        )
        try:
            await db_hop(
                arena_side_finish,
                ministry_id=job.ministry_id,
                battle_id=battle_id,
                side=side,
                content="".join(parts),
                status=status,
                reason=reason,
                ledger={**outcome.ledger, "endpoint": "arena"} if outcome is not None else None,
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

    if charge is not None:

        async def released(made: Reservation | None) -> None:
            # The browser left while admission ran: settle (to nothing) and end the side.
            nonlocal reservation
            reservation = made
            await finish(SideStatus.INTERRUPTED)

        try:
            reservation = await quota.reserve(charge, on_cancel=released)
        except QuotaExceeded as exc:
            logger.info("arena %s/%s refused: %s/%s", battle_id, side, exc.level, exc.kind)
            await finish(
                SideStatus.ERROR, detail=f"quota_{exc.kind}", ledger_status="refused", reason="quota"
            )
            return
        except Exception:  # admission itself failed: fail closed
            logger.exception("arena %s/%s: admission failed", battle_id, side)
            await finish(SideStatus.ERROR, detail="admission_error", ledger_status="refused")
            return
    status: str = SideStatus.COMPLETE
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
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    except UpstreamInterrupted as exc:
        logger.warning("arena %s/%s interrupted: %s", battle_id, side, exc)
        status = SideStatus.INTERRUPTED
    except (UpstreamError, AllUpstreamsFailed) as exc:
        logger.warning("arena %s/%s failed: %s", battle_id, side, exc)
        status = SideStatus.ERROR
    except Exception:  # a bug must still leave the side in a final state
        logger.exception("arena %s/%s failed unexpectedly", battle_id, side)
        status = SideStatus.ERROR
    except (asyncio.CancelledError, GeneratorExit):
        # The browser went away: keep what we have.
        await finish(SideStatus.INTERRUPTED)
        raise
    await finish(status)
    if charge is not None and reservation is not None:
        await alerts_after_settle(charge.subject)
