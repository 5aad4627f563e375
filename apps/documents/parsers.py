"""Parsers: bytes of one detected type → pages of text blocks.

Contract (every parser MUST):

* take the file's bytes and return a :class:`Parsed` whose pages are in order,
  numbered from 1 for paged formats (PDF pages, PPTX slides, XLSX sheets) and
  0 for flowing formats (DOCX, HTML, text);
* keep tables readable as text: one row per line, cells separated by `` | ``;
* mark headings (``Block.heading``) where the format says so, so the chunker can
  start a new chunk there;
* raise :class:`ParseError` with a reason in Japanese and English for files it
  cannot read (corrupt, encrypted, over the page limit), never a library error;
* never fetch anything over the network, run macros or follow external links.

PDF pages also return, per page, the raw text and the character boxes, so the
boxes of any chunk can be computed from its offsets (:func:`pdf_boxes`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from django.conf import settings

from .detect import FileType, Rejection, check_zip, decode_text

MIN_PAGE_TEXT_CHARS = 5  # fewer non-space characters than this: a scanned (image-only) page


class ParseError(Rejection):
    """The file was accepted but cannot be read (corrupt, encrypted, too many pages)."""


@dataclass
class Block:
    text: str
    heading: bool = False


@dataclass
class Page:
    number: int  # 1-based; 0 for formats without pages
    blocks: list[Block] = field(default_factory=list)
    # PDF only: pdfium's raw text of the page (one entry per text-page character).
    raw: str | None = None
    scanned: bool = False


@dataclass
class Parsed:
    pages: list[Page]
    page_count: int = 0


# --- PDF -------------------------------------------------------------------------


def parse_pdf(data: bytes) -> Parsed:
    pdf = _open_pdf(data)
    try:
        count = len(pdf)
        _check_pages(count)
        pages: list[Page] = []
        for index in range(count):
            page = pdf[index]
            textpage = page.get_textpage()
            raw = textpage.get_text_range() if textpage.count_chars() else ""
            scanned = len(re.sub(r"\s", "", raw)) < MIN_PAGE_TEXT_CHARS
            pages.append(Page(number=index + 1, blocks=[Block(raw)], raw=raw, scanned=scanned))
            textpage.close()
            page.close()
        return Parsed(pages=pages, page_count=count)
    finally:
        pdf.close()


def parse_pdf_page_count(data: bytes) -> int:
    """Open the PDF and count its pages (raises :class:`ParseError` like :func:`parse_pdf`)."""
    pdf = _open_pdf(data)
    try:
        count = len(pdf)
        _check_pages(count)
        return count
    finally:
        pdf.close()


def _open_pdf(data: bytes) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc).lower()
        if "password" in message:
            raise ParseError(
                "encrypted",
                "パスワードで保護された PDF は読み込めません。保護を解除してからアップロードしてください。",
                "Password-protected PDFs cannot be read. Remove the protection and upload again.",
            ) from exc
        raise ParseError(
            "corrupt", "PDF が壊れているため読み込めません。", "The PDF is corrupt and cannot be read."
        ) from exc


def pdf_chunk_boxes(
    data: bytes,
    requests: list[dict[int, list[int]]],
    *,
    ocr_boxes: dict[int, list[Any]] | None = None,
) -> list[dict[str, list[list[float]]]]:
    """For each chunk (page number → pdfium character indices), its line boxes per page.

    Boxes are ``[x0, y0, x1, y1]`` in PDF points (origin bottom-left), one per
    line: characters merge left to right until the baseline moves by more than
    half a character height. The PDF is opened once for all chunks. Pages in
    ``ocr_boxes`` (scanned pages) take each character's box from that list
    (indices into the OCR text, ``None`` for inserted spaces) instead of pdfium.
    """
    ocr_boxes = ocr_boxes or {}
    pdf = _open_pdf(data)
    textpages: dict[int, Any] = {}
    try:
        found: list[dict[str, list[list[float]]]] = []
        for request in requests:
            boxes: dict[str, list[list[float]]] = {}
            for number, indices in sorted(request.items()):
                if number in ocr_boxes:
                    page_boxes = ocr_boxes[number]
                    picked = (page_boxes[i] for i in sorted(set(indices)) if 0 <= i < len(page_boxes))
                    merged = _merge_boxes(box for box in picked if box)
                    if merged:
                        boxes[str(number)] = merged
                    continue
                if number not in textpages:
                    textpages[number] = pdf[number - 1].get_textpage()
                textpage = textpages[number]
                limit = textpage.count_chars()
                merged = _merge_boxes(textpage.get_charbox(i) for i in sorted(set(indices)) if 0 <= i < limit)
                if merged:
                    boxes[str(number)] = merged
            found.append(boxes)
        return found
    finally:
        for textpage in textpages.values():
            textpage.close()
        pdf.close()


def _merge_boxes(boxes: Any) -> list[list[float]]:
    lines: list[list[float]] = []
    for left, bottom, right, top in boxes:
        if right - left <= 0 or top - bottom <= 0:
            continue  # generated characters (line breaks) have no box
        if lines:
            x0, y0, x1, y1 = lines[-1]
            height = max(y1 - y0, top - bottom)
            if abs((bottom + top) / 2 - (y0 + y1) / 2) <= height / 2 and left >= x0 - 1:
                lines[-1] = [min(x0, left), min(y0, bottom), max(x1, right), max(y1, top)]
                continue
        lines.append([left, bottom, right, top])
    return [[round(v, 1) for v in box] for box in lines]


# --- Office ----------------------------------------------------------------------


def _check_pages(count: int) -> None:
    if count > settings.GENNAI_DOCUMENT_MAX_PAGES:
        raise ParseError(
            "too_many_pages",
            f"ページ数が上限（{settings.GENNAI_DOCUMENT_MAX_PAGES}）を超えています（{count} ページ）。",
            f"Too many pages: {count} (limit {settings.GENNAI_DOCUMENT_MAX_PAGES}).",
        )


def _corrupt(kind: str) -> ParseError:
    return ParseError(
        "corrupt", f"{kind} ファイルが壊れているため読み込めません。", f"The {kind} file is corrupt."
    )


def _row_text(cells: list[Any]) -> str:
    values = ["" if c is None else str(c).strip() for c in cells]
    while values and not values[-1]:
        values.pop()
    return " | ".join(values)


def parse_docx(data: bytes) -> Parsed:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise _corrupt("Word") from exc
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            heading = style.lower().startswith(("heading", "title")) or style.startswith("見出し")
            blocks.append(Block(text, heading=heading))
        elif isinstance(item, Table):
            rows = [_row_text([cell.text for cell in row.cells]) for row in item.rows]
            table = "\n".join(r for r in rows if r)
            if table:
                blocks.append(Block(table))
    return Parsed(pages=[Page(number=0, blocks=blocks)], page_count=0)


def parse_xlsx(data: bytes) -> Parsed:
    import openpyxl

    check_zip(data)
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise _corrupt("Excel") from exc
    try:
        _check_pages(len(workbook.sheetnames))
        pages = []
        for number, sheet in enumerate(workbook.worksheets, start=1):
            rows = [_row_text(list(row)) for row in sheet.iter_rows(values_only=True)]
            body = "\n".join(r for r in rows if r)
            blocks = [Block(sheet.title, heading=True)]
            if body:
                blocks.append(Block(body))
            pages.append(Page(number=number, blocks=blocks))
        return Parsed(pages=pages, page_count=len(pages))
    finally:
        workbook.close()


def parse_pptx(data: bytes) -> Parsed:
    import pptx

    check_zip(data)
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:
        raise _corrupt("PowerPoint") from exc
    slides = list(presentation.slides)
    _check_pages(len(slides))
    pages = []
    for number, slide in enumerate(slides, start=1):
        blocks: list[Block] = []
        title_shape = slide.shapes.title
        for shape in slide.shapes:
            if shape.has_text_frame:
                text = shape.text_frame.text.strip()
                if text:
                    blocks.append(Block(text, heading=shape is title_shape or shape == title_shape))
            elif getattr(shape, "has_table", False) and shape.has_table:
                rows = [_row_text([cell.text for cell in row.cells]) for row in shape.table.rows]
                blocks.append(Block("\n".join(r for r in rows if r)))
        if slide.has_notes_slide:
            notes = (
                slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            )
            if notes:
                blocks.append(Block(notes))
        pages.append(Page(number=number, blocks=blocks))
    return Parsed(pages=pages, page_count=len(pages))


# --- HTML and text ------------------------------------------------------------------

_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "li",
    "tr",
    "br",
    "table",
    "ul",
    "ol",
    "pre",
    "blockquote",
    "dd",
    "dt",
}
_HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "title"}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


class _HTMLText(HTMLParser):
    """Visible text of an HTML page as blocks; scripts, styles and markup dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._buffer: list[str] = []
        self._skip = 0
        self._heading = 0
        self._cells: list[str] | None = None

    def _flush(self, heading: bool = False) -> None:
        text = "".join(self._buffer).strip()
        self._buffer = []
        if text:
            self.blocks.append(Block(re.sub(r"\s+", " ", text), heading=heading))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS and tag != "head":
            self._skip += 1
        elif tag in _HEADING_TAGS:
            self._flush()
            self._heading += 1
        elif tag == "tr":
            self._flush()
            self._cells = []
        elif tag in ("td", "th") and self._cells is not None:
            self._flush_cell()
        elif tag in _BLOCK_TAGS:
            self._flush()

    def _flush_cell(self) -> None:
        if self._cells is not None:
            text = re.sub(r"\s+", " ", "".join(self._buffer)).strip()
            self._buffer = []
            if text:
                self._cells.append(text)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and tag != "head":
            self._skip = max(0, self._skip - 1)
        elif tag in _HEADING_TAGS:
            self._flush(heading=tag != "title" or not self.blocks)
            self._heading = max(0, self._heading - 1)
        elif tag in ("td", "th"):
            self._flush_cell()
        elif tag == "tr" and self._cells is not None:
            self._flush_cell()
            if self._cells:
                self.blocks.append(Block(" | ".join(self._cells)))
            self._cells = None
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buffer.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def parse_html(data: bytes) -> Parsed:
    text = decode_text(data) or data.decode("utf-8", "replace")
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return Parsed(pages=[Page(number=0, blocks=parser.blocks)])


