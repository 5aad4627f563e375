"""Parsing and validation of ``/v1`` request bodies (pure functions, no I/O)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from . import errors

MAX_BODY_BYTES = 1024 * 1024
MAX_EMBED_INPUTS = 2048

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Parameters forwarded to the upstream as given. Anything else is ignored (not
# forwarded): clients such as LangChain send harmless extras, and we only pass
# through what every OpenAI-compatible server understands.
PASSTHROUGH = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
)

_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_INTS: dict[str, tuple[int, int]] = {
    "max_tokens": (1, 1_000_000),
    "max_completion_tokens": (1, 1_000_000),
    "seed": (-(2**63), 2**63 - 1),
    "top_logprobs": (0, 20),
}


@dataclass
class ChatParams:
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


@dataclass
class EmbedParams:
    model: str
    inputs: list[str]
    encoding_format: str = "float"


def parse_json(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise errors.too_large(MAX_BODY_BYTES)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_json() from None
    if not isinstance(data, dict):
        raise errors.invalid_json()
    return data


def _bad(param: str, ja: str, en: str) -> errors.ApiError:
    return errors.invalid_param(param, ja, en)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise errors.invalid_param(
            "model",
            "model を指定してください。",
            "you must provide a model parameter.",
            code="missing_required_parameter",
        )
    return model.strip()


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad(
            "messages", "messages は空でない配列で指定してください。", "messages must be a non-empty array."
        )
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _bad(param, f"{param} はオブジェクトで指定してください。", f"{param} must be an object.")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(
                f"{param}.role",
                f"{param}.role が正しくありません。",
                f"{param}.role must be one of {', '.join(sorted(ROLES))}.",
            )
        content = message.get("content")
        may_be_empty = role == "assistant" and (message.get("tool_calls") or message.get("function_call"))
        if content is None and not may_be_empty:
            raise _bad(
                f"{param}.content",
                f"{param}.content を指定してください。",
                f"{param}.content is required.",
            )
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"{param}.content",
                f"{param}.content は文字列または配列で指定してください。",
                f"{param}.content must be a string or an array of content parts.",
            )
    return value


def _check_params(data: dict[str, Any]) -> dict[str, Any]:
    for name, (low, high) in _RANGES.items():
        value = data.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise _bad(
                name,
                f"{name} は {low}〜{high} の数値で指定してください。",
                f"{name} must be a number in [{low}, {high}].",
            )
    for name, (ilow, ihigh) in _INTS.items():
        value = data.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not ilow <= value <= ihigh
        ):
            raise _bad(
                name,
                f"{name} は {ilow} 以上の整数で指定してください。",
                f"{name} must be an integer >= {ilow}.",
            )
    n = data.get("n")
    if n is not None and (n != 1 or isinstance(n, bool)):
        raise _bad("n", "n は 1 のみ指定できます。", "only n=1 is supported.")
    stop = data.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise _bad(
            "stop",
            "stop は文字列または4つまでの文字列の配列で指定してください。",
            "stop must be a string or an array of up to 4 strings.",
        )
    for name, kind, ja_kind, en_kind in (
        ("response_format", dict, "オブジェクト", "an object"),
        ("tools", list, "配列", "an array"),
        ("logit_bias", dict, "オブジェクト", "an object"),
        ("user", str, "文字列", "a string"),
    ):
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise _bad(name, f"{name} は{ja_kind}で指定してください。", f"{name} must be {en_kind}.")
    tool_choice = data.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, str | dict):
        raise _bad(
            "tool_choice",
            "tool_choice は文字列またはオブジェクトで指定してください。",
            "tool_choice must be a string or an object.",
        )
    for name in ("parallel_tool_calls", "logprobs", "stream"):
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            raise _bad(name, f"{name} は true/false で指定してください。", f"{name} must be a boolean.")
    return {k: data[k] for k in PASSTHROUGH if data.get(k) is not None}


def chat_params(data: dict[str, Any]) -> ChatParams:
    model = _model(data)
    messages = _messages(data.get("messages"))
    params = _check_params(data)
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad(
            "stream_options",
            "stream_options はオブジェクトで指定してください。",
            "stream_options must be an object.",
        )
    user = params.get("user")
    return ChatParams(
        model=model,
        messages=messages,
        params=params,
        stream=bool(data.get("stream")),
        include_usage=bool((options or {}).get("include_usage")),
        user=user if isinstance(user, str) else None,
    )


def embed_params(data: dict[str, Any]) -> EmbedParams:
    model = _model(data)
    raw = data.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(inputs, list)
        or not inputs
        or len(inputs) > MAX_EMBED_INPUTS
        or not all(isinstance(text, str) and text for text in inputs)
    ):
        raise _bad(
            "input",
            f"input は空でない文字列、または{MAX_EMBED_INPUTS}件までの文字列の配列で"
            "指定してください（トークン配列は未対応）。",
            f"input must be a non-empty string or an array of up to {MAX_EMBED_INPUTS} strings "
            "(token arrays are not supported).",
        )
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad(
            "encoding_format",
            "encoding_format は float または base64 です。",
            "encoding_format must be 'float' or 'base64'.",
        )
    if data.get("dimensions") is not None:
        raise _bad(
            "dimensions", "dimensions は指定できません。", "dimensions is not supported by this deployment."
        )
    return EmbedParams(model=model, inputs=inputs, encoding_format=encoding)
