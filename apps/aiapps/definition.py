"""Validating an app definition (builder form and JSON import alike) and rendering its prompt.

A prompt uses ``{{name}}`` placeholders. The rule the builder enforces: every placeholder is a
declared field and every declared field is used, so a form never asks for something the model
never sees, and a prompt never sends a literal ``{{...}}``. Rendering substitutes the values
once, left to right: a value that itself contains ``{{x}}`` is never expanded again.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .models import AppKind, FieldKind, OutputFormat

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
MAX_FIELDS = 20
MAX_OPTIONS = 30
MAX_PROMPT_CHARS = 20_000
#: Longest value of one input field (typed, or the text extracted from a file).
MAX_INPUT_CHARS = 20_000
#: Longest prompt a template may render to: the template and every field at its longest, each
#: used once. A template that repeats a placeholder may not multiply a value past it.
MAX_RENDERED_CHARS = MAX_PROMPT_CHARS + MAX_FIELDS * MAX_INPUT_CHARS
MAX_TEXT_CHARS = {"name_ja": 100, "name_en": 100, "description_ja": 500, "description_en": 500}
#: The keys of a definition, as the builder form, the JSON export and the import use them.
DEFINITION_KEYS = (
    "name_ja",
    "name_en",
    "description_ja",
    "description_en",
    "system_prompt",
    "prompt_template",
    "fields",
    "output_format",
    "recommended_alias",
    "uses_workspace",
)


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template`` in order of first use (raw, not yet validated)."""
    seen: list[str] = []
    for match in PLACEHOLDER_RE.finditer(template or ""):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def rendered_length(template: str, values: dict[str, str]) -> int:
    """The length :func:`render_prompt` would produce, computed without building the string."""
    length = len(template)
    for match in PLACEHOLDER_RE.finditer(template):
        length += len(str(values.get(match.group(1), ""))) - len(match.group(0))
    return length


def render_prompt(template: str, values: dict[str, str], *, max_chars: int = MAX_RENDERED_CHARS) -> str:
    """``template`` with each ``{{name}}`` replaced by ``values[name]`` (one pass, no re-expansion).

    Security: a template may use a placeholder many times (20,000 characters of ``{{a}}`` are
    4,000 uses), so the output is measured first and refused (``ValidationError``) above
    ``max_chars``: one request can never make the process build, store or send a prompt of
    hundreds of millions of characters.
    """
    length = rendered_length(template, values)
    if length > max_chars:
        raise ValidationError(
            _("プロンプト全体が長すぎます（%(limit)s文字まで、現在%(count)s文字）。入力を短くしてください。")
            % {"limit": f"{max_chars:,}", "count": f"{length:,}"},
            code="prompt_too_long",
        )
    return PLACEHOLDER_RE.sub(lambda m: str(values.get(m.group(1), "")), template)


def _clean_field(raw: Any, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(_("%(n)s番目の入力項目の形式が正しくありません。") % {"n": index})
    name = str(raw.get("name", "")).strip()
    if not NAME_RE.match(name) or len(name) > 40:
        raise ValidationError(
            _("入力項目名「%(name)s」は半角英小文字・数字・_ で、英小文字か _ で始めてください。")
            % {"name": name}
        )
    kind = str(raw.get("kind", FieldKind.TEXT))
    if kind not in FieldKind.values:
        raise ValidationError(_("入力項目「%(name)s」の種類が正しくありません。") % {"name": name})
    label = str(raw.get("label", "")).strip()[:100] or name
    options: list[str] = []
    if kind == FieldKind.CHOICE:
        raw_options = raw.get("options") or []
        if isinstance(raw_options, str):
            raw_options = raw_options.split(",")
        if not isinstance(raw_options, list):
            raise ValidationError(_("入力項目「%(name)s」の選択肢が正しくありません。") % {"name": name})
        options = [str(o).strip()[:200] for o in raw_options if str(o).strip()]
        if not options or len(options) > MAX_OPTIONS:
            raise ValidationError(
                _("選択肢の入力項目「%(name)s」には選択肢を1〜%(max)s個指定してください。")
                % {"name": name, "max": MAX_OPTIONS}
            )
    return {
        "name": name,
        "label": label,
        "kind": kind,
        "options": options,
        "required": bool(raw.get("required", True)),
    }


def clean_definition(data: dict[str, Any], *, kind: str = AppKind.PROMPT) -> dict[str, Any]:
    """A validated definition from builder/import ``data`` (unknown keys and ids are ignored).

    Raises ``ValidationError`` with every problem found (messages in the active language).
    """
    errors: list[str] = []
    out: dict[str, Any] = {}
    for key, limit in MAX_TEXT_CHARS.items():
        value = str(data.get(key) or "").strip()
        if len(value) > limit:
            errors.append(_("%(key)s は%(limit)s文字以内にしてください。") % {"key": key, "limit": limit})
        out[key] = value[:limit]
    if not out["name_ja"]:
        errors.append(_("名前（日本語）を入力してください。"))
    for key in ("system_prompt", "prompt_template"):
        value = str(data.get(key) or "")
        if len(value) > MAX_PROMPT_CHARS:
            errors.append(_("プロンプトは%(limit)s文字以内にしてください。") % {"limit": MAX_PROMPT_CHARS})
        out[key] = value[:MAX_PROMPT_CHARS]
    if not out["prompt_template"].strip():
        errors.append(_("プロンプトを入力してください。"))
    raw_fields = data.get("fields") or []
    fields: list[dict[str, Any]] = []
    if not isinstance(raw_fields, list) or len(raw_fields) > MAX_FIELDS:
        errors.append(_("入力項目は%(max)s個までです。") % {"max": MAX_FIELDS})
        raw_fields = []
    for i, raw in enumerate(raw_fields, start=1):
        try:
            fields.append(_clean_field(raw, i))
        except ValidationError as exc:
            errors.extend(exc.messages)
    names = [f["name"] for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        errors.append(_("入力項目名が重複しています: %(names)s") % {"names": ", ".join(duplicates)})
    used = placeholders(out["prompt_template"])
    bad = [u for u in used if not NAME_RE.match(u)]
    if bad:
        errors.append(
            _("プロンプトの変数名が正しくありません: %(names)s（半角英小文字・数字・_）")
            % {"names": ", ".join("{{" + b + "}}" for b in bad)}
        )
    undeclared = [u for u in used if NAME_RE.match(u) and u not in names]
    if undeclared:
        errors.append(
            _("プロンプトの変数 %(names)s に対応する入力項目がありません。")
            % {"names": ", ".join("{{" + u + "}}" for u in undeclared)}
        )
    unused = [n for n in names if n not in used]
    if unused:
        errors.append(_("入力項目 %(names)s がプロンプトで使われていません。") % {"names": ", ".join(unused)})
    if placeholders(out["system_prompt"]):
        errors.append(_("システムプロンプトには変数を使えません（プロンプトに書いてください）。"))
    output_format = str(data.get("output_format") or OutputFormat.MARKDOWN)
    if output_format not in OutputFormat.values:
        errors.append(_("出力形式が正しくありません。"))
    out["output_format"] = output_format
    out["recommended_alias"] = str(data.get("recommended_alias") or "").strip()[:100]
    out["uses_workspace"] = bool(data.get("uses_workspace"))
    out["fields"] = fields
    if kind == AppKind.KOBUN and "text" not in names:
        errors.append(_("校正アプリには text という入力項目が必要です。"))
    if errors:
        raise ValidationError(errors)
    return out
