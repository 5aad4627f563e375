"""Running an app: validate the form → (校正: deterministic findings; 答弁: retrieval) → streamed answer.

Request side (:func:`run_start`, inside the request's ministry scope) validates the inputs
against the app's fields, extracts the text of uploaded files with the documents parsers,
decides the 機密性 level (the user's choice, raised to the workspace's level when one is used)
and creates the run with its chat ``Conversation``/``Message`` pair: the router's allowlist and
classification gate refuse at this point already (an explained error on the message).

Stream side (:func:`run_stream_open`, through ``db_hop`` after the middleware's scope has
ended) enters the scope itself, re-checks ownership, claims the message exactly once, builds
the prompt and charges the run (``feature="app"``): chat's relay reserves before the model is
called and settles in its ``finally`` with one usage record, whatever ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.chat import services as chat_services
from apps.chat.models import Message, Role, Status
from apps.documents.answers import Source, page_label
from apps.documents.detect import Rejection, detect_type
from apps.documents.models import Chunk, Workspace
from apps.documents.parsers import parse
from apps.documents.selectors import get_workspace_for_actor
from apps.registry.router import RouteRefused, plan_route
from apps.search.relevance import evidence
from apps.search.selectors import hybrid_search
from apps.tenancy.scope import ministry_scope

from . import kobun
from .builtin import kobun_prompt
from .definition import MAX_INPUT_CHARS, render_prompt
from .models import AppKind, AppRun, MinistryApp, PlatformApp
from .selectors import get_run_for_actor

MAX_FILE_BYTES = 10 * 1024 * 1024
TOP_K = 6


def _file_text(upload: Any, label: str) -> str:
    """The text of an uploaded file (any format the documents app reads)."""
    if upload.size > MAX_FILE_BYTES:
        raise ValidationError(_("「%(label)s」のファイルが大きすぎます（10MBまで）。") % {"label": label})
    data = upload.read()
    try:
        parsed = parse(detect_type(data, filename=upload.name), data)
    except Rejection as exc:
        raise ValidationError(f"{label}: {exc.ja} / {exc.en}") from exc
    return "\n\n".join(b.text for page in parsed.pages for b in page.blocks)


def clean_inputs(*, app: PlatformApp | MinistryApp, data: Any, files: Any) -> dict[str, str]:
    """The form values of ``app``'s fields (ja/en errors); choices must be one of the options."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for field in app.fields:
        name, label = field["name"], field.get("label") or field["name"]
        if field["kind"] == "file":
            upload = files.get(name) if files is not None else None
            try:
                value = _file_text(upload, label) if upload is not None else ""
            except ValidationError as exc:
                errors.extend(exc.messages)
                continue
        else:
            value = str(data.get(name, "") or "").replace("\r\n", "\n")
        if field["kind"] == "choice" and value and value not in field.get("options", []):
            errors.append(_("「%(label)s」の選択肢が正しくありません。") % {"label": label})
        if field.get("required", True) and not value.strip():
            errors.append(_("「%(label)s」を入力してください。") % {"label": label})
        if len(value) > MAX_INPUT_CHARS:
            errors.append(
                _("「%(label)s」は%(limit)s文字以内にしてください。")
                % {"label": label, "limit": MAX_INPUT_CHARS}
            )
        values[name] = value
    if errors:
        raise ValidationError(errors)
    return values


def _sources(*, workspace: Workspace, query: str) -> list[Source]:
    """Evidence passages of the workspace for ``query`` (workspace id filtered inside the query)."""
    hits = hybrid_search(
        ministry_id=workspace.ministry_id,
        workspace_ids=[workspace.pk],
        query=query,
        level=workspace.level,
        limit=TOP_K,
    )
    hits = evidence(question=query, hits=hits)
    names = dict(
        Chunk.objects.filter(pk__in=[h.chunk_id for h in hits]).values_list("pk", "document__filename")
    )
    return [
        Source(
            n=i,
            chunk_id=h.chunk_id,
            document_id=h.document_id,
            filename=names.get(h.chunk_id, ""),
            page_start=h.page_start,
            page_end=h.page_end,
        )
        for i, h in enumerate(hits, start=1)
    ]


