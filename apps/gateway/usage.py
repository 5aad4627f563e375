"""Usage accounting of one ``/v1`` request: a meter filled in as the response goes.

Per request the meter journals two entries (:mod:`apps.quotas.journal`): one
``started`` written before the upstream is called (:meth:`UsageMeter.start`;
Redis's answer is awaited before the first token goes out,
:meth:`UsageMeter.confirm_start`) and one
``finished`` when the request ends (:meth:`UsageMeter.finish`, exactly once,
even while the request task is being cancelled by a client disconnect). No
ORM work happens on the hot path; the journal is drained into ``UsageRecord``
in bulk by a worker. A refused request journals only its ``finished`` entry. When
admission reserves the request, its script appends the ``started`` entry in the
same atomic step (one command in front of the upstream call instead of two).

Prompt tokens: when the upstream reports none (llama.cpp, servers that ignore
``stream_options``), the meter counts the prompt itself
(:func:`apps.quotas.tokens.count_prompt_tokens`) and flags the row as estimated
unless a real tokenizer is registered for the model. A non-empty prompt is never
recorded as 0 tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.quotas.admission import Reservation, asettle
from apps.quotas.alerts import alerts_after_settle
from apps.quotas.journal import UsageEntry, journal_finished, journal_started_sent, new_request_id
from apps.quotas.models import UsageStatus
from apps.quotas.pricing import deployment_cost
from apps.quotas.tokens import count_input_tokens, count_prompt_tokens
from apps.registry.snapshot import DeploymentInfo

from .auth import Caller

logger = logging.getLogger("gennai.gateway")

_tasks: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` after the request without waiting for it (a reference keeps it alive)."""
    task = asyncio.ensure_future(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _stored() -> bool:
    """Redis stored the ``started`` entry (admission's script wrote it with the reservation)."""
    return True


@dataclass
class UsageMeter:
    """What the request's usage record needs; journaled at start and once at the end."""

    caller: Caller
    alias_name: str
    level: int
    endpoint: str
    started: float  # time.perf_counter() when the request arrived
    revision: int | None = None
    messages: list[dict[str, Any]] | None = None  # chat prompt, for counting when unreported
    prompt_extra: list[Any] | None = None  # the chat request's tools / response_format (prompt too)
    inputs: list[str] | None = None  # embedding inputs, likewise
    model_name: str | None = None  # the registry model (for its tokenizer), once routed
    deployment: DeploymentInfo | None = None
    ttft_ms: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    detail: str = ""
    request_id: str = field(default_factory=new_request_id)
    created_at: float = field(default_factory=time.time)
    done: bool = False
    start_answer: Callable[[], Awaitable[bool]] | None = None  # Redis's answer to the started entry
    reservation: Reservation | None = None  # admission (apps.gateway.admission): settled by finish

    def first_token(self, deployment: DeploymentInfo) -> None:
        self.deployment = deployment
        self.model_name = deployment.model_name
        self.ttft_ms = int((time.perf_counter() - self.started) * 1000)

    def take_usage(self, usage: dict[str, int] | None) -> None:
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)

    def prompt_count(self) -> tuple[int, bool]:
        """The reported prompt tokens, else our own count (flagged if estimated)."""
        if self.prompt_tokens > 0:
            return self.prompt_tokens, False
        if self.messages:
            return count_prompt_tokens(
                messages=self.messages, model_name=self.model_name, extra=self.prompt_extra or ()
            )
        if self.inputs:
            return count_input_tokens(inputs=self.inputs, model_name=self.model_name)
        return 0, False

    def entry(self, status: str, *, counted: tuple[int, bool] | None = None) -> UsageEntry:
        prompt_tokens, estimated = counted if counted is not None else self.prompt_count()
        return UsageEntry(
            request_id=self.request_id,
            ministry_id=self.caller.ministry_id,
            api_key_id=self.caller.api_key_id,
            user_id=self.caller.user_id,
            alias_name=self.alias_name,
            deployment_id=self.deployment.id if self.deployment else None,
            revision=self.revision,
            endpoint=self.endpoint,
            level=self.level,
            prompt_tokens=prompt_tokens,
            prompt_tokens_estimated=estimated,
            completion_tokens=self.completion_tokens,
            ttft_ms=self.ttft_ms,
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            status=status,
            detail=self.detail,
            created_at=self.created_at,
        )

    def started_entry(self, prompt_tokens: int, estimated: bool) -> bytes:
        """The encoded ``started`` entry, the prompt counted by admission (which journals it
        before the upstream is called: :func:`apps.gateway.admission.reserve_chat`)."""
        return self.entry("", counted=(prompt_tokens, estimated)).encode()

    async def start(self) -> None:
        """Make sure the ``started`` entry is written: from here on the request cannot go unrecorded.

        Normally admission's script already appended it, atomically with the
        reservation (Redis answered before this is called). Otherwise (no
        reservation; admitted under the Redis-down grace) it is written here: when
        this returns the entry has left the process (one socket write to Redis,
        before the upstream is called); Redis's answer arrives while the upstream
        works and is awaited by :meth:`confirm_start`, before the first token is
        relayed.
        """
        if self.reservation is not None and self.reservation.journaled:
            self.start_answer = _stored
            return
        self.start_answer = await journal_started_sent(self.entry(""))

    async def confirm_start(self) -> bool:
        """Whether Redis stored the ``started`` entry (awaits its answer; at once if it came)."""
        if self.start_answer is None:
            return False
        return await self.start_answer()

    async def finish(self, status: str) -> None:
        """Journal the ``finished`` entry once, even if the request task is being cancelled.

        A reserved request is settled here too, to exactly its ledger row's tokens
        and cost (the entry carries the cost, so the drainer records the same number),
        by the same script that journals the entry (:func:`apps.quotas.admission.asettle`).
        """
        if self.done:
            return
        self.done = True
        entry = self.entry(status)
        reservation = self.reservation
        journaled = False
        try:
            if reservation is not None:
                entry.cost_yen = str(self._cost(entry.prompt_tokens, entry.completion_tokens))
                # One script settles and journals the finished entry (shielded: it completes
                # even if this task is being cancelled); the budget notices follow it, off the
                # response's path.
                settling = asyncio.ensure_future(
                    asettle(
                        reservation=reservation,
                        prompt_tokens=entry.prompt_tokens,
                        completion_tokens=entry.completion_tokens,
                        cost_yen=Decimal(entry.cost_yen),
                        journal=entry.encode(),
                    )
                )
                settling.add_done_callback(
                    lambda _done: _background(alerts_after_settle(reservation.subject))
                )
                journaled = await asyncio.shield(settling)
        finally:
            # No reservation, Redis down, or cancelled meanwhile (journaling twice is harmless).
            if not journaled:
                try:
                    await asyncio.shield(journal_finished(entry))
                except asyncio.CancelledError:  # the shielded write still completes
                    raise
                except Exception:
                    logger.exception("usage record failed (request %s)", self.request_id)

    async def release(self, reservation: Reservation) -> None:
        """The client left while its reservation was made: record it and settle the reservation."""
        self.reservation = reservation
        await self.finish(UsageStatus.INTERRUPTED)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """The call's price from the deployment that answered (none answered: nothing to pay)."""
        if self.deployment is None:
            return Decimal(0)
        return deployment_cost(
            deployment=self.deployment, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
