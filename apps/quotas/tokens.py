"""Prompt-token counts for usage records when the upstream does not report them.

Some servers (llama.cpp, vendor gateways that ignore ``stream_options``) send no
``usage`` at all, and recording ``prompt_tokens=0`` for a non-empty prompt would
make every quota and dashboard lie. So the platform counts the prompt itself:

* with the model's real tokenizer when one is registered for the model's name
  (:func:`register_tokenizer`; exact, ``estimated=False``), else
* with an estimate, flagged as such (``estimated=True``) and stored in
  ``UsageRecord.prompt_tokens_estimated`` so reports can tell the two apart.

The estimate (no I/O, no dependencies, ≈1 µs per 100 characters):

* every CJK character (kanji, hiragana, katakana, full-width forms, Hangul)
  counts as **one token**. Japanese-trained tokenizers (LLM-jp, Swallow, ELYZA,
  Sarashina) produce ≈0.6–0.9 tokens per Japanese character, Llama/Qwen-family
  ones ≈1.0–1.5, so one per character is the middle of the range and never
  far below it;
* everything else counts **one token per 4 UTF-8 bytes**, rounded up (the usual
  rule for English and code with BPE tokenizers: ≈4 characters per token);
* each message adds **4 tokens** of chat-template framing (role and separators)
  and the prompt adds **3** for the assistant turn's start, as in OpenAI's own
  counting guide; image parts count **85 tokens** each (OpenAI's low-detail cost).

The estimate is never 0 for a non-empty prompt. It is not billing-grade: it is
there so that a model that reports nothing still shows a plausible, visibly
flagged number instead of zero.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

PER_MESSAGE_TOKENS = 4
PER_PROMPT_TOKENS = 3
IMAGE_PART_TOKENS = 85
BYTES_PER_TOKEN = 4

# CJK ideographs (incl. extension A and compatibility), kana, half/full-width forms,
# CJK punctuation and Hangul: scripts where one character is about one token.
_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)

Tokenizer = Callable[[str], int]
"""A function returning the exact number of tokens of a text for one model."""

_tokenizers: dict[str, Tokenizer] = {}
_lock = threading.Lock()


def register_tokenizer(model_name: str, tokenizer: Tokenizer) -> None:
    """Use ``tokenizer`` (text → token count) for ``model_name`` from now on (exact counts)."""
    with _lock:
        _tokenizers[model_name] = tokenizer


def unregister_tokenizer(model_name: str) -> None:
    with _lock:
        _tokenizers.pop(model_name, None)


def estimate_text_tokens(text: str) -> int:
    """The estimate for one text: CJK characters one each, the rest one per 4 UTF-8 bytes."""
    if not text:
        return 0
    rest, cjk = _CJK.subn("", text)
    return cjk + math.ceil(len(rest.encode()) / BYTES_PER_TOKEN)


def _texts(content: Any) -> Iterable[str | None]:
    """The texts of a message's content; ``None`` stands for an image part."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("image_url", "input_image", "image"):
                yield None
            elif isinstance(part.get("text"), str):
                yield part["text"]


def _message_texts(message: dict[str, Any]) -> Iterable[str | None]:
    yield from _texts(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = (call or {}).get("function") or {}
        yield str(function.get("name") or "")
        yield str(function.get("arguments") or "")
    name = message.get("name")
    if isinstance(name, str):
        yield name


#: Fields of a chat request, besides ``messages``, that reach the model as prompt text (tool
#: names, descriptions and schemas; a structured-output schema). ``/v1`` forwards them.
PROMPT_FIELDS = ("tools", "tool_choice", "response_format")


def prompt_fields(params: Mapping[str, Any]) -> list[Any]:
    """The :data:`PROMPT_FIELDS` a request carries, for :func:`count_prompt_tokens`'s ``extra``.

    Security: they are prompt the model reads (a body may hold a megabyte of them), so they
    count towards the reservation and the ledger like the messages do; leaving them out let
    a caller hide a long prompt in a tool description and be charged for a greeting.
    """
    return [params[name] for name in PROMPT_FIELDS if params.get(name) is not None]


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def count_prompt_tokens(
    *, messages: list[dict[str, Any]], model_name: str | None, extra: Iterable[Any] = ()
) -> tuple[int, bool]:
    """``(tokens, estimated)`` for a chat prompt; ``estimated`` is False only with a real tokenizer.

    ``model_name`` is the registry's model name (``DeploymentInfo.model_name``).
    ``extra``: the request's other prompt fields (:func:`prompt_fields`), counted as their
    JSON text. A non-empty list of messages never counts as 0.
    """
    if not messages:
        return 0, False
    tokenizer = _tokenizers.get(model_name or "")
    count = PER_PROMPT_TOKENS
    for message in messages:
        if not isinstance(message, dict):
            continue
        count += PER_MESSAGE_TOKENS
        for text in _message_texts(message):
            if text is None:
                count += IMAGE_PART_TOKENS
            elif tokenizer is not None:
                count += int(tokenizer(text))
            else:
                count += estimate_text_tokens(text)
    for value in extra:
        text = _field_text(value)
        count += int(tokenizer(text)) if tokenizer is not None else estimate_text_tokens(text)
    return count, tokenizer is None


def count_input_tokens(*, inputs: list[str], model_name: str | None) -> tuple[int, bool]:
    """``(tokens, estimated)`` for embedding inputs (no chat framing)."""
    tokenizer = _tokenizers.get(model_name or "")
    if tokenizer is not None:
        return sum(int(tokenizer(text)) for text in inputs), False
    return sum(max(estimate_text_tokens(text), 1) for text in inputs if text), True
