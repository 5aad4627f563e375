"""``POST /v1/search``: hybrid search over a ministry's shared workspaces, for API keys.

Body: ``{"query": str (≤ 2000 characters), "workspace_ids": [int, …] (optional, ≤ 1000 ids),
"top_k": int (1–50, default 5)}``.

Security (DESIGN invariant 12, issue 7): the ministry is the API key's, never
the request's. An API key is not a person and belongs to no workspace, so it
reads the ministry's **shared** workspaces only (personal workspaces are never
visible to a key), and only those whose 機密性 does not exceed the key's
``max_level``. ``workspace_ids`` can only narrow that set: an id of another
ministry, of a personal workspace or of a workspace above the key's level is
silently dropped, exactly like a missing id. A key created with a workspace
restriction (``ApiKey.allowed_workspace_ids``) reads only those workspaces: the
requested ids are intersected with it in the lookup that applies the rules
above, and only the result reaches the backend's query, so asking for
a workspace outside the restriction returns nothing from it. A key without a
restriction (every key created before it existed) keeps the ministry-wide rule.
The restriction is read from the key's row on every search, not from the
authentication cache: it is fixed at creation, and reading it here keeps the
check next to the query it narrows. The workspace filter is inside the
backend's query, and the whole lookup runs in the key's ministry scope (RLS).
"""

from __future__ import annotations

from typing import Any

from apps.quotas.admission import QuotaExceeded, Reservation
from apps.quotas.context import usage_context
from apps.quotas.journal import new_request_id
from apps.quotas.route_charge import reserve_or_release
from apps.search.selectors import hybrid_search
from apps.tenancy.connections import scoped_db_hop

from . import admission, validation
from .auth import Caller
from .endpoints import Reply, error_reply, json_reply
from .errors import ApiError

MAX_QUERY_CHARS = 2000
MAX_TOP_K = 50
# Ids a request may name in ``workspace_ids`` (a 1 MB body could otherwise carry ≈150,000,
# each going into the lookup's SQL and, on Elasticsearch, a terms filter).
MAX_WORKSPACE_IDS = 1000
DEFAULT_TOP_K = 5


def _invalid(param: str, ja: str, en: str) -> ApiError:
    return ApiError(400, ja, en, code="invalid_request_error", param=param)


def search_params(data: dict[str, Any]) -> tuple[str, list[int] | None, int]:
    """``(query, workspace_ids, top_k)`` of a request body, or a 400 naming the bad field."""
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _invalid("query", "query（検索語）を指定してください。", "query must be a non-empty string.")
    if len(query) > MAX_QUERY_CHARS:
        raise _invalid(
            "query",
            f"query は{MAX_QUERY_CHARS}文字以内にしてください。",
            f"query must be at most {MAX_QUERY_CHARS} characters.",
        )
    raw_ids = data.get("workspace_ids")
    workspace_ids: list[int] | None = None
    if raw_ids is not None:
        if not isinstance(raw_ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in raw_ids
        ):
            raise _invalid(
                "workspace_ids",
                "workspace_ids は整数の配列で指定してください。",
                "workspace_ids must be an array of integers.",
            )
        if len(raw_ids) > MAX_WORKSPACE_IDS:
            raise _invalid(
                "workspace_ids",
                f"workspace_ids は{MAX_WORKSPACE_IDS}件以内にしてください。",
                f"workspace_ids may name at most {MAX_WORKSPACE_IDS} workspaces.",
            )
        workspace_ids = raw_ids
    top_k = data.get("top_k", DEFAULT_TOP_K)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise _invalid(
            "top_k",
            f"top_k は1〜{MAX_TOP_K}の整数にしてください。",
            f"top_k must be an integer 1–{MAX_TOP_K}.",
        )
    return query.strip(), workspace_ids, top_k


def key_workspaces(*, caller: Caller, workspace_ids: list[int] | None) -> dict[int, int]:
    """``{id: level}`` of the shared workspaces of the key's ministry it may read (see module docstring).

    Security: the key's own restriction narrows the workspace query, strict
    when non-empty; a key row that cannot be read (another ministry's id, gone)
    and a caller without a key (none reaches ``/v1/search`` today) read nothing.
    """
    from apps.documents.models import Workspace, WorkspaceKind

    from .models import ApiKey

    if caller.api_key_id is None:
        return {}
    restriction = (
        ApiKey.objects.filter(pk=caller.api_key_id, ministry_id=caller.ministry_id)
        .values_list("allowed_workspace_ids", flat=True)
        .first()
    )
    if restriction is None:
        return {}
    rows = Workspace.objects.filter(
        ministry_id=caller.ministry_id, kind=WorkspaceKind.SHARED, deleting=False, level__lte=caller.max_level
    )
    if restriction:  # empty = not limited (the rule every key had before the field existed)
        rows = rows.filter(pk__in=restriction)
    if workspace_ids is not None:
        rows = rows.filter(pk__in=workspace_ids)
    return dict(rows.values_list("pk", "level"))


def _search_sync(
    caller: Caller, query: str, workspace_ids: list[int] | None, top_k: int
) -> list[dict[str, Any]]:
    from apps.documents.models import Document

    levels = key_workspaces(caller=caller, workspace_ids=workspace_ids)
    if not levels:
        return []
    # The query embedding is charged to the key (its usage record: feature "search").
    with usage_context(feature="search", api_key_id=caller.api_key_id, user_id=caller.user_id):
        hits = hybrid_search(
            ministry_id=caller.ministry_id,
            workspace_ids=sorted(levels),
            query=query,
            level=max(levels.values()),
            limit=top_k,
        )
    names = dict(Document.objects.filter(pk__in={h.document_id for h in hits}).values_list("pk", "filename"))
    return [
        {
            "object": "search.result",
            "chunk_id": h.chunk_id,
            "document_id": h.document_id,
            "workspace_id": h.workspace_id,
            "filename": names[h.document_id],
            "page_start": h.page_start,
            "page_end": h.page_end,
            "heading": h.heading,
            "text": h.text,
            "score": h.score,
        }
        for h in hits
        if h.document_id in names
    ]


async def search(*, caller: Caller, body: bytes) -> Reply:
    query, workspace_ids, top_k = search_params(validation.parse_json(body))
    # The query embedding is a model call: under the key's rate limits and budgets (429 over them).
    try:
        reservation = await reserve_or_release(
            admission.reserve_search(caller=caller, query=query, request_id=new_request_id()),
            _release_if_any,
        )
    except QuotaExceeded as exc:
        return error_reply(admission.quota_error(exc))
    try:
        rows = await scoped_db_hop(_search_sync, ministry_id=caller.ministry_id)(
            caller, query, workspace_ids, top_k
        )
    finally:
        await _release_if_any(reservation)
    return json_reply({"object": "list", "data": rows})


async def _release_if_any(reservation: Reservation | None) -> None:
    if reservation is not None:
        await admission.release(reservation)
