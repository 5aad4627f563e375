"""Model answers as safe HTML: Markdown (markdown-it-py) then an allowlist sanitiser (nh3).

Security: model output is untrusted. Raw HTML in the Markdown is escaped by the
parser (``html: False``) and the result is sanitised again with a tag/attribute
allowlist, so neither the model nor a prompt-injected document can place markup,
scripts, event handlers, images (which would fetch external URLs) or
``javascript:`` links on the page. Links get ``rel="noopener noreferrer"``.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "s", "del", "code", "pre", "kbd", "blockquote",
    "ul", "ol", "li", "a", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
# The page has its own <h1>/<h2>: answer headings start at <h3>.
HEADING_SHIFT = 2


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )


def _shift_headings(tokens: list[Token]) -> None:
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            level = min(int(token.tag[1]) + HEADING_SHIFT, 6)
            token.tag = f"h{level}"


def render_markdown(text: str) -> str:
    """Safe HTML for ``text`` (may be partial: an interrupted answer renders as far as it got)."""
    if not text:
        return ""
    parser = _parser()
    tokens = parser.parse(text)
    _shift_headings(tokens)
    html = parser.renderer.render(tokens, parser.options, {})
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