def run_start(
    *,
    actor: Any,
    app: PlatformApp | MinistryApp,
    inputs: dict[str, str],
    alias_name: str,
    level: Any,
    workspace_id: Any = None,
) -> AppRun:
    """Create a run (and its streaming message); the model is called by the stream view.

    Security: the chosen workspace is re-fetched through membership; its 機密性 level
    raises the run's level, never lowers it.
    """
    level_value = chat_services.validate_level(level)
    workspace: Workspace | None = None
    # Only the workspace posted with the form: an app's attached workspace is merely the form's
    # default, so a colleague running a shared app is never bound to a workspace they cannot see.
    wanted = workspace_id
    if wanted not in (None, "", "0", 0):
        try:
            workspace = get_workspace_for_actor(actor=actor, workspace_id=int(str(wanted)))
        except (TypeError, ValueError) as exc:
            raise ValidationError(_("ワークスペースが正しくありません。")) from exc
        level_value = max(level_value, workspace.level)
    if app.kind == AppKind.GROUNDED and workspace is None:
        raise ValidationError(_("このアプリでは資料のワークスペースを選んでください。"))
    findings: list[dict[str, Any]] = []
    checked = corrected = ""
    if app.kind == AppKind.KOBUN:
        checked = inputs.get("text", "")
        # In text order: the page numbers the highlights and the list the same way.
        found = sorted(kobun.check(checked), key=lambda f: (f.start, f.end))
        findings = [f.as_dict() for f in found]
        corrected = kobun.apply_suggestions(checked, found)
    sources: list[Source] = []
    if workspace is not None and (app.kind == AppKind.GROUNDED or app.uses_workspace):
        # The query is what the user typed (not the template's wording around it).
        query = "\n".join(v for v in inputs.values() if v.strip())
        sources = _sources(workspace=workspace, query=query)
    prompt = render_prompt(app.prompt_template, inputs)  # refused (422) if it multiplies the inputs
    with transaction.atomic():
        conversation = chat_services.conversation_create(
            actor=actor, alias_name=alias_name, level=level_value, title=f"{app.display_name}"[:200]
        )
        Message.objects.create(conversation=conversation, role=Role.USER, content=prompt)
        message = chat_services._start_answer(conversation)  # route refusal → explained error
        run: AppRun = AppRun.objects.create(
            platform_app=app if isinstance(app, PlatformApp) else None,
            ministry_app=app if isinstance(app, MinistryApp) else None,
            app_name=app.display_name[:100],
            app_kind=app.kind,
            output_format=app.output_format,
            user=actor,
            inputs=inputs,
            findings=findings,
            checked_text=checked,
            corrected=corrected,
            sources=[s.as_json() for s in sources],
            workspace_id_used=workspace.pk if workspace is not None else None,
            alias_name=alias_name,
            level=level_value,
            conversation=conversation,
            message=message,
        )
    return run


def build_prompt(
    *, run: AppRun, system_prompt: str, template: str, rendered: bool = False
) -> list[dict[str, str]]:
    """System + user messages: the rendered template, with the 校正 findings or numbered sources.

    ``rendered``: ``template`` is the prompt as saved when the run started (its app was deleted
    since); it is sent as is, never rendered again (a ``{{name}}`` the user typed stays text).
    """
    if rendered:
        user = template
    elif run.app_kind == AppKind.KOBUN:
        user = kobun_prompt(
            text=run.checked_text,
            findings=[kobun.Finding(**f) for f in run.findings],
            corrected=run.corrected,
        )
    else:
        user = render_prompt(template, run.inputs)
    if run.sources:
        chunks = {
            c.pk: c
            for c in Chunk.objects.filter(
                workspace_id=run.workspace_id_used, pk__in=[s["chunk_id"] for s in run.sources]
            )
        }
        blocks = []
        for s in run.sources:
            chunk = chunks.get(s["chunk_id"])
            if chunk is None:  # deleted since the run started: never sent
                continue
            label = " ".join(p for p in (s["filename"], page_label(s["page_start"], s["page_end"])) if p)
            blocks.append(f"[{s['n']}] {label}\n{chunk.text}")
        user = "# 資料\n\n" + "\n\n".join(blocks) + "\n\n" + user
    messages = [{"role": "user", "content": user}]
    if system_prompt.strip():
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


@dataclass(frozen=True)
class RunReplay:
    message: Message


def _definition(run: AppRun) -> tuple[str, str, bool]:
    """System prompt, template, and whether the template is the already rendered prompt."""
    app = run.platform_app or run.ministry_app
    if app is None:  # the app was deleted after the run started: the prompt as it was sent
        saved = run.conversation.messages.filter(role=Role.USER).values_list("content", flat=True).first()
        return "", saved or "", True
    return app.system_prompt, app.prompt_template, False


def run_stream_open(*, ministry_id: int, actor: Any, run_id: int) -> chat_services.StreamJob | RunReplay:
    """Authorise and claim the run's message; the job carries the prompt and the charge."""
    with ministry_scope(ministry_id=ministry_id):
        run = get_run_for_actor(actor=actor, run_id=run_id)
        message = run.message
        now = timezone.now()
        claimed = Message.objects.filter(
            pk=message.pk, status=Status.STREAMING, stream_started_at__isnull=True
        ).update(stream_started_at=now, updated_at=now)
        if not claimed:
            return RunReplay(message=message)
        try:
            plan = plan_route(
                alias_name=run.alias_name,
                level=run.level,
                sticky_key=chat_services.sticky_key(run.conversation_id),
            )
        except RouteRefused as exc:
            Message.objects.filter(pk=message.pk).update(
                status=Status.ERROR, error=exc.message[:1000], updated_at=now
            )
            message.refresh_from_db()
            return RunReplay(message=message)
        system_prompt, template, rendered = _definition(run)
        try:
            # The app may have been edited since the run started: rendered (and bounded) again.
            messages = build_prompt(
                run=run, system_prompt=system_prompt, template=template, rendered=rendered
            )
        except ValidationError as exc:
            Message.objects.filter(pk=message.pk).update(
                status=Status.ERROR, error=" ".join(exc.messages)[:1000], updated_at=now
            )
            message.refresh_from_db()
            return RunReplay(message=message)
        return chat_services.charged_stream_job(
            ministry_id=ministry_id,
            actor=actor,
            conversation_id=run.conversation_id,
            message_id=message.pk,
            plan=plan,
            messages=messages,
            feature="app",
        )


def run_for_render(*, ministry_id: int, actor: Any, run_id: int) -> AppRun:
    """The run with its message as saved now (for the final SSE fragment)."""
    with ministry_scope(ministry_id=ministry_id):
        run = get_run_for_actor(actor=actor, run_id=run_id)
        run.message.refresh_from_db()
        return run
