"""Presentation helpers: the 校正 findings highlighted at their offsets, run result context."""

from __future__ import annotations

from typing import Any

from django.utils import translation
from django.utils.safestring import mark_safe

from apps.chat.markdown import render_markdown
from apps.documents import answers

from .models import AppKind, AppRun, OutputFormat


def highlight_segments(text: str, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``text`` cut into plain segments and finding segments (by character offsets).

    Only findings with a suggestion are marked inline: kobun.check keeps those free of overlaps,
    while sentence-wide advice (``suggestion`` None, e.g. ``ending.mixed``) may contain them and is
    shown in the list instead. An out-of-range or overlapping one is skipped rather than breaking
    the page. Numbers are positions in ``findings`` (as the list shows them). The template
    escapes every text.
    """
    english = (translation.get_language() or "ja").startswith("en")
    segments: list[dict[str, Any]] = []
    pos = 0
    numbered = [(i, f) for i, f in enumerate(findings, start=1) if f.get("suggestion") is not None]
    for i, f in sorted(numbered, key=lambda item: (item[1]["start"], item[1]["end"])):
        start, end = int(f["start"]), int(f["end"])
        if start < pos or end > len(text) or start >= end:
            continue
        if start > pos:
            segments.append({"text": text[pos:start]})
        segments.append(
            {
                "text": text[start:end],
                "n": i,
                "rule": f["rule"],
                "suggestion": f.get("suggestion"),
                "message": f["message_en"] if english else f["message_ja"],
            }
        )
        pos = end
    if pos < len(text):
        segments.append({"text": text[pos:]})
    return segments


def run_context(run: AppRun) -> dict[str, Any]:
    """What the run page and the final SSE fragment show."""
    message = run.message
    content = message.content
    if run.sources:
        output_html = answers_html(run, content)
    elif run.output_format == OutputFormat.MARKDOWN and content:
        output_html = mark_safe(render_markdown(content))  # noqa: S308 - sanitised by nh3 with an allowlist
    else:
        output_html = ""
    english = (translation.get_language() or "ja").startswith("en")
    findings = [{**f, "message": f["message_en"] if english else f["message_ja"]} for f in run.findings]
    return {
        "run": run,
        "m": message,
        "output_html": output_html,
        "is_kobun": run.app_kind == AppKind.KOBUN,
        "segments": highlight_segments(run.checked_text, run.findings)
        if run.app_kind == AppKind.KOBUN
        else [],
        "findings": findings,
        "sources": [{**s, "pages": answers.page_label(s["page_start"], s["page_end"])} for s in run.sources],
    }


def answers_html(run: AppRun, content: str) -> Any:
    """Markdown with each ``[n]`` a link to its passage (documents' citation machinery)."""
    from apps.documents.answer_views import citations_html

    return citations_html(run, content)  # type: ignore[arg-type]  # duck-typed: only .sources is read
