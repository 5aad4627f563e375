"""Prompt-token counting when the upstream reports none (no database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.quotas import tokens


def test_estimate_counts_japanese_by_character_and_english_by_bytes() -> None:
    assert tokens.estimate_text_tokens("") == 0
    assert tokens.estimate_text_tokens("こんにちは、世界。") == 9  # one per CJK character
    assert tokens.estimate_text_tokens("hello world!") == 3  # 12 bytes / 4
    assert tokens.estimate_text_tokens("a") == 1  # rounded up, never 0
    assert tokens.estimate_text_tokens("東京 weather") == 2 + 2  # 2 kanji + ceil(8 bytes / 4)
    assert tokens.estimate_text_tokens("ｶﾀｶﾅＡＢ") == 6  # half/full-width forms count as CJK


def test_prompt_count_adds_message_framing_and_is_flagged_as_estimate() -> None:
    messages = [
        {"role": "system", "content": "簡潔に"},
        {"role": "user", "content": "hello world!"},
    ]
    count, estimated = tokens.count_prompt_tokens(messages=messages, model_name="unknown-model")
    assert estimated is True
    assert count == tokens.PER_PROMPT_TOKENS + 2 * tokens.PER_MESSAGE_TOKENS + 3 + 3


def test_non_empty_prompt_never_counts_zero() -> None:
    for content in ("", [], [{"type": "text", "text": ""}]):
        count, _ = tokens.count_prompt_tokens(
            messages=[{"role": "user", "content": content}], model_name=None
        )
        assert count > 0
    assert tokens.count_prompt_tokens(messages=[], model_name=None) == (0, False)


def test_content_parts_tool_calls_and_images() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "abcdefgh"},
                {"type": "image_url", "image_url": {"url": "data:..."}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
    ]
    count, _ = tokens.count_prompt_tokens(messages=messages, model_name=None)
    expected = tokens.PER_PROMPT_TOKENS + 2 * tokens.PER_MESSAGE_TOKENS + 2 + tokens.IMAGE_PART_TOKENS + 1 + 1
    assert count == expected


@pytest.fixture
def whitespace_tokenizer() -> Iterator[None]:
    tokens.register_tokenizer("ws-model", lambda text: len(text.split()))
    yield
    tokens.unregister_tokenizer("ws-model")


def test_registered_tokenizer_is_exact(whitespace_tokenizer: object) -> None:
    messages = [{"role": "user", "content": "one two three"}]
    count, estimated = tokens.count_prompt_tokens(messages=messages, model_name="ws-model")
    assert (count, estimated) == (tokens.PER_PROMPT_TOKENS + tokens.PER_MESSAGE_TOKENS + 3, False)
    assert tokens.count_input_tokens(inputs=["a b", "c"], model_name="ws-model") == (3, False)
    assert tokens.count_input_tokens(inputs=["abcd", "東京"], model_name="other") == (3, True)
