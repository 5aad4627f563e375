"""File type from content (never from the name) and the zip-bomb check for OOXML.

Security: the extension and the browser's Content-Type are attacker-chosen, so
the parser is picked from the bytes alone. PDF by its ``%PDF-`` header, the
three OOXML formats by the parts inside the zip (``word/document.xml``,
``xl/workbook.xml``, ``ppt/presentation.xml``), HTML by its leading markup, and
everything else that decodes as text is plain text, Markdown or CSV. Zip
archives are checked for their declared uncompressed size and compression ratio
*before* any XML is parsed, and the same limits are enforced while reading.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile

from django.conf import settings
from django.utils.translation import gettext_lazy as _


class FileType:
    PDF = "pdf"
    DOCX = "docx"
    XLSX = "xlsx"
    PPTX = "pptx"
    HTML = "html"
    MARKDOWN = "markdown"
    CSV = "csv"
    TEXT = "text"


class Rejection(Exception):
    """A file refused, with a reason a person understands (ja and en)."""

    def __init__(self, code: str, ja: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.code = code
        self.ja = ja
        self.en = en


TEXT_ENCODINGS = ("utf-8-sig", "cp932", "euc_jp")
_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body|<meta|<title|<!--)", re.IGNORECASE)
# Indentation is whitespace *within* the line ([^\S\n]: full-width spaces too): with ``\s*``
# every line start rescanned all the blank lines after it (quadratic; 4.5 s for 20,000 of them).
_MD_HINT = re.compile(r"^(#{1,6}\s|[^\S\n]*[-*+]\s|[^\S\n]*\d+\.\s|```)", re.MULTILINE)
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")


def decode_text(data: bytes) -> str | None:
    """Decode as UTF-8, then Shift_JIS (cp932), then EUC-JP; ``None`` when it is not text."""
    if b"\x00" in data[:8192]:
        return None
    for encoding in TEXT_ENCODINGS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _BINARY_CONTROL.search(text[:8192]):
            return None
        return text
    return None


_EOCD = b"PK\x05\x06"  # end of central directory record
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


_CENTRAL_ENTRY = b"PK\x01\x02"


def zip_directory_entries(data: bytes, *, stop_after: int) -> int | None:
    """How many entries a zip's central directory holds, counted without building it.

    Walks the directory's fixed 46-byte headers (as :mod:`zipfile` finds them:
    the directory ends where the end records start, zip64 or classic) and stops
    once more than ``stop_after`` are seen, so the cost is bounded whatever the
    file claims. The count the end record *declares* is not trusted: zipfile
    itself reads entries until the directory's byte size is used up. ``None``
    when the end records are not found (zipfile then reports the file as corrupt).
    """
    tail_start = max(0, len(data) - (22 + 65535))
    at = data.rfind(_EOCD, tail_start)
    if at < 0 or len(data) - at < 22:
        return None
    size = int.from_bytes(data[at + 12 : at + 16], "little")
    end = at
    locator = at - 20
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        record = locator - 56
        if record < 0 or data[record : record + 4] != _ZIP64_EOCD:
            return None
        size = int.from_bytes(data[record + 40 : record + 48], "little")
        end = record
    pos = end - size
    if pos < 0:
        return None
    count = 0
    while pos + 46 <= end and data[pos : pos + 4] == _CENTRAL_ENTRY:
        count += 1
        if count > stop_after:
            break
        name, extra, comment = (int.from_bytes(data[pos + i : pos + i + 2], "little") for i in (28, 30, 32))
        pos += 46 + name + extra + comment
    return count


def check_zip(data: bytes) -> zipfile.ZipFile:
    """Open an OOXML zip after checking it cannot expand beyond the limits (zip bomb).

    Security: the entries are counted (:func:`zip_directory_entries`) *before*
    :mod:`zipfile` builds its directory, which costs ≈1.3 kB of memory per
    entry: a 26 MB zip of 300,000 empty entries took 400 MB and 1.5 s in the
    upload request. Real DOCX/XLSX/PPTX files have tens to a few thousand parts.
    """
    limit = settings.GENNAI_DOCUMENT_MAX_ZIP_ENTRIES
    entries = zip_directory_entries(data, stop_after=limit)
    if entries is not None and entries > limit:
        raise Rejection(
            "zip_bomb",
            f"ZIP 内のファイル数が多すぎるため処理しません（上限 {limit}、圧縮爆弾の疑い）。",
            f"Refused: the ZIP holds too many parts (limit {limit}; possible zip bomb).",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise Rejection(
            "corrupt",
            "ファイルが壊れています（ZIP として読めません）。",
            "The file is corrupt (not a readable ZIP).",
        ) from exc
    total = sum(info.file_size for info in infos)
    compressed = sum(info.compress_size for info in infos) or 1
    if (
        total > settings.GENNAI_DOCUMENT_MAX_UNZIPPED_BYTES
        or total / max(compressed, 1) > settings.GENNAI_DOCUMENT_MAX_ZIP_RATIO
    ):
        raise Rejection(
            "zip_bomb",
            "展開後のサイズが大きすぎるため処理しません（圧縮爆弾の疑い）。",
            "Refused: the file expands to an excessive size (possible zip bomb).",
        )
    return archive


def detect_type(data: bytes, *, filename: str = "") -> str:
    """The :class:`FileType` of ``data`` from its content; raises :class:`Rejection`."""
    if not data:
        raise Rejection("empty", "ファイルが空です（0 バイト）。", "The file is empty (0 bytes).")
    if data[:1024].lstrip().startswith(b"%PDF-") or data.startswith(b"%PDF-"):
        return FileType.PDF
    if data.startswith(b"PK\x03\x04"):
        names = set(check_zip(data).namelist())
        if "word/document.xml" in names:
            return FileType.DOCX
        if "xl/workbook.xml" in names:
            return FileType.XLSX
        if "ppt/presentation.xml" in names:
            return FileType.PPTX
        raise Rejection(
            "unsupported",
            "対応していない形式の ZIP ファイルです。",
            "Unsupported file type (a ZIP that is not DOCX, XLSX or PPTX).",
        )
    if data.startswith((b"\xd0\xcf\x11\xe0", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x7fELF", b"MZ")):
        raise _unsupported()
    text = decode_text(data)
    if text is None:
        raise _unsupported()
    if _HTML_START.match(data[:2048].decode("utf-8", "ignore").encode()):
        return FileType.HTML
    if _looks_like_csv(text):
        return FileType.CSV
    if _MD_HINT.search(text[:20000]):
        return FileType.MARKDOWN
    return FileType.TEXT


def _unsupported() -> Rejection:
    return Rejection(
        "unsupported",
        "対応していない形式です（PDF、Word、Excel、PowerPoint、テキスト、Markdown、HTML、CSV に対応）。",
        "Unsupported type (PDF, Word, Excel, PowerPoint, text, Markdown, HTML and CSV are supported).",
    )


def _looks_like_csv(text: str) -> bool:
    """At least two lines, all of the first ten with the same number (≥ 2) of comma-separated fields."""
    lines = [line for line in text.splitlines()[:10] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        return False
    widths = {len(row) for row in rows}
    return len(widths) == 1 and widths.pop() >= 2


# Labels for the UI (file_type → display name).
TYPE_LABELS = {
    FileType.PDF: "PDF",
    FileType.DOCX: "Word",
    FileType.XLSX: "Excel",
    FileType.PPTX: "PowerPoint",
    FileType.HTML: "HTML",
    FileType.MARKDOWN: "Markdown",
    FileType.CSV: "CSV",
    FileType.TEXT: _("テキスト"),
}