_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")


def parse_text(data: bytes) -> Parsed:
    text = decode_text(data)
    if text is None:
        raise ParseError(
            "encoding", "文字コードを判別できません。", "The text encoding could not be detected."
        )
    return Parsed(pages=[Page(number=0, blocks=[Block(text)])])


def parse_markdown(data: bytes) -> Parsed:
    text = decode_text(data)
    if text is None:
        raise ParseError(
            "encoding", "文字コードを判別できません。", "The text encoding could not be detected."
        )
    blocks: list[Block] = []
    paragraph: list[str] = []
    for line in text.splitlines():
        match = _MD_HEADING.match(line)
        if match:
            if paragraph:
                blocks.append(Block("\n".join(paragraph)))
                paragraph = []
            blocks.append(Block(match.group(1).strip(), heading=True))
        else:
            paragraph.append(line)
    if paragraph:
        blocks.append(Block("\n".join(paragraph)))
    return Parsed(pages=[Page(number=0, blocks=blocks)])


def parse_csv(data: bytes) -> Parsed:
    text = decode_text(data)
    if text is None:
        raise ParseError(
            "encoding", "文字コードを判別できません。", "The text encoding could not be detected."
        )
    rows = [_row_text(row) for row in csv.reader(io.StringIO(text))]
    return Parsed(pages=[Page(number=0, blocks=[Block("\n".join(r for r in rows if r))])])


PARSERS: dict[str, Callable[[bytes], Parsed]] = {
    FileType.PDF: parse_pdf,
    FileType.DOCX: parse_docx,
    FileType.XLSX: parse_xlsx,
    FileType.PPTX: parse_pptx,
    FileType.HTML: parse_html,
    FileType.MARKDOWN: parse_markdown,
    FileType.CSV: parse_csv,
    FileType.TEXT: parse_text,
}


def parse(file_type: str, data: bytes) -> Parsed:
    """Parse ``data`` of ``file_type`` (from :func:`apps.documents.detect.detect_type`)."""
    return PARSERS[file_type](data)
