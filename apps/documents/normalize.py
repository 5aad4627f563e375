"""Text normalisation that remembers where each character came from.

NFKC (full-width ASCII → half-width, half-width kana → full-width, ideographic
space → space) and whitespace folding, character by character, so that every
character of the result maps back to a character of the input. The PDF parser
uses the map to find the character boxes of a chunk; everything else ignores it.
Normalising per character (not per string) keeps the map exact; the only
difference from whole-string NFKC would be a base character followed by a
combining mark, which is composed here explicitly.
"""

from __future__ import annotations

import unicodedata

_SPACES = {" ", "\t", "\u3000", "\xa0", "\u200b", "\ufeff", "\f", "\v"}


def normalize_with_map(raw: str) -> tuple[str, list[int]]:
    """``(text, origin)``: ``origin[i]`` is the index in ``raw`` that produced ``text[i]``.

    Rules: NFKC; ``\\r\\n`` and ``\\r`` become ``\\n``; runs of spaces become one
    space; spaces at line ends and line starts are dropped; more than one empty
    line becomes one; leading and trailing whitespace is dropped.
    """
    out: list[str] = []
    origin: list[int] = []
    pending_space = -1  # index in raw of a space not yet written
    newlines = 0
    pending_newline = -1
    for i, ch in enumerate(raw):
        if ch == "\r":
            if i + 1 < len(raw) and raw[i + 1] == "\n":
                continue
            ch = "\n"
        if ch == "\n":
            if out:
                newlines += 1
                if pending_newline < 0:
                    pending_newline = i
            pending_space = -1
            continue
        if ch in _SPACES or (ch.isspace()):
            if out and newlines == 0 and pending_space < 0:
                pending_space = i
            continue
        normal = unicodedata.normalize("NFKC", ch)
        if not normal.strip():
            if out and newlines == 0 and pending_space < 0:
                pending_space = i
            continue
        if newlines:
            for _ in range(min(newlines, 2)):
                out.append("\n")
                origin.append(pending_newline)
            newlines = 0
            pending_newline = -1
        elif pending_space >= 0:
            out.append(" ")
            origin.append(pending_space)
        pending_space = -1
        for piece in normal:
            if out and unicodedata.combining(piece):
                # Half-width kana + sound mark (ｶﾞ): compose, keep the base's origin.
                composed = unicodedata.normalize("NFC", out[-1] + piece)
                if len(composed) == 1:
                    out[-1] = composed
                    continue
            out.append(piece)
            origin.append(i)
    return "".join(out), origin


def normalize(raw: str) -> str:
    """The normalised text of ``raw`` (see :func:`normalize_with_map`)."""
    return normalize_with_map(raw)[0]
