"""The built-in apps (seeded on every ``migrate``, idempotently, by key) and the 校正 prompt.

Built-ins are :class:`~apps.aiapps.models.PlatformApp` rows with ``builtin=True``. The seed
updates them to the definitions below, so changing a prompt here and migrating is the release
path; approved catalogue apps (``builtin=False``) are never touched.
"""

from __future__ import annotations

from typing import Any

from .kobun import Finding

TEXT = {"name": "text", "label": "本文", "kind": "long_text", "options": [], "required": True}

BUILTIN_APPS: list[dict[str, Any]] = [
    {
        "key": "summarize",
        "name_ja": "要約",
        "name_en": "Summarise",
        "description_ja": "文書や記事を指定した長さで要約します。",
        "description_en": "Summarises a document or article to the length you choose.",
        "kind": "prompt",
        "system_prompt": (
            "あなたは行政文書の要約を得意とするアシスタントです。事実を変えず、原文にない"
            "情報を加えないでください。"
        ),
        "prompt_template": "次の文章を「{{length}}」で要約してください。\n\n# 文章\n{{text}}",
        "fields": [
            TEXT,
            {
                "name": "length",
                "label": "長さ",
                "kind": "choice",
                "options": ["3行程度", "200字程度", "箇条書き5点以内", "1段落"],
                "required": True,
            },
        ],
    },
    {
        "key": "kobun",
        "name_ja": "校正（公用文）",
        "name_en": "Proofread (official style)",
        "description_ja": "『公用文作成の考え方』に沿って表記を点検し、修正理由を説明して書き直します。",
        "description_en": (
            "Checks notation against the official-document conventions, explains each change and rewrites."
        ),
        "kind": "kobun",
        "system_prompt": (
            "あなたは公用文の校正者です。『公用文作成の考え方』（令和4年）に従って校正してください。"
            "機械的な点検結果は正しいものとして扱い、各指摘について修正理由を簡潔に説明し、"
            "最後に「## 修正後の文章」として全文を書き直してください。意味は変えないでください。"
        ),
        "prompt_template": "次の文章を校正してください。\n\n# 文章\n{{text}}",
        "fields": [TEXT],
    },
    {
        "key": "translate",
        "name_ja": "翻訳",
        "name_en": "Translate",
        "description_ja": "日本語と英語の間で翻訳します。",
        "description_en": "Translates between Japanese and English.",
        "kind": "prompt",
        "system_prompt": (
            "You are a careful translator for government d"
            "ocuments. Translate faithfully; keep names, n"
            "umbers and formatting."
        ),
        "prompt_template": (
            "次の文章を「{{direction}}」で翻訳してください。翻訳文だけを出力してください。\n\n{{text}}"
        ),
        "fields": [
            TEXT,
            {
                "name": "direction",
                "label": "方向",
                "kind": "choice",
                "options": ["日本語→英語", "英語→日本語"],
                "required": True,
            },
        ],
    },
    {
        "key": "draft",
        "name_ja": "文書作成",
        "name_en": "Draft a document",
        "description_ja": "箇条書きのメモから、指定した種類の文書の下書きを作ります。",
        "description_en": "Drafts a document of the chosen type from bullet points.",
        "kind": "prompt",
        "system_prompt": (
            "あなたは行政職員の文書作成を支援します。公用文の表記に従い、メモにない事実は"
            "加えず、不明な点は【要確認】と示してください。"
        ),
        "prompt_template": (
            "次のメモをもとに「{{doc_type}}」の下書きを作成してください。\n\n# メモ\n{{bullets}}"
        ),
        "fields": [
            {
                "name": "bullets",
                "label": "箇条書きのメモ",
                "kind": "long_text",
                "options": [],
                "required": True,
            },
            {
                "name": "doc_type",
                "label": "文書の種類",
                "kind": "choice",
                "options": ["通知文", "報告書", "メール", "説明資料"],
                "required": True,
            },
        ],
    },
    {
        "key": "minutes",
        "name_ja": "議事録",
        "name_en": "Minutes",
        "description_ja": "会議の文字起こしから議事録（議題・決定事項・宿題）を作ります。",
        "description_en": "Writes minutes (agenda, decisions, action items) from a meeting transcript.",
        "kind": "prompt",
        "system_prompt": (
            "あなたは会議の議事録作成者です。発言にない内容は加えず、決定事項と宿題（担当"
            "・期限）を明確にしてください。"
        ),
        "prompt_template": (
            "会議名: {{meeting}}\n\n次の文字起こしから議事録を作成してく"
            "ださい。\n\n# 文字起こし\n{{transcript}}"
        ),
        "fields": [
            {"name": "meeting", "label": "会議名", "kind": "text", "options": [], "required": False},
            {
                "name": "transcript",
                "label": "文字起こし",
                "kind": "long_text",
                "options": [],
                "required": True,
            },
        ],
    },
    {
        "key": "diet_answer",
        "name_ja": "国会答弁案",
        "name_en": "Diet answer draft",
        "description_ja": "ワークスペースの資料に基づいて国会答弁の案を作り、出典を示します。",
        "description_en": "Drafts an answer to a Diet question grounded in a workspace, with citations.",
        "kind": "grounded",
        "system_prompt": (
            "あなたは国会答弁の起案を支援します。以下の「資料」だけを根拠に、答弁にふさわしい丁寧な文体"
            "（「お答えいたします」等）で簡潔な答弁案を作成してください。根拠にした資料の番号を該当する文の末尾に"
            " [1] のように必ず示してください。資料にないことは推測せず「資料には該当"
            "する記載がありません」と述べてください。"
        ),
        "prompt_template": "# 質問\n{{question}}\n\n# 質問者・委員会\n{{asker}}",
        "fields": [
            {"name": "question", "label": "質問", "kind": "long_text", "options": [], "required": True},
            {"name": "asker", "label": "質問者・委員会", "kind": "text", "options": [], "required": False},
        ],
        "uses_workspace": True,
    },
]


