"""Embeddings for ingestion and queries, through the registry like every model call.

All calls go to the alias ``settings.GENNAI_EMBEDDING_ALIAS`` (default
``standard-embedding``) via :func:`apps.registry.router.plan_route`, so the
ministry's allowlist and the classification gate apply: the caller MUST be
inside the ministry's scope (:func:`apps.tenancy.scope.ministry_scope`) and
pass the confidentiality ``level`` of the text it embeds.

The e5 convention (``query: `` for search queries, ``passage: `` for indexed
text) is applied here and only here, and only when the deployment that answers
serves an e5-family model (see :func:`uses_e5_prefixes`). Other models get the
raw text.

Every call that reached a deployment (or tried to) writes one usage record in
the active scope: ``feature`` "ingest" for passages and "search" for queries,
unless the caller charged it elsewhere with
:func:`apps.quotas.context.usage_context` (which also names the user or key).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

from django.conf import settings

from apps.registry.providers.base import EmbedResult, UpstreamRejected
from apps.registry.router import AllUpstreamsFailed, RoutePlan, RouteRefused, embed_inputs, plan_route
from apps.registry.snapshot import DeploymentInfo
from apps.tenancy.scope import current_ministry_id

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

# "multilingual-e5-small-q4", "intfloat/multilingual-e5-large", "e5-mistral-7b-instruct" …
_E5_NAME = re.compile(r"(^|[-_/.])e5([-_/.]|$)", re.IGNORECASE)


class EmbeddingUnavailable(Exception):
    """No embedding can be had now (alias missing or not granted, gate refused, upstream down).

    Ingestion marks its step for retry; the message says why in plain words.
    """


def _alias_name() -> str:
    return str(getattr(settings, "GENNAI_EMBEDDING_ALIAS", "standard-embedding"))


def _batch_size() -> int:
    return max(1, int(getattr(settings, "GENNAI_EMBEDDING_BATCH_SIZE", 32)))


def uses_e5_prefixes(deployment: DeploymentInfo) -> bool:
    """Does ``deployment`` expect the e5 ``query: ``/``passage: `` prefixes?

    ``settings.GENNAI_EMBEDDING_E5_PREFIXES``: ``"auto"`` (default: when the
    registry's model name or the served model name is e5-family), ``"always"``
    or ``"never"``.
    """
    mode = str(getattr(settings, "GENNAI_EMBEDDING_E5_PREFIXES", "auto"))
    if mode == "always":
        return True
    if mode == "never":
        return False
    return bool(_E5_NAME.search(deployment.model_name) or _E5_NAME.search(deployment.served_model_name))


async def _embed_batches(
    candidates: Sequence[DeploymentInfo], texts: Sequence[str], prefix: str
) -> tuple[DeploymentInfo, EmbedResult]:
    """Embed ``texts`` in batches on the first candidate that answers (the router's failover)."""

    def inputs_for(deployment: DeploymentInfo) -> list[str]:
        return [prefix + t for t in texts] if uses_e5_prefixes(deployment) else list(texts)

    try:
        # Each call runs on its own event loop: close that loop's clients (close=True).
        return await embed_inputs(candidates, inputs_for, batch_size=_batch_size(), close=True)
    except UpstreamRejected as exc:
        # The upstream refused these inputs: another deployment would too.
        raise EmbeddingUnavailable(str(exc)) from exc
    except AllUpstreamsFailed as exc:
        raise EmbeddingUnavailable(str(exc) or "no embedding deployment") from exc


def _embed(*, texts: Sequence[str], prefix: str, level: int, feature: str) -> list[tuple[float, ...]]:
    if not texts:
        return []
    try:
        plan = plan_route(alias_name=_alias_name(), level=level)
    except RouteRefused as exc:
        raise EmbeddingUnavailable(exc.message) from exc
    if plan.alias.kind != "embedding":
        raise EmbeddingUnavailable(f"alias {plan.alias.name!r} is not an embedding alias")
    started = time.perf_counter()
    try:
        # A private event loop (never the web server's): the provider's pooled clients are
        # per loop, and closing ours at the end cannot touch connections serving /v1.
        # Called from async code this raises (RuntimeError): use a thread (sync_to_async).
        deployment, result = asyncio.run(_embed_batches(plan.candidates, texts, prefix))
    except EmbeddingUnavailable as exc:
        _record(plan=plan, feature=feature, texts=texts, started=started, status="error", detail=str(exc))
        raise
    _record(plan=plan, feature=feature, texts=texts, started=started, deployment=deployment, result=result)
    return [tuple(v) for v in result.vectors]


def _record(
    *,
    plan: RoutePlan,
    feature: str,
    texts: Sequence[str],
    started: float,
    deployment: DeploymentInfo | None = None,
    result: EmbedResult | None = None,
    status: str = "ok",
    detail: str = "",
) -> None:
    """One usage record per embedding call (all its batches), charged to the caller's
    :func:`~apps.quotas.context.usage_context` (feature, user or key) in the active scope."""
    from apps.quotas.context import current_usage_context
    from apps.quotas.services import usage_record_create
    from apps.quotas.tokens import count_input_tokens

    context = current_usage_context()
    prompt_tokens, estimated = (result.prompt_tokens, False) if result else (0, False)
    if result is not None and prompt_tokens <= 0:
        prompt_tokens, estimated = count_input_tokens(
            inputs=list(texts), model_name=deployment.model_name if deployment else None
        )
    usage_record_create(
        alias_name=plan.alias.name,
        status=status,
        user_id=context.user_id if context else None,
        api_key_id=context.api_key_id if context else None,
        team_id=context.team_id if context else None,
        feature=context.feature if context else feature,
        deployment_id=deployment.id if deployment else None,
        revision=plan.alias.revision_number or None,
        endpoint="embeddings",
        level=plan.level,
        prompt_tokens=prompt_tokens,
        prompt_tokens_estimated=estimated,
        latency_ms=int((time.perf_counter() - started) * 1000),
        detail=detail[:200],
    )


def _check_scope(ministry_id: int) -> None:
    if current_ministry_id() != ministry_id:
        # Security: the router reads the *active* scope's allowlist; embedding for
        # another ministry than the scope would apply the wrong grants.
        raise EmbeddingUnavailable(f"embedding for ministry {ministry_id} outside its scope")


def embed_passages(*, ministry_id: int, texts: Sequence[str], level: int = 1) -> list[tuple[float, ...]]:
    """Vectors for chunks to index (``passage: `` for e5), batched; one per text, same order."""
    _check_scope(ministry_id)
    return _embed(texts=texts, prefix=PASSAGE_PREFIX, level=level, feature="ingest")


def embed_query(*, ministry_id: int, text: str, level: int = 1) -> tuple[float, ...]:
    """The vector of a search query (``query: `` for e5)."""
    _check_scope(ministry_id)
    return _embed(texts=[text], prefix=QUERY_PREFIX, level=level, feature="search")[0]
