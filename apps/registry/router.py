"""Routing an alias to a deployment: allowlist, classification gate, weights, health, failover.

``plan_route`` is synchronous and must run inside the ministry's scope (it reads
the ministry's allowlist). ``stream_chat`` is async and tries the plan's
candidates in order, failing over only before the first token.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.translation import gettext as _

from apps.tenancy.scope import current_ministry_id

from .breaker import breaker
from .providers.base import (
    ChatChunk,
    ChatRequest,
    EmbedResult,
    ProviderTarget,
    UpstreamRejected,
    UpstreamUnavailable,
)
from .providers.registry import get_provider_factory
from .snapshot import AliasInfo, DeploymentInfo, get_snapshot


class RouteRefused(Exception):
    """The request may not be routed; ``message`` is shown to the user as is."""

    def __init__(self, code: str, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class AllUpstreamsFailed(Exception):
    """Every candidate failed before its first token."""


@dataclass(frozen=True)
class RoutePlan:
    alias: AliasInfo
    candidates: tuple[DeploymentInfo, ...]
    level: int


def allowed_aliases(*, level: int | None = None) -> list[AliasInfo]:
    """Aliases the active ministry may use, optionally only those able to take ``level``."""
    ministry_id = current_ministry_id()
    if ministry_id is None:
        return []
    snapshot = get_snapshot()
    allowed = snapshot.granted_alias_ids(ministry_id)
    result = []
    for alias in snapshot.aliases.values():
        if alias.id not in allowed:
            continue
        if level is not None and _max_clearance(alias, snapshot.deployments) < level:
            continue
        result.append(alias)
    return sorted(result, key=lambda a: a.name)


def routable(deployment: DeploymentInfo) -> bool:
    """May traffic go to ``deployment`` at all? Enabled, and its model not retired."""
    return deployment.enabled and deployment.model_status != "retired"


def _max_clearance(alias: AliasInfo, deployments: dict[int, DeploymentInfo]) -> int:
    levels = [
        deployments[r.deployment_id].clearance
        for r in alias.routes
        if r.weight > 0 and r.deployment_id in deployments and routable(deployments[r.deployment_id])
    ]
    return max(levels, default=0)


# Load balancing, not security: the module's generator unless a caller (a test) injects one.
_rng = random.Random()  # noqa: S311


def _pick(
    routes: list[tuple[DeploymentInfo, int]],
    sticky_key: str | None,
    alias: str,
    rng: random.Random | None = None,
) -> int:
    """Index of the weighted choice; a sticky key always maps to the same point."""
    total = sum(weight for _deployment, weight in routes)
    if sticky_key:
        digest = hashlib.sha256(f"{alias}:{sticky_key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
    else:
        point = (rng or _rng).random() * total
    for index, (_deployment, weight) in enumerate(routes):
        if point < weight:
            return index
        point -= weight
    return len(routes) - 1


def plan_route(
    *, alias_name: str, level: int, sticky_key: str | None = None, rng: random.Random | None = None
) -> RoutePlan:
    """Choose the deployments to try for ``alias_name`` at confidentiality ``level``.

    Security: the active ministry must hold an :class:`AliasGrant` for the alias
    (allowlist), and no deployment cleared below ``level`` is ever a candidate
    (classification gate). Both refusals explain themselves to the user.
    Deployments that are disabled or whose model is retired are never
    candidates. ``rng`` makes the weighted pick reproducible (tests).
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise RouteRefused("no_scope", _("府省庁が選択されていません。"))
    snapshot = get_snapshot()
    alias = snapshot.aliases.get(alias_name)
    if alias is None or alias.id not in snapshot.granted_alias_ids(ministry_id):
        # Unknown and not-allowed look the same: ministries cannot probe others' aliases.
        raise RouteRefused(
            "model_not_found",
            _("モデル「%(name)s」は存在しないか、所属府省庁で利用が許可されていません。")
            % {"name": alias_name},
            status=404,
        )
    weighted = [
        (snapshot.deployments[r.deployment_id], r.weight)
        for r in alias.routes
        if r.weight > 0
        and r.deployment_id in snapshot.deployments
        and routable(snapshot.deployments[r.deployment_id])
    ]
    if not weighted:
        raise RouteRefused("no_deployment", _("このモデルは現在利用できません。"), status=503)
    cleared = [(d, w) for d, w in weighted if d.clearance >= level]
    if not cleared:
        highest = max(d.clearance for d, _w in weighted)
        raise RouteRefused(
            "classification",
            _(
                "機密性%(level)sの情報は「%(name)s」に送信できません（このモデルは機密性%(max)sまで）。"
                "機密性の区分を見直すか、機密性%(level)sに対応したモデルを選んでください。"
            )
            % {"level": level, "name": alias.display_name_ja, "max": highest},
        )
    usable = [(d, w) for d, w in cleared if d.healthy and not breaker.is_open(d.id)] or cleared
    primary = usable[_pick(usable, sticky_key, alias.name, rng)][0]
    rest = sorted((d for d, _w in cleared if d.id != primary.id), key=lambda d: breaker.is_open(d.id))
    return RoutePlan(alias=alias, candidates=(primary, *rest), level=level)


