"""OCR of scanned PDF pages with Tesseract's Japanese model (Debian ``tesseract-ocr-jpn``).

Used only for PDF pages without a text layer. The page is rendered by pdfium at
``OCR_DPI`` and piped to the ``tesseract`` command (no shell, no temporary
files, a timeout per page). When the command or its ``jpn`` model is missing,
:func:`ocr_available` is false and such pages are reported as skipped instead.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess

OCR_DPI = 300
OCR_TIMEOUT_SECONDS = 120
# Tesseract puts spaces between Japanese characters; drop those between two CJK characters.
_CJK = r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff01-\uff9f]"
_CJK_SPACE = re.compile(rf"(?<={_CJK}) +(?={_CJK})")


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


def ocr_pdf_page(data: bytes, *, page_number: int) -> str:
    """The text Tesseract reads on page ``page_number`` (1-based) of the PDF ``data``."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        page = pdf[page_number - 1]
        image = page.render(scale=OCR_DPI / 72).to_pil().convert("L")
        page.close()
    finally:
        pdf.close()
    png = io.BytesIO()
    image.save(png, format="PNG")
    command = shutil.which("tesseract") or "tesseract"
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell, image on stdin
        [command, "stdin", "stdout", "-l", "jpn+eng", "--dpi", str(OCR_DPI)],
        input=png.getvalue(),
        capture_output=True,
        timeout=OCR_TIMEOUT_SECONDS,
        check=True,
    )
    return _CJK_SPACE.sub("", result.stdout.decode("utf-8", "replace"))