def seed_builtin_apps(**_: Any) -> int:
    """Create or update the built-in apps (``post_migrate``); returns how many rows changed."""
    from .models import PlatformApp

    changed = 0
    for position, spec in enumerate(BUILTIN_APPS, start=1):
        defaults = {k: v for k, v in spec.items() if k != "key"}
        defaults.update(builtin=True, position=position)
        defaults.setdefault("uses_workspace", False)
        app, created = PlatformApp.objects.get_or_create(key=spec["key"], defaults=defaults)
        if created:
            changed += 1
            continue
        stale = {k: v for k, v in defaults.items() if getattr(app, k) != v}
        if stale:
            PlatformApp.objects.filter(pk=app.pk).update(**stale)
            changed += 1
    return changed


def kobun_prompt(*, text: str, findings: list[Finding], corrected: str) -> str:
    """The 校正 prompt: the text, the deterministic findings and the mechanically corrected text.

    The model only has to explain and polish: the findings are already certain, so a weak
    model still produces a useful answer, and the page shows them whatever the model says.
    """
    lines = []
    for i, f in enumerate(findings, start=1):
        fix = (
            f"「{f.original}」→「{f.suggestion}」"
            if f.suggestion is not None
            else f"「{f.original}」（要書き直し）"
        )
        lines.append(f"{i}. {fix} [{f.rule}] {f.message_ja}")
    listed = "\n".join(lines) if lines else "（機械的な点検では指摘はありませんでした）"
    return (
        f"次の文章を校正してください。\n\n# 文章\n{text}\n\n# 機械的な点検結果\n{listed}\n\n"
        f"# 点検結果を反映した文章\n{corrected}\n\n"
        "各指摘について修正理由を説明し、ほかに直すべき点があれば挙げ、最後に「## "
        "修正後の文章」として全文を示してください。"
    )