def plan_deployment(*, deployment_id: int, level: int) -> RoutePlan:
    """A plan with exactly one deployment, for callers that must measure that deployment.

    Used by procurement evaluation (apps.evaluation), which compares deployments
    and so must not fail over to another. There is no alias and no allowlist:
    evaluation suites are platform data, not ministry content. The
    classification gate still holds: a deployment cleared below ``level`` (or
    disabled, or of a retired model) is refused.
    """
    deployment = get_snapshot().deployments.get(deployment_id)
    if deployment is None or not routable(deployment):
        raise RouteRefused("no_deployment", _("このモデルは現在利用できません。"), status=503)
    if deployment.clearance < level:
        raise RouteRefused(
            "classification",
            _("機密性%(level)sの情報は「%(name)s」に送信できません（このモデルは機密性%(max)sまで）。")
            % {"level": level, "name": deployment.name, "max": deployment.clearance},
        )
    alias = AliasInfo(
        id=0,
        name=f"deployment:{deployment.name}",
        display_name_ja=deployment.name,
        display_name_en=deployment.name,
        kind="chat",
        revision_id=None,
        revision_number=0,
        routes=(),
    )
    return RoutePlan(alias=alias, candidates=(deployment,), level=level)


class _Upstream(Protocol):
    """What a target is built from: a snapshot's DeploymentInfo or a Deployment row."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def served_model_name(self) -> str: ...
    @property
    def secret_ref(self) -> str: ...
    @property
    def max_concurrency(self) -> int: ...


def provider_target(deployment: _Upstream) -> ProviderTarget:
    """The one place a provider target is built (chat, embeddings and the health probe).

    Security: only the *reference* is passed; the provider resolves it at call
    time through :mod:`apps.registry.secrets`, after its egress check.
    """
    return ProviderTarget(
        deployment_id=deployment.id,
        name=deployment.name,
        base_url=deployment.base_url,
        served_model_name=deployment.served_model_name,
        secret_ref=deployment.secret_ref,
        max_concurrency=deployment.max_concurrency,
        connect_timeout=settings.GENNAI_UPSTREAM_CONNECT_TIMEOUT,
        first_token_timeout=settings.GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT,
        read_timeout=settings.GENNAI_UPSTREAM_READ_TIMEOUT,
    )


async def stream_chat(
    plan: RoutePlan, request: ChatRequest
) -> AsyncIterator[tuple[DeploymentInfo, ChatChunk]]:
    """Stream from the first candidate that produces a token.

    Fails over on :class:`UpstreamUnavailable` (connect error, 5xx/429, timeout to
    first token). After the first token, errors propagate: the answer is partial
    and the caller records it as interrupted.
    """
    errors: list[str] = []
    for deployment in plan.candidates:
        if not breaker.allow(deployment.id) and len(plan.candidates) > 1:
            errors.append(f"{deployment.name}: circuit open")
            continue
        provider = get_provider_factory(deployment.provider)(provider_target(deployment))
        stream = provider.chat(request).__aiter__()
        try:
            first = await stream.__anext__()
        except UpstreamUnavailable as exc:
            breaker.failure(deployment.id)
            errors.append(str(exc))
            continue
        except StopAsyncIteration:
            breaker.failure(deployment.id)
            errors.append(f"{deployment.name}: empty stream")
            continue
        breaker.success(deployment.id)
        try:
            yield deployment, first
            async for chunk in stream:
                yield deployment, chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return
    raise AllUpstreamsFailed("; ".join(errors) or "no candidate")


async def embed_inputs(
    candidates: Sequence[DeploymentInfo],
    inputs_for: Callable[[DeploymentInfo], list[str]],
    *,
    batch_size: int | None = None,
    close: bool = False,
) -> tuple[DeploymentInfo, EmbedResult]:
    """Embed on the first candidate that answers, in batches of ``batch_size``.

    Failover as for chat before the first token: a candidate whose breaker is
    open is skipped (unless it is the only one), :class:`UpstreamUnavailable`
    moves on to the next; :class:`UpstreamRejected` (the upstream refused these
    inputs, so another would too) and a vector count that does not match the
    inputs are final. ``inputs_for`` gives each deployment its inputs (e.g. with
    the e5 prefixes it needs); ``close`` closes the provider's clients after use
    (for callers on a private event loop).
    """
    failures: list[str] = []
    for deployment in candidates:
        if not breaker.allow(deployment.id) and len(candidates) > 1:
            failures.append(f"{deployment.name}: circuit open")
            continue
        provider = get_provider_factory(deployment.provider)(provider_target(deployment))
        inputs = inputs_for(deployment)
        size = batch_size or max(len(inputs), 1)
        vectors: list[list[float]] = []
        prompt_tokens = 0
        try:
            for start in range(0, len(inputs), size):
                batch = inputs[start : start + size]
                result = await provider.embed(batch)
                if len(result.vectors) != len(batch):
                    raise UpstreamRejected(
                        f"{deployment.name}: {len(result.vectors)} vectors for {len(batch)} inputs"
                    )
                vectors.extend(result.vectors)
                prompt_tokens += result.prompt_tokens
        except UpstreamUnavailable as exc:
            breaker.failure(deployment.id)
            failures.append(str(exc))
            continue
        finally:
            if close:
                await provider.aclose()
        breaker.success(deployment.id)
        return deployment, EmbedResult(vectors=vectors, prompt_tokens=prompt_tokens)
    raise AllUpstreamsFailed("; ".join(failures) or "no candidate")
