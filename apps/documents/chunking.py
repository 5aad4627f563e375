"""Normalised full text and Japanese-aware chunks with exact positions.

:func:`assemble` turns parsed pages into one normalised text (pages separated by
an empty line, blocks by a line break), remembering where each page starts and
which lines are headings. :func:`chunk_text` cuts that text into chunks:

* units are sentences (ending in 。！？!? or a line break) and are never split
  unless one alone is longer than a chunk;
* a heading starts a new chunk, and every chunk carries its section's heading;
* chunks grow to ``target_tokens`` (estimated: one token per CJK character,
  one per four other characters) and the next chunk repeats up to
  ``overlap_tokens`` of whole sentences from the end of the previous one;
* ``text[char_start:char_end]`` of the normalised text is exactly the chunk, and
  its page range comes from the page offsets.

Everything is deterministic: the same file yields the same chunks, so a re-run
replaces them one for one.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field

from .normalize import normalize_with_map
from .parsers import Parsed

TARGET_TOKENS = 400
OVERLAP_TOKENS = 60
# Lines that look like headings in text without markup (PDF, plain text).
_HEADING_LINE = re.compile(
    r"^(第[0-9０-９一二三四五六七八九十百千]+[編章節款条項]|[0-9]{1,2}(\.[0-9]{1,2}){0,3}[.\s]\s*\S|[■□◆◇●【])"
)
_UNIT = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+[」』）)]*|\n|$)")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def estimate_tokens(text: str) -> int:
    """Rough token count: CJK characters one each, other characters four to a token."""
    cjk = len(_CJK.findall(text))
    other = len(text) - cjk - text.count(" ") - text.count("\n")
    return cjk + max(0, (other + 3) // 4)


@dataclass
class Assembled:
    text: str
    page_offsets: list[int]  # page_offsets[i]: where page i+1 starts; [] without pages
    page_numbers: list[int]  # the page number of each entry of page_offsets
    headings: list[tuple[int, int]]  # (start, end) of heading lines
    # PDF: page number → (start of the page in text, index in pdfium's raw page text of each character)
    origins: dict[int, tuple[int, list[int]]] = field(default_factory=dict)
    scanned_pages: list[int] = field(default_factory=list)


def assemble(parsed: Parsed) -> Assembled:
    parts: list[str] = []
    offsets: list[int] = []
    numbers: list[int] = []
    headings: list[tuple[int, int]] = []
    origins: dict[int, tuple[int, list[int]]] = {}
    scanned: list[int] = []
    position = 0
    for page in parsed.pages:
        if page.scanned:
            scanned.append(page.number)
        page_parts: list[str] = []
        page_start = position + (2 if parts else 0)
        cursor = page_start
        for block in page.blocks:
            text, origin = normalize_with_map(block.text)
            if not text:
                continue
            if page_parts:
                cursor += 1  # the "\n" between blocks
            if page.raw is not None:
                origins[page.number] = (cursor, origin)
            if block.heading:
                headings.append((cursor, cursor + len(text.split("\n", 1)[0])))
            else:
                line_start = cursor
                for line in text.split("\n"):
                    if line and len(line) <= 60 and _HEADING_LINE.match(line):
                        headings.append((line_start, line_start + len(line)))
                    line_start += len(line) + 1
            page_parts.append(text)
            cursor += len(text)
        if not page_parts and page.number == 0:
            continue
        if parts:
            parts.append("\n\n")
        if page.number:
            offsets.append(page_start)
            numbers.append(page.number)
        page_text = "\n".join(page_parts)
        parts.append(page_text)
        position = page_start + len(page_text)
    return Assembled(
        text="".join(parts),
        page_offsets=offsets,
        page_numbers=numbers,
        headings=headings,
        origins=origins,
        scanned_pages=scanned,
    )


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    text: str
    char_start: int
    char_end: int
    page_start: int
    page_end: int
    heading: str
    token_count: int


def _units(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans inside ``text[start:end]``, trailing whitespace excluded, empty ones dropped."""
    spans = []
    for match in _UNIT.finditer(text, start, end):
        s, e = match.start(), match.end()
        while e > s and text[e - 1].isspace():
            e -= 1
        while s < e and text[s].isspace():
            s += 1
        if e > s:
            spans.append((s, e))
    return spans


def _split_long(span: tuple[int, int], text: str, target: int) -> list[tuple[int, int]]:
    """A sentence longer than a chunk, in pieces of about ``target`` tokens."""
    s, e = span
    pieces = []
    while s < e:
        cut = s
        tokens = 0
        while cut < e and tokens < target:
            tokens += estimate_tokens(text[cut : cut + 50])
            cut += 50
        cut = min(cut, e)
        pieces.append((s, cut))
        s = cut
    return pieces


def chunk_text(
    assembled: Assembled, *, target_tokens: int = TARGET_TOKENS, overlap_tokens: int = OVERLAP_TOKENS
) -> list[TextChunk]:
    text = assembled.text
    boundaries = sorted({0, *(s for s, _ in assembled.headings), len(text)})
    heading_at = {s: text[s:e] for s, e in assembled.headings}
    chunks: list[TextChunk] = []
    for section_start, section_end in itertools.pairwise(boundaries):
        heading = heading_at.get(section_start, "")
        if not heading and chunks:
            heading = chunks[-1].heading
        units: list[tuple[int, int]] = []
        for unit in _units(text, section_start, section_end):
            if estimate_tokens(text[unit[0] : unit[1]]) > target_tokens:
                units.extend(_split_long(unit, text, target_tokens))
            else:
                units.append(unit)
        index = 0
        while index < len(units):
            first = index
            tokens = 0
            while index < len(units):
                size = estimate_tokens(text[units[index][0] : units[index][1]])
                if index > first and tokens + size > target_tokens:
                    break
                tokens += size
                index += 1
            start, end = units[first][0], units[index - 1][1]
            chunks.append(_make(assembled, len(chunks), start, end, heading))
            if index >= len(units):
                break
            # Overlap: step back over whole sentences worth at most overlap_tokens.
            back = index
            carried = 0
            while back - 1 > first:
                size = estimate_tokens(text[units[back - 1][0] : units[back - 1][1]])
                if carried + size > overlap_tokens:
                    break
                carried += size
                back -= 1
            index = back
    return chunks


def _page_of(assembled: Assembled, offset: int) -> int:
    if not assembled.page_offsets:
        return 0
    position = bisect.bisect_right(assembled.page_offsets, offset) - 1
    return assembled.page_numbers[max(position, 0)]


def _make(assembled: Assembled, ordinal: int, start: int, end: int, heading: str) -> TextChunk:
    body = assembled.text[start:end]
    return TextChunk(
        ordinal=ordinal,
        text=body,
        char_start=start,
        char_end=end,
        page_start=_page_of(assembled, start),
        page_end=_page_of(assembled, max(start, end - 1)),
        heading=heading[:500],
        token_count=estimate_tokens(body),
    )


def raw_indices_by_page(assembled: Assembled, start: int, end: int) -> dict[int, list[int]]:
    """PDF: for the normalised span ``[start, end)``, pdfium's character indices per page."""
    found: dict[int, list[int]] = {}
    for number, (page_start, origin) in assembled.origins.items():
        lo, hi = max(start, page_start), min(end, page_start + len(origin))
        if lo < hi:
            found[number] = [origin[i - page_start] for i in range(lo, hi)]
    return found
