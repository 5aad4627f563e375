"""OCR of scanned PDF pages with Tesseract's Japanese model (Debian ``tesseract-ocr-jpn``).

Used only for PDF pages without a text layer. The page is rendered by pdfium at
``OCR_DPI`` and piped to the ``tesseract`` command (no shell, no temporary
files, a timeout per page). When the command or its ``jpn`` model is missing,
:func:`ocr_available` is false and such pages are reported as skipped instead.

Tesseract's TSV output gives a box per recognised word; the page text is rebuilt
from those words (spaces only between words that are not both Japanese, a line
break per line, a blank line per block) and every character gets its word's box
split evenly along the line, converted to PDF points. So a citation on a scanned
page is highlighted on the page image like one on a text page.
"""

from __future__ import annotations

import functools
import io
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field

OCR_DPI = 300
# Pixels of one page rendered for Tesseract, at most (A2 at 300 dpi is ≈35 M; A4 ≈8.7 M).
OCR_MAX_PIXELS = 40_000_000
OCR_TIMEOUT_SECONDS = 120
# Tesseract splits Japanese into many "words": no space is put back between two Japanese characters.
_CJK = r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff01-\uff9f]"


_CJK_CHAR = re.compile(_CJK)

Box = list[float]  # [left, bottom, right, top] in PDF points, origin bottom-left


@dataclass
class OcrPage:
    """The text Tesseract read on one page and, per character of ``text``, its box
    (``None`` for the spaces and line breaks the rebuild inserted)."""

    text: str
    boxes: list[Box | None] = field(default_factory=list)


@functools.cache
def ocr_available() -> bool:
    """Whether ``tesseract`` with the ``jpn`` model is installed (checked once per process)."""
    command = shutil.which("tesseract")
    if not command:
        return False
    try:
        listed = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [command, "--list-langs"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "jpn" in listed.stdout.split()


def bounded_scale(width_points: float, height_points: float, *, scale: float, max_pixels: int) -> float:
    """``scale``, lowered where needed so a page of this size renders to at most ``max_pixels``.

    Security: a PDF declares its own page size, and pdfium renders whatever it
    declares (a 14,400-point page at 300 dpi is 60,000 × 60,000 pixels): every
    render of an uploaded page goes through this bound.
    """
    width, height = max(float(width_points), 1.0), max(float(height_points), 1.0)
    if (width * scale + 1) * (height * scale + 1) <= max_pixels:
        return scale
    # The s with (width·s + 1)(height·s + 1) = max_pixels: a pixel rounded up on each side still fits.
    area, sides = width * height, width + height
    return (math.sqrt(sides * sides + 4 * area * (max_pixels - 1)) - sides) / (2 * area)


def ocr_pdf_page(data: bytes, *, page_number: int) -> OcrPage:
    """What Tesseract reads on page ``page_number`` (1-based) of the PDF ``data``, with boxes.

    Rendered at :data:`OCR_DPI`, or lower for a page so large that it would
    exceed :data:`OCR_MAX_PIXELS` (:func:`bounded_scale`); Tesseract and the
    boxes are told the resolution actually used.
    """
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        page = pdf[page_number - 1]
        height_points = float(page.get_height())
        scale = bounded_scale(page.get_width(), height_points, scale=OCR_DPI / 72, max_pixels=OCR_MAX_PIXELS)
        image = page.render(scale=scale).to_pil().convert("L")
        page.close()
    finally:
        pdf.close()
    dpi = scale * 72
    png = io.BytesIO()
    image.save(png, format="PNG")
    command = shutil.which("tesseract") or "tesseract"
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell, image on stdin
        [command, "stdin", "stdout", "-l", "jpn+eng", "--dpi", str(max(1, round(dpi))), "tsv"],
        input=png.getvalue(),
        capture_output=True,
        timeout=OCR_TIMEOUT_SECONDS,
        check=True,
    )
    return page_from_tsv(result.stdout.decode("utf-8", "replace"), height_points=height_points, dpi=dpi)


def page_from_tsv(tsv: str, *, height_points: float, dpi: float = OCR_DPI) -> OcrPage:
    """Rebuild the page text and per-character boxes from Tesseract's TSV output.

    Columns: level, page_num, block_num, par_num, line_num, word_num, left, top,
    width, height, conf, text; word rows (level 5) carry the text, in reading order.
    """
    scale = 72.0 / dpi
    chars: list[str] = []
    boxes: list[Box | None] = []
    previous_line: tuple[str, str, str] | None = None
    previous_block = ""
    for row in tsv.splitlines()[1:]:
        columns = row.split("\t")
        if len(columns) < 12 or columns[0] != "5":
            continue
        word = columns[11].strip()
        if not word:
            continue
        try:
            left, top, width, height = (int(v) for v in columns[6:10])
        except ValueError:
            continue
        line = (columns[2], columns[3], columns[4])
        if chars:
            if columns[2] != previous_block:
                separator = "\n\n"
            elif line != previous_line:
                separator = "\n"
            elif _CJK_CHAR.fullmatch(chars[-1]) and _CJK_CHAR.fullmatch(word[0]):
                separator = ""
            else:
                separator = " "
            chars.extend(separator)
            boxes.extend([None] * len(separator))
        previous_line, previous_block = line, columns[2]
        step = width / len(word)
        bottom = height_points - (top + height) * scale
        top_points = height_points - top * scale
        for k, ch in enumerate(word):
            chars.append(ch)
            x0 = (left + k * step) * scale
            boxes.append([round(x0, 1), round(bottom, 1), round(x0 + step * scale, 1), round(top_points, 1)])
    return OcrPage(text="".join(chars), boxes=boxes)
